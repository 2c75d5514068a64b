"""Upload/download throughput of a ~200 MB weight file through a local `zoo hub serve` on loopback.

    PYTHONPATH=. python benchmarks/hub_transfer.py [--size-mb 200] [--repeats 2]

Measures, in one run: a local file copy and a sha256 pass (the references), HfApi.upload_file of a
safetensors file (preupload + LFS batch + streamed PUT + commit; includes the client's sha256), and
hf_hub_download of it (HEAD + GET into a fresh cache), and plain GETs (httpx in Python; curl, which
shows what the server alone delivers). Prints MB/s and ratios to the file copy and saves
benchmarks/hub_transfer.json and benchmarks/hub_transfer.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


def _best(fn, repeats: int) -> float:
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        fn(index)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from huggingface_hub import HfApi, hf_hub_download

    with tempfile.TemporaryDirectory(prefix="zoo-hub-bench-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "model.safetensors"
        numel = args.size_mb * 1_000_000 // 4
        save_file({"weight": torch.randn(numel, generator=torch.Generator().manual_seed(0))}, weights)
        size = weights.stat().st_size
        sha = sha256_file(weights)
        results: dict[str, float] = {}
        results["file copy (reference)"] = _best(lambda i: shutil.copyfile(weights, tmp / f"copy{i}"), args.repeats)
        results["sha256 pass"] = _best(lambda i: sha256_file(weights), args.repeats)
        upload_times = []
        for index in range(args.repeats):  # a fresh hub each time: a known blob would not be sent again
            with LocalHub.start(tmp / f"hub{index}") as hub, hub_session(hub.url, hub.token):
                api = HfApi(endpoint=hub.url, token=hub.token)
                start = time.perf_counter()
                api.create_repo("bench/weights")
                api.upload_file(path_or_fileobj=str(weights), path_in_repo="model.safetensors", repo_id="bench/weights")
                upload_times.append(time.perf_counter() - start)
                if index < args.repeats - 1:
                    continue
                results["upload_file via LFS"] = min(upload_times)

                def raw_get(index: int) -> None:
                    url = f"{hub.url}/bench/weights/resolve/main/model.safetensors"
                    with httpx.stream("GET", url) as response, open(tmp / f"raw{index}", "wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            out.write(chunk)

                def download(index: int) -> None:
                    path = hf_hub_download("bench/weights", "model.safetensors", cache_dir=tmp / f"cache{index}")
                    if index == 0:
                        assert sha256_file(path) == sha, "downloaded file differs"

                results["raw HTTP GET to file"] = _best(raw_get, args.repeats)
                if shutil.which("curl"):  # the server alone, with a C client

                    def curl_get(index: int) -> None:
                        url = f"{hub.url}/bench/weights/resolve/main/model.safetensors"
                        subprocess.run(["curl", "-sf", "-o", str(tmp / f"curl{index}"), url], check=True)

                    results["curl GET to file"] = _best(curl_get, args.repeats)
                results["hf_hub_download"] = _best(download, args.repeats)
    report = {
        "size_bytes": size, "sha256": sha,
        "seconds": results,
        "MB_per_s": {name: size / 1e6 / seconds for name, seconds in results.items()},
        "ratio_to_file_copy": {name: results["file copy (reference)"] / seconds for name, seconds in results.items()},
    }
    for name in results:
        print(f"{name:<24} {results[name]:6.2f} s  {report['MB_per_s'][name]:7.0f} MB/s  "
              f"x{report['ratio_to_file_copy'][name]:.2f} of a file copy")
    (HERE / "hub_transfer.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(results)
    ax.barh(names, [report["MB_per_s"][n] for n in names], color=["#999", "#999", "#0969da", "#8250df", "#bf8700", "#1a7f37"][: len(names)])
    ax.set_xlabel(f"MB/s ({size / 1e6:.0f} MB file, loopback)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(HERE / "hub_transfer.png", dpi=120)
    return report


if __name__ == "__main__":
    main()
