"""Token-file authentication of the local hub.

The token file holds one token per line: `TOKEN USER [read|write]` (role defaults to write); blank lines
and lines starting with `#` are ignored. It is re-read when it changes, so tokens can be added or revoked
while the server runs. A malformed line is skipped (and reported once on stderr): it grants nothing, and
the other lines keep working. A file over 1 MB is refused as a whole (no tokens at all).

    hf_local_3f9c...  alice  write
    hf_local_77aa...  ci     read

Writes need a write token; private repos are readable with any listed token and invisible otherwise.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Identity", "TokenFile", "new_token", "token_fingerprint"]


@dataclass(frozen=True)
class Identity:
    """Who a request comes from; `user` is None for anonymous requests."""

    user: str | None = None
    can_write: bool = False
    invalid_token: bool = False  # a token was sent but is not in the token file
    fingerprint: str | None = None  # token_fingerprint() of the token used (binds signed upload urls to it)

    @property
    def authenticated(self) -> bool:
        return self.user is not None


def token_fingerprint(token: str) -> str:
    """A short, non-reversible id of a token (sha256 prefix), safe to put in URLs and logs."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:24]


MAX_TOKEN_FILE_BYTES = 1_000_000


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
            tokens: dict[str, tuple[str, bool]] = {}
            try:
                if self.path.stat().st_size > MAX_TOKEN_FILE_BYTES:
                    raise OSError(f"larger than {MAX_TOKEN_FILE_BYTES} bytes")
                text = self.path.read_bytes().decode("utf-8", "replace")
            except OSError as err:
                print(f"zoo hub: cannot read token file {self.path}: {err}; no token is valid", file=sys.stderr)
                text = ""
            for number, line in enumerate(text.splitlines(), 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) > 3 or (len(fields) == 3 and fields[2] not in ("read", "write")) or \
                        len(fields[0]) < 8:
                    print(f"zoo hub: {self.path}:{number}: skipped, expected 'TOKEN USER [read|write]' "
                          f"(token of 8+ characters)", file=sys.stderr)
                    continue
                user = fields[1] if len(fields) > 1 else "user"
                tokens[fields[0]] = (user, len(fields) < 3 or fields[2] == "write")
            self._tokens, self._mtime = tokens, mtime
        return self._tokens

    def by_fingerprint(self, fingerprint: str) -> Identity | None:
        """The identity of the listed token with this fingerprint, None once it is revoked."""
        for token, (user, can_write) in self._load().items():
            if secrets.compare_digest(token_fingerprint(token), fingerprint):
                return Identity(user=user, can_write=can_write, fingerprint=fingerprint)
        return None

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
        return Identity(user=found[0], can_write=found[1], fingerprint=token_fingerprint(token))
