"""Each module here registers one family with the Auto classes and adds its variants to the registry.

Modules are discovered, so a family lands by adding `zoo/catalog/<family>.py`; an import error in one
is a bug and is raised, never skipped.
"""

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")
