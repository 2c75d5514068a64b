"""Command line of the hub server (`zoo hub serve`); importable without the rest of zoo (no torch import),
so that a server process starts in about a second.

    python -m zoo.hub_cli serve --root hub-data --port 8000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["build_parser", "default_root", "main"]


def default_root() -> Path:
    """$ZOO_HUB_ROOT, else ~/.cache/zoo/hub."""
    return Path(os.environ.get("ZOO_HUB_ROOT") or Path.home() / ".cache" / "zoo" / "hub")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .auth import TokenFile

    root = Path(args.root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    token_file = Path(args.token_file) if args.token_file else root / "tokens.txt"
    lock = open(root / "server.lock", "a")  # noqa: SIM115 - held for the life of the process
    try:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not POSIX
        pass
    except OSError:
        print(f"zoo hub: another server is already serving {root}; one server per root", file=sys.stderr)
        return 1
    tokens = TokenFile(token_file)
    created = tokens.ensure()
    existing = None if created else tokens.write_token()
    from .app import Limits

    app = create_app(root, token_file, Limits(body_idle_s=args.body_timeout, body_total_s=max(args.body_timeout, 120.0),
                                              commit_body=args.max_commit_mb * 1024 * 1024))
    url = f"http://{args.host}:{args.port}"
    print(f"zoo hub: serving {root} on {url}", flush=True)
    shown = (f" (new write token: {created})" if created else f" (write token: {existing})" if existing
             else " (no write token in it: add a line 'TOKEN USER write')")
    print(f"zoo hub: tokens in {token_file}{shown}", flush=True)
    print(f"zoo hub: clients: export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<token>", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                http=guarded_protocol(args.header_timeout), timeout_keep_alive=args.keep_alive_timeout,
                limit_concurrency=args.max_connections, h11_max_incomplete_event_size=64 * 1024)
    return 0


def guarded_protocol(header_timeout: float) -> type:
    """uvicorn's h11 protocol, plus a deadline for the request line and headers.

    uvicorn times out idle keep-alive connections, but not a client that connects and then sends nothing
    or trickles its headers (slowloris): such a connection is closed `header_timeout` seconds after its
    first byte (or after it opened), whatever it sends meanwhile. Bodies are bounded by the app itself
    (idle and total timeouts in `Limits`).
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_headers():
                self._arm()
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._waiting_for_headers() and self._header_timer is not None:
                self._disarm()  # keep-alive idle timeout of uvicorn takes over until the next byte

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo hub", description="local Hugging Face Hub-compatible server")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve a hub folder over HTTP")
    p.add_argument("--root", default=str(default_root()), help="storage folder (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", help="token file (default: ROOT/tokens.txt, created with one write token)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a connection may take to send a request's headers (default: %(default)s)")
    p.add_argument("--keep-alive-timeout", type=int, default=5,
                   help="seconds an idle keep-alive connection stays open (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=128,
                   help="open connections at most; beyond, requests get 503 (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a request body may stall before the request is dropped (default: %(default)s)")
    p.add_argument("--max-commit-mb", type=int, default=64,
                   help="largest commit payload (inline files, base64) in MiB (default: %(default)s)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        for name in ("header_timeout", "keep_alive_timeout", "max_connections", "body_timeout", "max_commit_mb"):
            if getattr(args, name) <= 0:
                parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return {"serve": _serve}[args.command](args)
