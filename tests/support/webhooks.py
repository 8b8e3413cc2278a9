"""Signed provider requests against the Flask app, with the real RequestValidator algorithm."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from gateway.calls.hotpath import hot_path
from gateway.simulator import ACCOUNT_SID, sign

INCOMING = "/webhooks/voice/incoming"


class SignedClient:
    """Posts provider webhooks to the app the way the provider does: form body, signed URL."""

    def __init__(self, client: FlaskClient, base_url: str, token: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.token = token

    def _split(self, url: str) -> tuple[str, str]:
        path = url[len(self.base_url):] if url.startswith(self.base_url) else url
        return path, self.base_url + path

    def post(self, url: str, params: dict[str, str], *, signature: str | None = None) -> Any:
        path, full = self._split(url)
        headers = {"X-Twilio-Signature": signature if signature is not None else sign(self.token, full, params)}
        response = self.client.post(path, data=params, headers=headers)
        if path.startswith(INCOMING):
            # A ring may be answered before the writer commits it; the provider's later webhooks wait for
            # that commit (gateway.calls.services.logged_call), a test reading the database directly waits here.
            hot_path(self.client.application).flush()
        return response

    def unsigned(self, url: str, params: dict[str, str]) -> Any:
        path, _ = self._split(url)
        return self.client.post(path, data=params)


class AppPoster:
    """The simulator's Poster over the test client: lets tests play whole calls."""

    def __init__(self, signed: SignedClient) -> None:
        self.signed = signed
        self.base_url = signed.base_url
        settings = signed.client.application.extensions["gateway"].settings
        self.account_sid = settings.twilio_account_sid or ACCOUNT_SID

    def post(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        response = self.signed.post(url, params)
        return response.status_code, response.get_data(as_text=True)
