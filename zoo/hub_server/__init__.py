"""A filesystem-backed, Hugging Face Hub-compatible server (`zoo hub serve`).

With `HF_ENDPOINT` pointing at it (and `HF_HUB_DISABLE_XET=1`), huggingface_hub and transformers work
unchanged: create_repo, upload_folder/create_commit (LFS basic transfer), create_tag, list_repo_refs,
model_info, list_repo_tree, list_models, delete_repo, hf_hub_download, snapshot_download and
from_pretrained(..., revision=...).

    from zoo.hub_server import LocalHub
    with LocalHub.start("hub-data") as hub:        # a `zoo hub serve` process on a free loopback port
        print(hub.url, hub.token)                 # use as HF_ENDPOINT / HF_TOKEN
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .auth import TokenFile, new_token
from .storage import HubStore

__all__ = ["HubStore", "LocalHub", "TokenFile", "create_app", "free_port", "new_token"]


def __getattr__(name: str):
    # create_app needs starlette (the `hub` extra); load it only when asked, so that HubStore, LocalHub
    # and cardmeta (used by zoo.hub.validate_folder) work without it.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Runs the server package on its own (as `zoo_hub_server`), without importing `zoo` and hence torch.
_BOOTSTRAP = """
import importlib.util, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("zoo_hub_server", path + "/__init__.py",
                                              submodule_search_locations=[path])
module = importlib.util.module_from_spec(spec)
sys.modules["zoo_hub_server"] = module
spec.loader.exec_module(module)
from zoo_hub_server.cli import main
sys.exit(main(sys.argv[2:]))
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class LocalHub:
    """A `zoo hub serve` subprocess; `url` and `token` are what clients use as HF_ENDPOINT and HF_TOKEN."""

    root: Path
    url: str
    token: str
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: str | os.PathLike, *, port: int | None = None, host: str = "127.0.0.1",
              token: str | None = None, timeout: float = 60.0, extra_args: list[str] | tuple[str, ...] = ()
              ) -> LocalHub:
        """Start a server on `root`; a write token is added to root/tokens.txt (created if missing).

        `extra_args` go to `zoo hub serve` (e.g. ["--header-timeout", "2"]).
        """
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        tokens = root / "tokens.txt"
        token = token or new_token()
        existing = tokens.read_text() if tokens.exists() else "# zoo hub tokens: TOKEN USER [read|write]\n"
        if token not in existing.split():
            tokens.write_text(existing + f"{token} zoo write\n")
        port = port or free_port(host)
        log_path = root / "server.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child process owns it while it runs
        cmd = [sys.executable, "-c", _BOOTSTRAP, str(Path(__file__).resolve().parent),
               "serve", "--root", str(root), "--host", host, "--port", str(port), *extra_args]
        env = dict(os.environ)
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        hub = cls(root=root, url=f"http://{host}:{port}", token=token, process=process, port=port, log_path=log_path)
        hub.wait_ready(timeout)
        return hub

    def wait_ready(self, timeout: float = 60.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zoo hub server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/api/health", timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"zoo hub server on {self.url} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
