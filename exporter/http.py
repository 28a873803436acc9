"""HTTP for provider plugins: one pooled session per provider instance, with every
transport failure turned into a :class:`~exporter.model.FetchError` of the right outcome.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_encoding_from_headers,
    get_environ_proxies,
)

from .clock import SYSTEM_CLOCK, Clock
from .model import FetchError, Outcome
from .parsing import JSON_ERRORS
from .version import __version__

USER_AGENT = f"viber-exporter/{__version__}"


def outcome_for_status(status_code: int) -> Outcome:
    """The generic outcome of an HTTP status; plugins refine it from the body.

    A 404 is a ``client_error``: it is as often a wrong ``base_url`` as an unknown
    message, and only the plugin can tell which (see :func:`raise_for_status`).
    """
    if status_code < 400:
        return Outcome.OK
    if status_code == 429:
        return Outcome.RATE_LIMITED
    if status_code in (401, 403):
        return Outcome.AUTH_ERROR
    if status_code in (408, 504):
        return Outcome.TIMEOUT
    if status_code >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.CLIENT_ERROR


def retry_after_seconds(response: requests.Response) -> float | None:
    """Retry-After as seconds (delta or HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class ProviderHttp:
    """A ``requests`` session sized for the instance's concurrency, with its timeout.

    ``clock`` is the exporter's clock: use it for anything timed (a token's lifetime),
    so tests that move the exporter's time move the plugin's too.
    """

    def __init__(self, timeout: float, pool_size: int = 8, clock: Clock = SYSTEM_CLOCK) -> None:
        self.timeout = timeout
        self.clock = clock
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 1))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        # requests re-reads ~/.netrc and the proxy/CA environment on every call when
        # trust_env is on (about a quarter of a poll's CPU, see docs/benchmarks.md).
        # Read them once instead: proxies per host (honouring NO_PROXY), CA bundle here.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.session.verify = bundle
        self.session.trust_env = False
        self._proxies: dict[str, dict[str, str]] = {}
        # The common call (a GET or POST with headers, params, a JSON or bytes body, no
        # proxy, no redirects) goes straight to urllib3's pool, the pool requests itself
        # uses: requests' per-call preparation (merging settings, hooks, cookies,
        # re-parsing the URL) was half of a poll's CPU (docs/benchmarks.md). The answer
        # is the same requests.Response; anything else takes the session.
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(pool_size, 1),
            cert_reqs="CERT_REQUIRED",
            ca_certs=bundle or DEFAULT_CA_BUNDLE_PATH,
            retries=False,
        )
        self._pools: dict[str, urllib3.HTTPConnectionPool | None] = {}
        self._timeouts: dict[float | tuple[float, float], urllib3.Timeout] = {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request; transport failures become FetchError (timeout / connection_error)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        try:
            if self._direct(url, kwargs):
                return self._send(method, url, **kwargs)
            kwargs.setdefault("proxies", self.proxies_for(url))
            return self.session.request(method, url, **kwargs)
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
            # urllib3's NewConnectionError is a ConnectTimeoutError by inheritance only
            # (a refused connection or an unknown name): requests reads it the same way
            if isinstance(e, urllib3.exceptions.NewConnectionError):
                raise FetchError(Outcome.CONNECTION_ERROR, describe_transport_error(e, url)) from e
            host = urlsplit(url).netloc
            raise FetchError(
                Outcome.TIMEOUT, f"no answer from {host} within {self.timeout:g}s"
            ) from e
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise FetchError(Outcome.CONNECTION_ERROR, describe_transport_error(e, url)) from e
        except (UnicodeError, ValueError) as e:  # a header http.client refuses to send
            raise FetchError(
                Outcome.CLIENT_ERROR,
                "cannot send the request: a header value is not valid HTTP "
                "(a secret with characters outside Latin-1?)",
                provider_wide=True,
            ) from e

    def proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for this URL's host (HTTP(S)_PROXY, NO_PROXY), cached."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        proxies = self._proxies.get(key)
        if proxies is None:
            found = get_environ_proxies(key)  # {} when NO_PROXY matches the host
            proxies = self._proxies[key] = {k: v for k, v in found.items() if k != "no"}
        return proxies

    def _direct(self, url: str, kwargs: dict[str, Any]) -> bool:
        """Whether this call can skip the session (see __init__): only what the direct
        path does exactly as requests would."""
        return (
            kwargs.keys() <= DIRECT_ARGUMENTS
            and not kwargs["allow_redirects"]
            and isinstance(kwargs.get("params") or {}, Mapping)
            and isinstance(kwargs.get("data") or b"", bytes)
            and not (kwargs.get("data") and kwargs.get("json") is not None)
            and not self.session.cookies  # a provider that sets cookies gets them back
            and self._origin_pool(url) is not None
        )

    def _origin_pool(self, url: str) -> urllib3.HTTPConnectionPool | None:
        """The pool for the URL's scheme://host:port, found once (None: a proxy, a user
        name in the URL or an unusual URL, which requests handles)."""
        slash = url.find("/", url.find("://") + 3)
        origin = url if slash < 0 else url[:slash]
        try:
            return self._pools[origin]
        except KeyError:
            pass
        parts = urlsplit(origin)
        usual = parts.scheme in ("http", "https") and "@" not in origin and parts.hostname
        pool = None
        if usual and not self.proxies_for(origin):
            pool = self._pool.connection_from_url(origin)
        self._pools[origin] = pool
        return pool

    def _send(
        self,
        method: str,
        url: str,
        *,
        timeout: float | tuple[float, float],
        headers: Mapping[str, str | None] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        allow_redirects: bool = False,
    ) -> requests.Response:
        """One call through urllib3's pool, answered as requests would answer it."""
        if params:
            pairs = [
                (key, item)
                for key, value in params.items()
                for item in (value if isinstance(value, list | tuple) else [value])
                if item is not None
            ]
            if pairs:
                url += ("&" if "?" in url else "?") + urlencode(pairs)
        sent: dict[str, str] = dict(self.session.headers)  # type: ignore[arg-type]
        body = data or None
        if json is not None:
            body = complexjson_dumps(json)
            sent["Content-Type"] = "application/json"
        for name, value in (headers or {}).items():
            sent.pop(next((k for k in sent if k.lower() == name.lower()), name), None)
            if value is not None:  # None removes a session header, as in requests
                sent[name] = value
        wait = self._timeouts.get(timeout)
        if wait is None:
            wait = self._timeouts[timeout] = (
                urllib3.Timeout(connect=timeout[0], read=timeout[1])
                if isinstance(timeout, tuple)
                else urllib3.Timeout(connect=timeout, read=timeout)
            )
        pool = self._origin_pool(url)
        assert pool is not None  # _direct said so
        slash = url.find("/", url.find("://") + 3)
        start = time.monotonic()
        raw = pool.urlopen(
            method.upper(),
            url[slash:] if slash >= 0 else "/",
            body=body,
            headers=sent,
            timeout=wait,
            redirect=False,
            assert_same_host=False,
        )
        request = requests.PreparedRequest()
        request.method, request.url, request.body = method.upper(), url, body
        request.headers = CaseInsensitiveDict(sent)
        response = requests.Response()
        response.status_code = raw.status
        response.headers = CaseInsensitiveDict(raw.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.reason = raw.reason or ""
        response.raw = raw
        response.url = url
        response.request = request
        response.elapsed = timedelta(seconds=time.monotonic() - start)
        response._content = raw.data
        response._content_consumed = True  # type: ignore[attr-defined]
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(self.session.cookies, request, raw)  # type: ignore[no-untyped-call]
        return response

    def close(self) -> None:
        self.session.close()
        self._pool.clear()


#: the keyword arguments the direct path handles (see ProviderHttp.__init__)
DIRECT_ARGUMENTS = frozenset({"timeout", "allow_redirects", "headers", "params", "json", "data"})


def complexjson_dumps(value: Any) -> bytes:
    """A JSON body as requests writes it (NaN refused, UTF-8)."""
    return json.dumps(value, allow_nan=False).encode("utf-8")


def json_body(response: requests.Response) -> Any:
    """The decoded JSON body, or FetchError(invalid_response) naming what was wrong."""
    try:
        return json.loads(response.content)
    except JSON_ERRORS as e:
        kind = response.headers.get("Content-Type", "no content type")
        raise FetchError(
            Outcome.INVALID_RESPONSE,
            f"HTTP {response.status_code} with a body that is not JSON ({kind}, {len(response.content)} bytes)",
        ) from e


def raise_for_status(
    response: requests.Response, detail: str = "", *, not_found: bool = False
) -> None:
    """Raise FetchError for any non-2xx answer, with Retry-After honoured for 429 and 503.

    A 404 is ``not_found`` only when the plugin says so (``not_found=True``, having
    recognised its API's "no such message" answer, e.g. by an error code in the body);
    otherwise it is a ``client_error``, since a wrong ``base_url`` also answers 404 and
    must not quietly settle every message as unknown.
    """
    outcome = outcome_for_status(response.status_code)
    if outcome is Outcome.OK:
        return
    if response.status_code == 404:
        if not_found:
            raise FetchError(Outcome.NOT_FOUND, "HTTP 404: the provider does not know this id")
        detail = detail or "check the instance's base_url"
    retry_after = retry_after_seconds(response) if response.status_code in (429, 503) else None
    message = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
    raise FetchError(outcome, message, retry_after=retry_after)


def describe_transport_error(error: BaseException, url: str) -> str:
    """A short sentence naming the host and the cause of a failed connection.

    Never the exception's own text: urllib3's reprs are long, get cut before the
    useful part, and can carry request details (headers, credentials).
    """
    host = urlsplit(url).netloc.rsplit("@", 1)[-1] or "the provider"
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(type(e).__name__ + " " + str(e) for e in chain).lower()
    if isinstance(error, requests.exceptions.SSLError) or "ssl" in text or "certificate" in text:
        cause = "the TLS handshake failed (certificate or protocol)"
    elif any(
        word in text
        for word in (
            "name or service not known",
            "nodename nor servname",
            "temporary failure in name resolution",
            "getaddrinfo",
            "name resolution",
            "no address associated",
        )
    ):
        cause = "its name does not resolve (DNS)"
    elif "refused" in text:
        cause = "the connection was refused"
    elif "reset" in text or "aborted" in text or "remotedisconnected" in text:
        cause = "the connection was closed before an answer"
    elif isinstance(error, requests.exceptions.ProxyError) or "proxy" in text:
        cause = "the proxy failed"
    elif isinstance(error, requests.exceptions.TooManyRedirects):
        cause = "it redirected too often"
    elif isinstance(
        error,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        cause = "the URL is not valid"
    elif "unreachable" in text or "no route" in text:
        cause = "the network is unreachable"
    else:
        cause = f"the request failed ({type(error).__name__})"
    return f"cannot reach {host}: {cause}"
