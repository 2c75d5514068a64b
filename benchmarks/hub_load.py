"""A bounded load test of `zoo hub serve` on 127.0.0.1: concurrent huggingface_hub clients plus one hostile one.

    PYTHONPATH=. python benchmarks/hub_load.py [--seconds 120] [--clients 8] [--rss-bound-mb 400] [--out PREFIX]

For `--seconds` (default 2 minutes), `--clients - 1` well-behaved clients (threads, each with its own
HfApi) run a random mix against four shared repos: uploads (create_commit of an inline text file, and
half the time a 64 KB-1 MB LFS file, on top of the head they last saw, so that a concurrent writer gives a
412 conflict instead of a mixed tree), downloads (hf_hub_download of a file of an acknowledged commit, by
commit id, checked against its sha256), listings (list_models, list_repo_tree, list_repo_refs, model_info)
and ref writes (create_branch/create_tag). One more client sends only hostile requests: oversized and
never-ending bodies, malformed JSON and NDJSON, NUL bytes in paths, bad query parameters, unauthorised
writes, and idle connections. Every HTTP status the well-behaved clients get is counted (a response
hook on huggingface_hub's session), the server's RSS is sampled every 0.25 s, and afterwards the server
is stopped, started again on the same folder, and every acknowledged commit is read back file by file
and compared by sha256.

Writes PREFIX.json and PREFIX.png (default benchmarks/hub_load.*). Exit status 1 when a well-formed
request got a 5xx, a hostile one got a 5xx, the RSS bound was passed, or an acknowledged commit is not
readable with the same content.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOS = [f"load/repo{i}" for i in range(4)]


def _rss_kb(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in kB, from /proc (psutil's numbers, without psutil)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class Ledger:
    """Acknowledged commits (repo, commit id, {path: sha256}) and per-operation outcomes, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.commits: list[tuple[str, str, dict[str, str]]] = []
        self.heads: dict[str, str] = {}
        self.ops: collections.Counter = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: collections.Counter = collections.Counter()
        self.server_errors: list[str] = []
        self.hostile: collections.Counter = collections.Counter()
        self.hostile_5xx: list[str] = []
        self.timeline: list[tuple[float, str]] = []  # (time, 'ok' | '4xx' | '5xx' | 'error')
        self.download_mismatches: list[str] = []
        self.started = time.monotonic()

    def record_status(self, response) -> None:
        status = response.status_code
        with self.lock:
            self.statuses[status] += 1
            kind = "5xx" if status >= 500 else "4xx" if status >= 400 else "ok"
            self.timeline.append((time.monotonic() - self.started, kind))
            if status >= 500:
                self.server_errors.append(f"{status} {response.request.method} {response.request.url}")


def _well_formed_client(index: int, hub, ledger: Ledger, stop: threading.Event, tmp: Path) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    rng = random.Random(index)
    api = HfApi(endpoint=hub.url, token=hub.token)
    cache = tmp / f"cache{index}"
    while not stop.is_set():
        roll = rng.random()
        repo = rng.choice(REPOS)
        started = time.monotonic()
        try:
            if roll < 0.3:
                op = "upload"
                with ledger.lock:
                    parent = ledger.heads.get(repo)
                text = f"client {index} at {time.time()} {rng.random()}\n".encode() * rng.randint(1, 50)
                files = {f"notes/c{index}.txt": text}
                if rng.random() < 0.5:
                    files[f"weights/c{index}-{rng.randint(0, 3)}.safetensors"] = rng.randbytes(rng.randint(64, 1024) * 1024)
                try:
                    info = api.create_commit(repo, commit_message=f"client {index}", parent_commit=parent,
                                             operations=[CommitOperationAdd(p, d) for p, d in files.items()])
                except HfHubHTTPError as err:
                    if err.response is None or err.response.status_code != 412:
                        raise
                    op = "upload (412 conflict, refreshed)"
                    head = api.model_info(repo).sha  # never call the Hub while holding the lock (response hook)
                    with ledger.lock:
                        ledger.heads[repo] = head
                else:
                    # everything in the commit: what we sent plus what was there (checked later by sha256)
                    with ledger.lock:
                        ledger.commits.append((repo, info.oid, {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}))
                        ledger.heads[repo] = info.oid
            elif roll < 0.7:
                op = "download"
                with ledger.lock:
                    candidates = [c for c in ledger.commits if c[0] == repo] or ledger.commits
                    choice = rng.choice(candidates) if candidates else None
                if choice is None:
                    continue
                repo, commit, files = choice
                path, sha = rng.choice(sorted(files.items()))
                local = hf_hub_download(repo, path, revision=commit, cache_dir=cache)
                if hashlib.sha256(Path(local).read_bytes()).hexdigest() != sha:
                    with ledger.lock:
                        ledger.download_mismatches.append(f"{repo}@{commit}:{path}")
            elif roll < 0.9:
                op = rng.choice(["list_models", "list_repo_tree", "list_repo_refs", "model_info"])
                if op == "list_models":
                    list(api.list_models(search="load", limit=50))
                elif op == "list_repo_tree":
                    list(api.list_repo_tree(repo, recursive=True))
                elif op == "list_repo_refs":
                    api.list_repo_refs(repo)
                else:
                    api.model_info(repo, files_metadata=True)
            else:
                op = "create_ref"
                with ledger.lock:
                    head = ledger.heads.get(repo)
                if head is None:
                    continue
                name = f"c{index}-{rng.randrange(10**9)}"
                if rng.random() < 0.5:
                    api.create_branch(repo, branch=name, revision=head)
                else:
                    api.create_tag(repo, tag=name, revision=head)
        except Exception as err:  # noqa: BLE001 - counted; a 5xx is also counted by the response hook
            op = f"error: {type(err).__name__}"
            with ledger.lock:
                ledger.timeline.append((time.monotonic() - ledger.started, "error"))
                ledger.server_errors.append(f"client {index}: {type(err).__name__}: {str(err)[:300]}")
        with ledger.lock:
            ledger.ops[op] += 1
            ledger.latency[op.split(" ")[0]].append(time.monotonic() - started)


def _hostile_client(hub, ledger: Ledger, stop: threading.Event) -> None:
    import httpx2 as httpx

    rng = random.Random(1234)
    auth = {"Authorization": f"Bearer {hub.token}"}
    client = httpx.Client(timeout=30)

    def raw(data: bytes, wait: float = 10.0) -> int | None:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=wait) as sock:
            try:
                sock.sendall(data)
                head = sock.recv(64)
            except OSError:
                return None
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None

    def oversized_stream():
        for _ in range(80):  # 80 MB, no Content-Length: more than any buffered endpoint takes (64 MB commits)
            yield b"x" * (1024 * 1024)

    attacks = {
        "oversized JSON body": lambda: client.post(f"{hub.url}/api/validate-yaml", content=oversized_stream(),
                                                   headers={"Content-Type": "application/json"}).status_code,
        "declared 100 GB body": lambda: raw(b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 100000000000\r\n\r\n"),
        "oversized commit": lambda: client.post(f"{hub.url}/api/models/{REPOS[0]}/commit/main", headers=auth,
                                                content=oversized_stream()).status_code,
        "malformed JSON": lambda: client.post(f"{hub.url}/api/repos/create", headers=auth,
                                              content=b"{nope").status_code,
        "JSON of the wrong shape": lambda: client.post(f"{hub.url}/{REPOS[1]}.git/info/lfs/objects/batch",
                                                       headers=auth, json={"operation": "upload",
                                                                           "objects": "all"}).status_code,
        "malformed NDJSON commit": lambda: client.post(
            f"{hub.url}/api/models/{REPOS[2]}/commit/main", headers=auth,
            content=b'{"key": "header", "value": {"summary": "x"}}\n{"key": "file", "value": 3}\n').status_code,
        "path traversal commit": lambda: client.post(
            f"{hub.url}/api/models/{REPOS[2]}/commit/main", headers=auth,
            content=json.dumps({"key": "header", "value": {"summary": "x"}}).encode() + b"\n" + json.dumps(
                {"key": "file", "value": {"path": "../../etc/x", "content": base64.b64encode(b"x").decode()}}
            ).encode()).status_code,
        "NUL in path": lambda: raw(b"GET /load/repo0/resolve/main/a%00b HTTP/1.1\r\nHost: x\r\n\r\n"),
        "bad limit": lambda: client.get(f"{hub.url}/api/models?limit=abc").status_code,
        "anonymous write": lambda: client.post(f"{hub.url}/api/repos/create", json={"name": "intruder"}).status_code,
        "bad token": lambda: client.get(f"{hub.url}/api/whoami-v2",
                                        headers={"Authorization": "Bearer nope-nope-nope"}).status_code,
        "forged upload url": lambda: client.put(
            f"{hub.url}/{REPOS[0]}.git/info/lfs/objects/{'0' * 64}/3?expires=9999999999&token=x&signature=y",
            content=b"abc").status_code,
        "commit-id-named branch": lambda: client.post(f"{hub.url}/api/models/{REPOS[3]}/branch/{'a' * 40}",
                                                      headers=auth, json={}).status_code,
        "unreachable repo name": lambda: client.post(f"{hub.url}/api/repos/create", headers=auth,
                                                     json={"name": "x.git", "organization": "load"}).status_code,
    }
    idle: list[socket.socket] = []
    while not stop.is_set():
        name = rng.choice(sorted(attacks))
        try:
            status = attacks[name]()
        except (OSError, httpx.HTTPError) as err:
            status = f"connection closed ({type(err).__name__})"
        with ledger.lock:
            ledger.hostile[(name, status)] += 1
            if isinstance(status, int) and status >= 500:
                ledger.hostile_5xx.append(f"{name}: {status}")
        if rng.random() < 0.2:  # connections that never send anything (the server drops them)
            if len(idle) >= 8:
                for sock in idle:
                    sock.close()
                idle.clear()
            idle.append(socket.create_connection(("127.0.0.1", hub.port)))
        time.sleep(0.05)
    for sock in idle:
        sock.close()
    client.close()


def _verify(hub, ledger: Ledger) -> dict:
    """Every acknowledged commit: each file it was acknowledged with reads back with the same sha256."""
    import httpx2 as httpx

    checked = lost = mismatched = 0
    problems = []
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {hub.token}"}) as client:
        for repo, commit, files in ledger.commits:
            for path, sha in files.items():
                response = client.get(f"{hub.url}/{repo}/resolve/{commit}/{path}")
                checked += 1
                if response.status_code != 200:
                    lost += 1
                    problems.append(f"{repo}@{commit}:{path} -> {response.status_code}")
                elif hashlib.sha256(response.content).hexdigest() != sha:
                    mismatched += 1
                    problems.append(f"{repo}@{commit}:{path} content differs")
    return {"files_checked": checked, "lost": lost, "mismatched": mismatched, "problems": problems[:20]}


def _plot(result: dict, rss: list[tuple[float, int]], ledger: Ledger, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    seconds = int(result["seconds"]) + 1
    for kind, colour in (("ok", "tab:green"), ("4xx", "tab:orange"), ("5xx", "tab:red"), ("error", "black")):
        counts = [0] * seconds
        for t, k in ledger.timeline:
            if k == kind and int(t) < seconds:
                counts[int(t)] += 1
        top.plot(range(seconds), counts, label=kind, color=colour)
    top.set_ylabel("responses / s (well-formed clients)")
    top.set_title(f"zoo hub serve under load: {result['clients']} clients ({result['clients'] - 1} well-formed, 1 hostile), "
                  f"{result['seconds']:.0f} s")
    top.legend()
    bottom.plot([t for t, _ in rss], [kb / 1024 for _, kb in rss], color="tab:blue", label="server RSS")
    bottom.axhline(result["rss_bound_mb"], color="tab:red", linestyle="--", label="stated bound")
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("MB")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(seconds: float = 120.0, clients: int = 8, rss_bound_mb: float = 400.0, out: Path | None = None,
        progress: bool = True) -> dict:
    """Run the load test; returns (and, with `out`, writes out.json / out.png) the figures."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.utils import _http
    from tqdm import tqdm

    from zoo.hub import hub_session
    from zoo.hub_server import LocalHub

    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="zoo-hub-load-") as tmp:
        tmp = Path(tmp)
        hub = LocalHub.start(tmp / "root", extra_args=["--header-timeout", "5", "--body-timeout", "5"])
        try:
            with hub_session(hub.url, hub.token):
                _http.set_client_factory(lambda: httpx2.Client(
                    event_hooks={"request": [_http.hf_request_event_hook], "response": [ledger.record_status]},
                    follow_redirects=True, timeout=120))
                api = HfApi(endpoint=hub.url, token=hub.token)
                for repo in REPOS:
                    api.create_repo(repo)
                    ledger.heads[repo] = api.model_info(repo).sha
                idle_rss = _rss_kb(hub.process.pid)[0]
                stop = threading.Event()
                threads = [threading.Thread(target=_well_formed_client, args=(i, hub, ledger, stop, tmp), daemon=True)
                           for i in range(clients - 1)]
                threads.append(threading.Thread(target=_hostile_client, args=(hub, ledger, stop), daemon=True))
                ledger.started = time.monotonic()
                for thread in threads:
                    thread.start()
                rss: list[tuple[float, int]] = []
                with tqdm(total=int(seconds), unit="s", desc="hub load", disable=not progress) as bar:
                    while (elapsed := time.monotonic() - ledger.started) < seconds:
                        rss.append((elapsed, _rss_kb(hub.process.pid)[0]))
                        time.sleep(0.25)
                        bar.n = min(int(elapsed), int(seconds))
                        bar.set_postfix(ops=sum(ledger.ops.values()), rss_mb=rss[-1][1] // 1024)
                        bar.refresh()
                stop.set()
                for thread in threads:
                    thread.join(timeout=180)
                duration = time.monotonic() - ledger.started
                peak_kb = _rss_kb(hub.process.pid)[1]
                _http.set_client_factory(_http.default_client_factory)
            hub.stop()  # durability: read everything back from a fresh server on the same folder
            hub = LocalHub.start(tmp / "root")
            verification = _verify(hub, ledger)
        finally:
            hub.stop()
    well_formed_5xx = sum(n for status, n in ledger.statuses.items() if status >= 500)
    latencies = {op: {"n": len(v), "p50_ms": round(1000 * statistics.median(v), 1),
                      "p95_ms": round(1000 * sorted(v)[int(0.95 * (len(v) - 1))], 1)}
                 for op, v in sorted(ledger.latency.items()) if v}
    result = {
        "command": f"PYTHONPATH=. python benchmarks/hub_load.py --seconds {seconds:g} --clients {clients}",
        "seconds": round(duration, 1), "clients": clients, "rss_bound_mb": rss_bound_mb,
        "server_rss_idle_mb": round(idle_rss / 1024, 1), "server_rss_peak_mb": round(peak_kb / 1024, 1),
        "operations": dict(sorted(ledger.ops.items())), "latency": latencies,
        "well_formed_statuses": {str(k): v for k, v in sorted(ledger.statuses.items())},
        "well_formed_requests": sum(ledger.statuses.values()), "well_formed_5xx": well_formed_5xx,
        "client_errors": ledger.server_errors[:20], "client_error_count": len(ledger.server_errors),
        "download_mismatches": ledger.download_mismatches,
        "hostile": {f"{name} -> {status}": n for (name, status), n in sorted(ledger.hostile.items(), key=str)},
        "hostile_requests": sum(ledger.hostile.values()), "hostile_5xx": len(ledger.hostile_5xx),
        "acknowledged_commits": len(ledger.commits), "verification": verification,
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
    result["ok"] = (well_formed_5xx == 0 and not ledger.hostile_5xx and peak_kb / 1024 <= rss_bound_mb
                    and verification["lost"] == 0 and verification["mismatched"] == 0
                    and not ledger.download_mismatches and len(ledger.commits) > 0)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        _plot(result, rss, ledger, out.with_suffix(".png"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the clients run (default 120)")
    parser.add_argument("--clients", type=int, default=8, help="clients in all, one of them hostile (default 8)")
    parser.add_argument("--rss-bound-mb", type=float, default=400.0, help="stated bound on the server's RSS")
    parser.add_argument("--out", type=Path, default=HERE / "hub_load", help="PREFIX for PREFIX.json / PREFIX.png")
    args = parser.parse_args(argv)
    if args.clients < 2:
        parser.error("--clients must be at least 2 (one of them is the hostile client)")
    result = run(args.seconds, args.clients, args.rss_bound_mb, args.out)
    summary = {k: result[k] for k in ("seconds", "well_formed_requests", "well_formed_5xx", "hostile_requests",
                                      "hostile_5xx", "server_rss_idle_mb", "server_rss_peak_mb",
                                      "acknowledged_commits", "ok")}
    print(json.dumps({**summary, "verification": {k: v for k, v in result["verification"].items() if k != "problems"}},
                     indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
