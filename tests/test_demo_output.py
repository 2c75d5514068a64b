"""`zoo demo`'s terminal output: one line as each family starts and one as it ends, everything else (Python
and C-level writes, tracebacks) in the log file; and the thread sizing it relies on."""

from __future__ import annotations

import os
import sys

import torch

from zoo import demo
from zoo.threads import QUIET_ENV, allowed_cpus, busy_cores_of_others, fit_threads, free_cores, quiet_pools


def _noisy(workdir, quick):
    print("training step 1 {'loss': 0.7}")
    sys.stderr.write("progress 50%\r")
    os.write(2, b"C-level write\n")
    return demo.DemoResult(folder=workdir, predict=lambda target: "prediction ok")


def _broken(workdir, quick):
    raise RuntimeError("the data set is missing")


def test_one_line_per_family_start_and_end_details_in_the_log(tmp_path, monkeypatch):
    monkeypatch.setitem(demo._DEMOS, "noisy", _noisy)
    monkeypatch.setitem(demo._DEMOS, "broken", _broken)
    lines: list[str] = []
    log = tmp_path / "demo.log"
    threads = torch.get_num_threads()
    rows = demo.run_demos(tmp_path, families=["noisy", "broken"], log_file=log, status=lines.append)
    assert [row.ok for row in rows] == [True, False]
    assert len(lines) == 4
    assert lines[0].startswith("[1/2] noisy: started (") and lines[1].startswith("[1/2] noisy: ok in ")
    assert lines[2].startswith("[2/2] broken: started") and "FAILED" in lines[3]
    assert "the data set is missing" in lines[3] and str(log) in lines[3]
    text = log.read_text()
    assert "=== noisy" in text and "training step 1" in text and "C-level write" in text and "progress 50%" in text
    assert "Traceback" in text and "RuntimeError: the data set is missing" in text
    assert torch.get_num_threads() == threads  # the caller's pool is restored


def test_thread_sizing(monkeypatch):
    monkeypatch.setenv("ZOO_NUM_THREADS", "1")
    assert fit_threads(interval=0.05) == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("ZOO_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = allowed_cpus()
    assert cpus and set(cpus) <= set(range(os.cpu_count() or 1))
    assert 0.0 <= busy_cores_of_others(0.05) <= len(cpus) + 0.5
    assert 1 <= free_cores(0.05) <= len(cpus)


def test_quiet_pools_keeps_explicit_settings(monkeypatch):
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_pools()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false" and os.environ["KMP_BLOCKTIME"] == "0"
