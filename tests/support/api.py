"""API keys and authorised requests for the REST API tests."""

from __future__ import annotations

from typing import Any

from gateway.api.keys import create_key
from gateway.database import Database


def make_key(db: Database, now: Any, stores: list[str] | None = None, name: str = "test") -> str:
    with db.session() as session:
        _, plaintext = create_key(session, name, stores, now)
    return plaintext


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ApiClient:
    """The Flask test client with a bearer key on every request."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=bearer(self.key), **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers=bearer(self.key), **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.client.patch(path, headers=bearer(self.key), **kwargs)
