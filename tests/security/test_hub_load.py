"""A 10-second version of benchmarks/hub_load.py (issue 13's load test): 7 huggingface_hub clients and one
hostile client against `zoo hub serve`; no 5xx for any request, the server's RSS under the stated
bound, and every acknowledged commit readable afterwards (after a server restart) with the same sha256.
No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "hub_load.py"


@pytest.fixture(scope="module")
def hub_load():
    spec = importlib.util.spec_from_file_location("hub_load_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_short_load_run_loses_nothing_and_never_5xx(hub_load, tmp_path):
    result = hub_load.run(seconds=10, clients=8, rss_bound_mb=400, out=tmp_path / "load", progress=False)
    assert result["well_formed_5xx"] == 0, result["client_errors"]
    assert result["client_error_count"] == 0, result["client_errors"]
    assert result["hostile_5xx"] == 0 and result["hostile_requests"] > 0
    hostile_statuses = {key.rsplit(" -> ", 1)[1] for key in result["hostile"]}
    assert hostile_statuses <= {"400", "401", "403", "408", "413"} | {s for s in hostile_statuses
                                                                     if s.startswith("connection closed")}
    assert result["server_rss_peak_mb"] <= 400
    assert result["acknowledged_commits"] > 0
    verification = result["verification"]
    assert verification["files_checked"] >= result["acknowledged_commits"]
    assert verification["lost"] == 0 and verification["mismatched"] == 0, verification["problems"]
    assert not result["download_mismatches"]
    assert result["ok"]
    assert json.loads((tmp_path / "load.json").read_text())["acknowledged_commits"] == result["acknowledged_commits"]
    assert (tmp_path / "load.png").stat().st_size > 10_000
