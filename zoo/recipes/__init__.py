"""Fine-tuning recipes and demos, one module per family, built on the catalogue (never imported by it).

`import zoo` imports zoo.catalog (the data: families and variants) first, then this package, whose modules
register their recipes and demos. Modules are discovered, so a family's recipes land by adding
`zoo/recipes/<family>.py`; an import error in one is a bug and is raised, never skipped.
"""

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")
