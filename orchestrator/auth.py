"""Bearer tokens on the public API (`--api-token-file`): gRPC metadata and the HTTP header alike.

The file holds one token per line (several, so a token can be rotated without downtime). A
Generate call, or a request to the HTTP API's /v1 routes, must carry `authorization: Bearer <token>`;
tokens are compared in constant time. Health checking, reflection and metrics stay open for probes
and scrapers.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from specdec.runtime.errors import Unauthenticated

HOW_TO = "send the header (gRPC metadata) `authorization: Bearer <token>`, a token from the server's --api-token-file"


class ApiTokens:
    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [token.encode() for token in tokens]
        if not self._tokens or any(not token for token in self._tokens):
            raise ValueError("the API token file must hold at least one token, one per line")

    @classmethod
    def load(cls, path: Path) -> ApiTokens:
        return cls([line.strip() for line in path.read_text().splitlines() if line.strip()])

    def authorized(self, authorization: str | None) -> bool:
        """Whether an `authorization` value carries one of the tokens (each compared in constant time)."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        presented = given.strip().encode()
        # Every token is compared, so the time taken says nothing about which one came close.
        return sum(hmac.compare_digest(presented, token) for token in self._tokens) > 0

    def check(self, authorization: str | None) -> None:
        if not self.authorized(authorization):
            raise Unauthenticated(f"no valid API token: {HOW_TO}")
