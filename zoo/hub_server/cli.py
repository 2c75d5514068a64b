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
    app = create_app(root, token_file)
    url = f"http://{args.host}:{args.port}"
    print(f"zoo hub: serving {root} on {url}", flush=True)
    shown = (f" (new write token: {created})" if created else f" (write token: {existing})" if existing
             else " (no write token in it: add a line 'TOKEN USER write')")
    print(f"zoo hub: tokens in {token_file}{shown}", flush=True)
    print(f"zoo hub: clients: export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<token>", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo hub", description="local Hugging Face Hub-compatible server")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve a hub folder over HTTP")
    p.add_argument("--root", default=str(default_root()), help="storage folder (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", help="token file (default: ROOT/tokens.txt, created with one write token)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return {"serve": _serve}[args.command](args)
