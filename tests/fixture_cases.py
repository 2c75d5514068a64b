"""Discovery of the reference cases under tests/fixtures/<family>/ that cannot pass by accident.

A family's test helpers build one `Family` and parametrize their parity tests with `family.cases(kind)`:

    FAMILY = Family("dmp", classify=classify, resources={"vocab"})

    @pytest.mark.parametrize("case", FAMILY.cases("finetune"))
    def test_finetune_parity(case):
        case.meta, case.folder, case.file("expected.safetensors") ...

`classify(folder, meta)` returns the case's kind, or raises `Unhandled` with a message naming the task / kind /
arch / criterion / field the tests do not handle. Every way discovery can go wrong becomes a FAILING test (never
a skip, never a silently dropped case):
- a case folder without a readable meta.json, or whose meta.json is not a JSON object;
- a case whose classify raises (an unknown kind, task, field...): it is put in the parameter list of EVERY
  `cases()` call of its family, so each of those tests fails with the message;
- a kind with no case at all: the parameter list holds one failing entry ("no case of kind ...").
The failing entries are `BrokenCase` values; the plugin in tests/fixture_usage.py fails any test that receives
one at setup, with its message.

Which files a case's tests read is checked separately (tests/fixture_usage.py): every data file under
tests/fixtures/ must be opened by some test of a full run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class Unhandled(Exception):
    """Raised by a family's classify: the case declares something the tests do not handle."""


@dataclass(frozen=True)
class Case:
    """One case folder: its family, folder, parsed meta.json and the kind its family's classify gave it."""

    family: str
    folder: Path
    meta: dict
    kind: str
    where: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.folder.name

    def file(self, name: str) -> Path:
        """The path of a file of this case; a missing file fails the test with a message naming it."""
        path = self.folder / name
        if not path.is_file():
            pytest.fail(f"{self.where}: the case has no file {name!r} (its meta.json or kind says it should)",
                        pytrace=False)
        return path

    def json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def tensors(self, name: str) -> dict:
        from safetensors.torch import load_file

        return load_file(self.file(name))

    def __repr__(self) -> str:
        return f"Case({self.where}, kind={self.kind!r})"


@dataclass(frozen=True)
class BrokenCase:
    """A discovery failure carried as a test parameter; any test receiving it fails with `message`."""

    family: str
    where: str
    message: str = field(compare=False)

    def __repr__(self) -> str:
        return f"BrokenCase({self.where}: {self.message})"


def expect_one_of(value: Any, known: Iterable[Any], what: str) -> Any:
    """`value` if it is (exactly) one of `known`, else Unhandled naming `what`, the value and what is handled."""
    known = list(known)
    if value not in known:
        raise Unhandled(f"{what} {value!r} is not one the tests handle (they handle: "
                        f"{', '.join(repr(k) for k in known)})")
    return value


def expect_fields(mapping: dict, known: Iterable[str], what: str = "meta.json") -> None:
    """Unhandled naming every key of `mapping` that is not in `known` (a field no test reads or knows)."""
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise Unhandled(f"{what} declares field(s) {', '.join(map(repr, unknown))} the tests do not handle")


class Family:
    """The cases of tests/fixtures/<name>/: every direct sub-folder is a case (it must hold meta.json) unless it
    is named in `resources` (shared data such as a vocabulary; its files are still subject to the usage check).
    """

    def __init__(self, name: str, classify: Callable[[Path, dict], str], resources: Iterable[str] = (),
                 root: Path | None = None):
        self.name = name
        self.root = (root or FIXTURES) / name
        self.label = self.root.relative_to(self.root.parents[2]).as_posix()  # tests/fixtures/<name>
        self.classify = classify
        self.resources = set(resources)
        self._found: tuple[list[Case], list[BrokenCase]] | None = None

    def discover(self) -> tuple[list[Case], list[BrokenCase]]:
        """(good cases, broken cases), computed once."""
        if self._found is None:
            self._found = self._discover()
        return self._found

    def _discover(self) -> tuple[list[Case], list[BrokenCase]]:
        good: list[Case] = []
        broken: list[BrokenCase] = []
        if not self.root.is_dir():
            return good, [BrokenCase(self.name, self.label, "the family's fixtures folder is missing")]
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            where = f"{self.label}/{folder.name}"
            meta_path = folder / "meta.json"
            if folder.name in self.resources:
                continue
            if not meta_path.is_file():
                broken.append(BrokenCase(self.name, where, "case folder has no meta.json (a shared, non-case "
                                         f"folder must be listed in the family's resources: {sorted(self.resources)})"))
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                broken.append(BrokenCase(self.name, where, f"meta.json cannot be read: {exc}"))
                continue
            if not isinstance(meta, dict):
                broken.append(BrokenCase(self.name, where, f"meta.json holds a {type(meta).__name__}, "
                                         "not a JSON object"))
                continue
            try:
                kind = self.classify(folder, meta)
            except Unhandled as exc:
                broken.append(BrokenCase(self.name, where, str(exc)))
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                broken.append(BrokenCase(self.name, where, f"meta.json cannot be classified: "
                                         f"{type(exc).__name__}: {exc}"))
                continue
            good.append(Case(self.name, folder, meta, kind, f"{self.label}/{folder.name}"))
        return good, broken

    def all(self) -> list[Case]:
        return self.discover()[0]

    def cases(self, *kinds: str) -> list:
        """pytest params (id = folder name) of every case of the given kinds, plus one failing param per broken
        case of the family, plus one failing param when none of the kinds has a case."""
        good, broken = self.discover()
        params = [pytest.param(c, id=c.name) for c in good if c.kind in kinds]
        if not params:
            params.append(pytest.param(
                BrokenCase(self.name, self.label,
                           f"no case of kind {' or '.join(map(repr, kinds))} (cases found: "
                           f"{', '.join(f'{c.name}={c.kind}' for c in good) or 'none'})"),
                id=f"no-{'-'.join(kinds)}-case"))
        params += [pytest.param(b, id=f"broken-{b.where.rsplit('/', 1)[-1]}") for b in broken]
        return params
