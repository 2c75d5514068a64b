"""`zoo hub ...`: run the local Hub-compatible server.

    zoo hub serve [--root DIR] [--host 127.0.0.1] [--port N] [--token-file FILE]

Then point any Hub client at it:

    export HF_ENDPOINT=http://127.0.0.1:N HF_TOKEN=<a token from DIR/tokens.txt> HF_HUB_DISABLE_XET=1
    python hub_upload.py converted/toy --repo-id org/toy
"""

from __future__ import annotations

from .hub_server.cli import build_parser, default_root
from .hub_server.cli import main as _main

__all__ = ["build_parser", "default_root", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `zoo hub` (the `zoo` command dispatches here)."""
    return _main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
