"""Token-file authentication of the local hub.

The token file holds one token per line: `TOKEN USER [read|write]` (role defaults to write); blank lines
and lines starting with `#` are ignored. It is re-read when it changes, so tokens can be added or revoked
while the server runs.

    hf_local_3f9c...  alice  write
    hf_local_77aa...  ci     read

Writes need a write token; private repos are readable with any listed token and invisible otherwise.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Identity", "TokenFile", "new_token"]


@dataclass(frozen=True)
class Identity:
    """Who a request comes from; `user` is None for anonymous requests."""

    user: str | None = None
    can_write: bool = False
    invalid_token: bool = False  # a token was sent but is not in the token file

    @property
    def authenticated(self) -> bool:
        return self.user is not None


def new_token() -> str:
    """A fresh random token (`hf_local_` + 32 hex characters)."""
    return "hf_local_" + secrets.token_hex(16)


class TokenFile:
    """Reads `path` (re-reading it when its mtime changes) and maps Authorization headers to identities."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._mtime: float | None = None
        self._tokens: dict[str, tuple[str, bool]] = {}

    def ensure(self, user: str = "admin") -> str | None:
        """Create the token file with one write token if it does not exist; returns that token (or None)."""
        if self.path.exists():
            return None
        token = new_token()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"# zoo hub tokens: TOKEN USER [read|write]\n{token} {user} write\n")
        return token

    def write_token(self) -> str | None:
        """The first write token of the file (what `zoo hub serve` shows for an existing root), or None."""
        return next((token for token, (_, can_write) in self._load().items() if can_write), None)

    def _load(self) -> dict[str, tuple[str, bool]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._tokens, self._mtime = {}, None
            return self._tokens
        if mtime != self._mtime:
            tokens = {}
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) > 3 or (len(fields) == 3 and fields[2] not in ("read", "write")):
                    raise ValueError(f"{self.path}:{number}: expected 'TOKEN USER [read|write]', got {line!r}")
                user = fields[1] if len(fields) > 1 else "user"
                tokens[fields[0]] = (user, len(fields) < 3 or fields[2] == "write")
            self._tokens, self._mtime = tokens, mtime
        return self._tokens

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            return Identity()
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Identity(invalid_token=True)
        found = self._load().get(token)
        if found is None:
            return Identity(invalid_token=True)
        return Identity(user=found[0], can_write=found[1])
