"""Upload/download throughput of a ~200 MB weight file through a local `zoo hub serve` on loopback.

    PYTHONPATH=. python benchmarks/hub_transfer.py [--size-mb 200] [--repeats 2]

Measures, in one run: a local file copy and a sha256 pass (the references), HfApi.upload_file of a
safetensors file (preupload + LFS batch + streamed PUT + commit; includes the client's sha256), and
hf_hub_download of it (HEAD + GET into a fresh cache), and plain GETs (httpx in Python; curl, which
shows what the server alone delivers). Every received copy is checked byte-identical (sha256) before
timing; the sides then alternate round by round after a warm-up (benchmarks/_protocol.py: median with
min/max, load average). Prints MB/s and ratios to the file copy and saves benchmarks/hub_transfer.json
and benchmarks/hub_transfer.png.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import torch
from safetensors.torch import save_file

from zoo.fileio import sha256_file
from zoo.hub import hub_session
from zoo.hub_server import LocalHub

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from huggingface_hub import HfApi, hf_hub_download

    env = protocol.environment(torch.get_num_threads(), size_mb=args.size_mb)
    counter = itertools.count()
    with tempfile.TemporaryDirectory(prefix="zoo-hub-bench-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "model.safetensors"
        numel = args.size_mb * 1_000_000 // 4
        save_file({"weight": torch.randn(numel, generator=torch.Generator().manual_seed(0))}, weights)
        size = weights.stat().st_size
        sha = sha256_file(weights)

        def upload() -> protocol.SelfTimed:  # a fresh hub each time: a known blob would not be sent again
            with LocalHub.start(tmp / f"hub{next(counter)}") as fresh, hub_session(fresh.url, fresh.token):
                api = HfApi(endpoint=fresh.url, token=fresh.token)
                start = time.perf_counter()
                api.create_repo("bench/weights")
                api.upload_file(path_or_fileobj=str(weights), path_in_repo="model.safetensors", repo_id="bench/weights")
                return protocol.SelfTimed(time.perf_counter() - start)

        with LocalHub.start(tmp / "hub") as hub, hub_session(hub.url, hub.token):
            api = HfApi(endpoint=hub.url, token=hub.token)
            api.create_repo("bench/weights")
            api.upload_file(path_or_fileobj=str(weights), path_in_repo="model.safetensors", repo_id="bench/weights")
            url = f"{hub.url}/bench/weights/resolve/main/model.safetensors"

            def copy() -> Path:
                out = tmp / "copy"
                shutil.copyfile(weights, out)
                return out

            def raw_get() -> Path:
                out = tmp / "raw"
                with httpx.stream("GET", url) as response, open(out, "wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                return out

            def curl_get() -> Path:
                out = tmp / "curl"
                subprocess.run(["curl", "-sf", "-o", str(out), url], check=True)
                return out

            def download() -> Path:
                return Path(hf_hub_download("bench/weights", "model.safetensors", cache_dir=tmp / f"cache{next(counter)}"))

            sides = {"file copy (reference)": copy, "sha256 pass": lambda: sha256_file(weights),
                     "upload_file via LFS": upload, "raw HTTP GET to file": raw_get}
            if shutil.which("curl"):  # the server alone, with a C client
                sides["curl GET to file"] = curl_get
            sides["hf_hub_download"] = download
            checks = {name: sha256_file(fn()) == sha for name, fn in sides.items()
                      if name not in ("sha256 pass", "upload_file via LFS")}
            if not all(checks.values()):
                raise AssertionError(f"a received copy differs from the original: {checks}")
            times = protocol.alternate(sides, args.repeats, warmup=0, progress="transfer rounds")  # warmed by the checks
    protocol.finish(env)
    summary = protocol.summarize(times, work=size / 1e6, unit="MB")
    copy_median = summary["file copy (reference)"]["median_s"]
    report = {"env": env, "size_bytes": size, "sha256": sha, "copies_identical": checks, "sides": summary,
              "ratio_to_file_copy": {name: copy_median / row["median_s"] for name, row in summary.items()}}
    for name, row in summary.items():
        print(f"{name:<24} {row['median_s']:6.2f} s ({row['min_s']:.2f}..{row['max_s']:.2f})  "
              f"{row['median_MB_per_s']:7.0f} MB/s  x{report['ratio_to_file_copy'][name]:.2f} of a file copy")
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}")
    protocol.save(report, HERE / "hub_transfer", panels=[
        {"title": f"{size / 1e6:.0f} MB file, loopback", "ylabel": "MB / s", "bars": summary,
         "key": "median_MB_per_s", "rotation": 30}])
    return report


if __name__ == "__main__":
    main()
