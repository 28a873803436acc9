"""OAuth2 client credentials (RFC 6749 §4.4) for provider plugins: one bearer token
per provider instance, shared by every poll, fetched by one thread at a time and
replaced shortly before it expires or when the provider refuses it.

The token is a :class:`~viber_exporter.secrets.Secret`: it never reaches a log line, a
page or an error, even when a provider echoes it back in an error body.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import requests

from .clock import SYSTEM_CLOCK, Clock
from .http import ProviderHttp, json_body, retry_after_seconds
from .model import FetchError, Outcome
from .parsing import JSON_ERRORS
from .secrets import Secret, redact

log = logging.getLogger(__name__)

TOKEN_MARGIN = 60.0  # refresh this long before the token expires
DEFAULT_LIFETIME = 3600.0  # when the answer has no usable expires_in
FAILURE_HOLD = 2.0  # a failed fetch answers every caller for this long (or Retry-After)


class TokenCache:
    """Caches what ``fetch`` returns (token, lifetime in seconds) until shortly before
    it expires. Only one thread fetches; the others wait and reuse its token — or its
    failure, for a moment, so a broken token endpoint is not asked once per waiting
    thread in turn."""

    def __init__(
        self,
        fetch: Callable[[], tuple[Secret, float]],
        clock: Clock = SYSTEM_CLOCK,
        margin: float = TOKEN_MARGIN,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._token: Secret | None = None
        self._expires = 0.0
        self._failure: FetchError | None = None
        self._failed_until = 0.0
        self._lock = threading.Lock()

    def get(self) -> Secret:
        with self._lock:
            now = self._clock.monotonic()
            if self._token is not None and now < self._expires:
                return self._token
            if self._failure is not None and now < self._failed_until:
                raise self._failure
            try:
                token, lifetime = self._fetch()
            except FetchError as e:
                hold = max(FAILURE_HOLD, e.retry_after or 0.0)
                self._failure, self._failed_until = e, self._clock.monotonic() + hold
                raise
            margin = self._margin if lifetime > 2 * self._margin else lifetime / 2
            self._token, self._expires = token, self._clock.monotonic() + lifetime - margin
            self._failure = None
            return token

    def invalidate(self, token: Secret) -> None:
        """Forget ``token`` unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None


class ClientCredentials:
    """The client-credentials grant against ``token_url``, with a :class:`TokenCache`.

    :meth:`request` sends a request with ``Authorization: Bearer <token>``; on 401 or
    403 it fetches a new token and retries once (tokens can be revoked early).
    """

    def __init__(
        self,
        http: ProviderHttp,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        *,
        scope: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.http = http
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.tokens = TokenCache(self._fetch_token, clock or http.clock)

    def token(self) -> Secret:
        return self.tokens.get()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        token = self.tokens.get()
        response = self.http.request(
            method, url, headers={**headers, "Authorization": f"Bearer {token.reveal()}"}, **kwargs
        )
        if response.status_code in (401, 403):
            self.tokens.invalidate(token)
            token = self.tokens.get()
            response = self.http.request(
                method,
                url,
                headers={**headers, "Authorization": f"Bearer {token.reveal()}"},
                **kwargs,
            )
        return response

    def _fetch_token(self) -> tuple[Secret, float]:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        response = self.http.request(
            "POST",
            self.token_url,
            auth=(self.client_id, self.client_secret.reveal()),
            data=data,
            headers={"Accept": "application/json"},
        )
        code = response.status_code
        if code >= 400:
            raise token_error(response)
        body = json_body(response)
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise FetchError(Outcome.INVALID_RESPONSE, "token answer has no access_token")
        secret = Secret(token)  # from now on redacted wherever it appears
        lifetime = body.get("expires_in")
        if isinstance(lifetime, str) and lifetime.strip().isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_LIFETIME
        log.debug("new access token from %s, valid for %ss", self.token_url, lifetime)
        return secret, float(lifetime)


def token_error(response: requests.Response) -> FetchError:
    """The outcome of a refused token request: only 400 and 401 (and 403) mean the
    credentials are wrong; 429, 5xx and 408/504 are the token endpoint's own trouble."""
    code = response.status_code
    description = _description(response)
    detail = f"token request: HTTP {code}" + (f": {description}" if description else "")
    if code == 429:
        return FetchError(Outcome.RATE_LIMITED, detail, retry_after_seconds(response))
    if code in (408, 504):
        return FetchError(Outcome.TIMEOUT, detail)
    if code >= 500:
        retry_after = retry_after_seconds(response) if code == 503 else None
        return FetchError(Outcome.SERVER_ERROR, detail, retry_after)
    if code in (400, 401, 403):
        return FetchError(Outcome.AUTH_ERROR, detail)
    return FetchError(Outcome.CLIENT_ERROR, detail)


def _description(response: requests.Response) -> str:
    """The provider's own words (``error_description``, else ``error``), secrets masked."""
    try:
        body = json.loads(response.content)
    except JSON_ERRORS:
        return ""
    if not isinstance(body, Mapping):
        return ""
    parts = [str(body[key]) for key in ("error", "error_description") if body.get(key)]
    if not parts:
        parts = [str(body[key]) for key in ("message", "developerMessage") if body.get(key)]
    return redact(" — ".join(parts))[:300]
