"""pytest plugin: every data file under tests/fixtures/ is read by some test ("fixture fully used").

How a read is seen: an audit hook (sys.addaudithook) records every Python-level open() / os.open() of a path
under the fixtures root, and safetensors' safe_open (which opens files in Rust, invisible to the hook) is
wrapped to record its path too. A file copied with shutil (copyfile/copy/copy2/copytree) is not counted as
read by the copy; a later read of the copy counts as a read of the original. A test that hands a fixture path
to a subprocess records it with `record_read(path)`.

When it is checked: only on a run that collected the whole tests/ tree (no node ids, -k, -m, --deselect,
--ignore or deselection by a plugin) and was not interrupted (-x / maxfail stop, Ctrl-C, collection errors).
Under pytest-xdist each worker sends the paths it saw in `config.workeroutput`; the controller joins them at
session finish. For working on one family: ZOO_FIXTURE_USAGE=dmp,graphormer forces the check on any run,
limited to those families' folders. Files named README* or LICENSE* (for people, not tests) are exempt. Unread files make the run
fail: exit status 1 and a summary section naming each file.

Also fails (when it is called) any test that receives a tests/fixture_cases.BrokenCase parameter (a discovery failure).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

WORKER_KEY = "zoo_fixture_reads"
EXEMPT_PREFIXES = ("readme", "license")


class _Recorder:
    """Process-wide: the audit hook can never be removed, so one hook feeds whichever roots are active."""

    def __init__(self):
        self.roots: dict[str, set[str]] = {}  # root (absolute, with trailing sep) -> paths read under it
        self.aliases: dict[str, str] = {}  # absolute path of a copy -> the fixture file it was copied from
        self.copying = threading.local()
        self.installed = False

    def install(self):
        if not self.installed:
            sys.addaudithook(self._hook)
            _wrap_safe_open(self.note)
            self.installed = True

    def _hook(self, event, args):
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, int) or path is None:
                return
            if mode is not None and not any(c in str(mode) for c in "r+"):
                return
            self.note(path)
        elif event == "shutil.copyfile" and self.roots:
            src, dst = (self._abs(a) for a in args[:2])
            if src is None or dst is None:
                return
            origin = self.aliases.get(src, src)
            if self._root_of(origin) is not None:
                self.aliases[dst] = origin
                pending = getattr(self.copying, "pending", set())
                pending.add(src)
                self.copying.pending = pending

    @staticmethod
    def _abs(path):
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        return os.path.abspath(path)

    def _root_of(self, path):
        for root in self.roots:
            if path.startswith(root):
                return root
        return None

    def note(self, path):
        if not self.roots:
            return
        path = self._abs(path)
        if path is None:
            return
        pending = getattr(self.copying, "pending", None)
        if pending and path in pending:  # shutil's own open of the source while copying: not a read
            pending.discard(path)
            return
        path = self.aliases.get(path, path)
        root = self._root_of(path)
        if root is not None:
            self.roots[root].add(path)


RECORDER = _Recorder()


def _wrap_safe_open(note):
    import safetensors  # the Rust extension only; safetensors.torch, imported later, binds the wrapper

    original = safetensors.safe_open
    if getattr(original, "_zoo_records_reads", False):
        return

    def safe_open(filename, *args, **kwargs):
        note(filename)
        return original(filename, *args, **kwargs)

    safe_open._zoo_records_reads = True
    for module in list(sys.modules.values()):
        if getattr(module, "safe_open", None) is original:
            try:
                module.safe_open = safe_open
            except (AttributeError, TypeError):
                pass
    safetensors.safe_open = safe_open


def record_read(path) -> None:
    """Count `path` as read (for a fixture file that a test hands to a subprocess, which the hook cannot see)."""
    RECORDER.note(path)


def data_files(root: Path) -> list[Path]:
    """Every file under root that a test must read: all but README* / LICENSE* and hidden or cache files."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.name.lower().startswith(EXEMPT_PREFIXES):
            continue
        found.append(path)
    return found


class FixtureUsage:
    """The plugin object; `fixtures` is the folder whose files must all be read, `tests` the tree whose full
    collection triggers the check."""

    def __init__(self, config, fixtures: Path, tests: Path):
        self.config = config
        self.fixtures = Path(os.path.abspath(fixtures))
        self.tests = Path(os.path.abspath(tests))
        self.root_key = str(self.fixtures) + os.sep
        self.deselected = False
        self.worker_reads: set[str] = set()
        self.worker_deselected = False
        self.unread: list[Path] | None = None
        self.why_not_checked: str | None = None
        self.scope = f"{self.fixtures.name}/"
        RECORDER.roots.setdefault(self.root_key, set())
        RECORDER.install()

    # -- discovery failures ---------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        from tests.fixture_cases import BrokenCase

        callspec = getattr(item, "callspec", None)
        for value in (callspec.params.values() if callspec else ()):
            if isinstance(value, BrokenCase):
                pytest.fail(f"fixture case {value.where}: {value.message}", pytrace=False)

    # -- collection scope -----------------------------------------------------------------------------------
    def pytest_deselected(self, items):
        if items:
            self.deselected = True

    def _full_tree_requested(self) -> str | None:
        """None when the invocation collects all of tests/, else why not."""
        opt = self.config.option
        if getattr(opt, "keyword", "") or getattr(opt, "markexpr", ""):
            return "-k/-m given"
        if getattr(opt, "deselect", None) or getattr(opt, "ignore", None) or getattr(opt, "ignore_glob", None):
            return "--deselect/--ignore given"
        if getattr(opt, "lf", False):
            return "--lf given"
        args = self.config.args or []
        covered = False
        for arg in args:
            if "::" in arg:
                return f"node id {arg!r} given"
            path = Path(os.path.abspath(os.path.join(str(self.config.invocation_params.dir), arg)))
            if path == self.tests or self.tests.is_relative_to(path):
                covered = True
        return None if covered else "not the whole tests/ tree"

    # -- xdist ------------------------------------------------------------------------------------------------
    def pytest_sessionfinish(self, session):
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: hand what it saw to the controller
            workeroutput[WORKER_KEY] = sorted(RECORDER.roots.get(self.root_key, ()))
            workeroutput[WORKER_KEY + "_deselected"] = self.deselected
            return
        self._check(session)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        output = getattr(node, "workeroutput", None) or {}
        self.worker_reads.update(output.get(WORKER_KEY, ()))
        self.worker_deselected |= bool(output.get(WORKER_KEY + "_deselected"))

    # -- the check --------------------------------------------------------------------------------------------
    def _check(self, session):
        forced = [f for f in os.environ.get("ZOO_FIXTURE_USAGE", "").split(",") if f.strip()]
        why = None if forced else self._full_tree_requested()
        if why is None and not forced and (self.deselected or self.worker_deselected):
            why = "tests were deselected"
        if why is None and (session.shouldstop or session.shouldfail):
            why = f"the run stopped early ({session.shouldstop or session.shouldfail})"
        if why is None and session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            why = f"the run ended with {pytest.ExitCode(session.exitstatus).name}"
        if why is None and not forced and session.testscollected == 0:
            why = "no tests collected"
        if why is not None:
            self.why_not_checked = why
            return
        read = RECORDER.roots.get(self.root_key, set()) | self.worker_reads
        roots = [self.fixtures / f.strip() for f in forced] or [self.fixtures]
        self.scope = ", ".join(f"{self.fixtures.name}/{f.strip()}/" for f in forced) or f"{self.fixtures.name}/"
        self.unread = [p for root in roots for p in data_files(root) if str(p) not in read]
        if self.unread:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.unread:
            terminalreporter.section("fixture files read by no test", sep="=", red=True, bold=True)
            for path in self.unread:
                terminalreporter.line(f"UNREAD {path.relative_to(self.fixtures.parent.parent)}")
            terminalreporter.line(
                f"{len(self.unread)} data file(s) under {self.scope} were read by no test: a test "
                "must read each (or the file must go). README*/LICENSE* are exempt.", red=True)
        elif self.unread is not None:
            terminalreporter.line(f"fixture usage: every data file under {self.scope} was read")
