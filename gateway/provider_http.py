"""The `twilio` SDK's HTTP transport, on urllib3's connection pools.

The SDK takes any `twilio.http.HttpClient`; its default one goes through `requests`, whose session
prepares, merges settings and runs hooks for every call: more than the rest of a text's send costs the
worker once the database work is batched. This one encodes the request the way the default does (query
and form body with repeated keys for lists, JSON where the SDK asks for it, HTTP Basic from the SDK's
credentials), sends it on a pooled keep-alive connection with the same timeout and no redirects, and
gives the SDK back the same `Response`. The environment's proxy settings (HTTPS_PROXY, NO_PROXY) are read
once, for the API's base URL.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from requests.utils import get_environ_proxies
from twilio.http import HttpClient
from twilio.http.response import Response

log = logging.getLogger("twilio.http_client")

JSON_TYPES = frozenset({"application/json", "application/scim+json"})
# Provider calls in flight at once from one process (a batch sends eight at a time).
POOL_SIZE = 16


class PooledHttpClient(HttpClient):  # type: ignore[misc]  # the SDK is untyped here
    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(logger=log, is_async=False, timeout=timeout)
        proxy = get_environ_proxies(base_url).get(urlsplit(base_url).scheme)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, maxsize=POOL_SIZE, block=False)
            if proxy
            else urllib3.PoolManager(maxsize=POOL_SIZE, block=False)
        )

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        sent: dict[str, str] = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            sent["Authorization"] = f"Basic {token}"
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        body: str | None = None
        if sent.get("Content-Type") in JSON_TYPES:
            body = json.dumps(data) if data is not None else None
        elif data:
            body = urlencode(_form(data), doseq=True)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", method.upper(), url)
        answer = self._pool.request(
            method.upper(),
            url,
            body=body,
            headers=sent,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=allow_redirects,
            retries=False,
        )
        response = Response(answer.status, answer.data.decode("utf-8"), answer.headers)
        self._test_only_last_response = response
        return response


def _form(data: dict[str, object]) -> dict[str, Any]:
    # As requests encodes a form: no None values, lists as repeated keys.
    return {key: value for key, value in data.items() if value is not None}
