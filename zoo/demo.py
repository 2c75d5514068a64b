"""`zoo demo` / `make demo`: every landed family, end to end, on embedded defaults.

A family registers a demo that builds a complete Hub folder (converted from its bundled original-format
checkpoint, or briefly fine-tuned on its offline data set) and a `predict` that loads a folder or repo
id with `from_pretrained` and predicts on a real input.

    from zoo.demo import DemoResult, register_demo
    register_demo("graphormer", lambda workdir, quick: DemoResult(folder=..., predict=...))
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "DemoRow", "list_demos", "register_demo", "run_demos", "run_demos_on_hub"]


@dataclass
class DemoResult:
    folder: Path  # complete Hub folder: config.json, model.safetensors, processor files, README.md
    predict: Callable[[str], str]  # path or repo id -> one line describing a prediction on a real input
    summary: dict[str, Any] = field(default_factory=dict)  # extra figures for the table (e.g. parity max diff)


@dataclass
class DemoRow:
    family: str
    ok: bool
    seconds: float
    folder: Path | None = None
    prediction: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""


_DEMOS: dict[str, Callable[[Path, bool], DemoResult]] = {}


def register_demo(family: str, fn: Callable[[Path, bool], DemoResult]) -> None:
    _DEMOS[family] = fn


def list_demos() -> list[str]:
    return sorted(_DEMOS)


def run_demos(
    workdir: Path,
    families: list[str] | None = None,
    quick: bool = False,
    publish: Callable[[str, Path], str] | None = None,
    log_file: Path | None = None,
    status: Callable[[str], None] | None = None,
) -> list[DemoRow]:
    """Run each family's demo; `publish(family, folder) -> repo id` (optional) publishes before predicting.

    A failing family is reported in its row (with the error) and the others go on. With `log_file`, each
    family's output (progress bars, training logs, tracebacks, C-level writes too) goes to that file and
    `status` (default: print to the terminal) gets one line as a family starts and one as it ends.
    Before each family torch's thread pool is sized to the cores other processes leave free.
    """
    from .threads import fit_threads

    names = families or list_demos()
    unknown = sorted(set(names) - set(_DEMOS))
    if unknown:
        raise KeyError(f"no demo registered for {unknown}; available: {list_demos()}")
    import torch

    say = status or (lambda line: print(line, flush=True))
    rows = []
    threads_before = torch.get_num_threads()
    try:
        _run_each(names, workdir, quick, publish, log_file, say, rows, fit_threads)
    finally:
        torch.set_num_threads(threads_before)  # the caller's pool as it was
    return rows


def _run_each(names, workdir, quick, publish, log_file, say, rows, fit_threads) -> None:
    for index, family in enumerate(names, 1):
        threads = fit_threads()
        say(f"[{index}/{len(names)}] {family}: started ({threads} thread{'s' if threads > 1 else ''})")
        start = time.perf_counter()
        with _output_to(log_file, f"=== {family} ({threads} threads) ==="):
            try:
                result = _DEMOS[family](workdir / family, quick)
                target = publish(family, result.folder) if publish else str(result.folder)
                prediction = result.predict(target)
                row = DemoRow(family, True, time.perf_counter() - start, result.folder, prediction, result.summary)
            except Exception as err:  # noqa: BLE001 - one family's failure is reported, the others still run
                row = DemoRow(family, False, time.perf_counter() - start, error=f"{type(err).__name__}: {err}")
                traceback.print_exc()
        rows.append(row)
        say(f"[{index}/{len(names)}] {family}: {'ok' if row.ok else 'FAILED'} in {row.seconds:.1f} s"
            + ("" if row.ok else f" ({row.error[:120]}; details in {log_file})" if log_file else f" ({row.error})"))


@contextlib.contextmanager
def _output_to(log_file: Path | None, header: str):
    """Send everything written to stdout / stderr (Python and C level) to `log_file` for the block."""
    if log_file is None:
        yield
        return
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    with open(log_file, "a", encoding="utf-8", buffering=1) as log:
        log.write(header + "\n")
        log.flush()
        os.dup2(log.fileno(), 1)  # C-level writes and handlers bound to the original streams
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log  # Python-level writes, also where sys.stdout is not fd 1
        try:
            yield
        finally:
            log.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def format_rows(rows: list[DemoRow]) -> str:
    repos = any(row.summary.get("repo") for row in rows)
    head = f"{'family':<14} {'status':<7} {'time':>7}  " + (f"{'repo':<26} " if repos else "")
    lines = [head + "prediction / error", "-" * 100]
    for row in rows:
        status = "ok" if row.ok else "FAILED"
        text = row.prediction if row.ok else row.error
        repo = f"{row.summary.get('repo') or '-':<26} " if repos else ""
        lines.append(f"{row.family:<14} {status:<7} {row.seconds:>6.1f}s  {repo}{text}")
    return "\n".join(lines)


def run_demos_on_hub(
    workdir: Path,
    families: list[str] | None = None,
    quick: bool = False,
    *,
    namespace: str = "zoo-demo",
    serve_forever: bool = False,
    log_file: Path | None = None,
) -> tuple[list[DemoRow], str]:
    """`zoo demo`: start a local hub on a free loopback port, publish each family's demo folder to it with
    the hub_upload logic (validate, then one commit), reload it with from_pretrained from the hub,
    predict, and return the rows and the browse URL.

    Each family's output goes to `log_file` when given (the terminal gets a line per family start and end).
    The hub stores its data in `workdir/hub`; with `serve_forever` it keeps serving after the table is
    printed (Ctrl-C to stop), otherwise it stops and `zoo hub serve --root workdir/hub` serves it again.

        rows, url = run_demos_on_hub(Path("demo_output"), quick=True)
    """
    from .hub import hub_session, upload_folder
    from .hub_server import LocalHub

    workdir = Path(workdir)
    hub = LocalHub.start(workdir / "hub")
    try:
        published: dict[str, str] = {}

        def publish(family: str, folder: Path) -> str:
            repo_id = f"{namespace}/{family}"
            result = upload_folder(folder, repo_id, tag=None, endpoint=hub.url, token=hub.token,
                                   commit_message=f"zoo demo: {family}")
            published[family] = result.commit or ""
            return repo_id

        with hub_session(hub.url, hub.token):
            rows = run_demos(workdir, families=families, quick=quick, publish=publish, log_file=log_file)
        for row in rows:
            if row.family in published:
                row.summary = {**row.summary, "repo": f"{namespace}/{row.family}", "commit": published[row.family]}
        url = f"{hub.url}/"
        if serve_forever:
            print(format_rows(rows))
            print(f"browse: {url}  (Ctrl-C to stop)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                hub.process.wait()
        return rows, url
    finally:
        hub.stop()
