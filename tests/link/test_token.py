"""Bearer tokens (edgecap/link/token.py): the real fetch and TokenCache against the Azure
emulator's token endpoint over real TLS — directly and through an HTTP CONNECT proxy — and
through the faults a token service has: a refused key, a rate limit, a server error, a
black hole that a stop must interrupt, an untrusted certificate. The HTTP/1.1 answer
parser is also fed byte streams cut at every awkward place."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecap.link.connection import Dialer, tls_context
from edgecap.link.token import (
    MAX_BODY,
    HttpError,
    TokenCache,
    TokenFailed,
    fetch_token,
    read_response,
)
from edgecap.services.codec import Retry, TokenRequest
from tests.emulators.azure import AzureEmulator, TokenPlan
from tests.emulators.black_hole import BlackHole
from tests.emulators.connect_proxy import ConnectProxy
from tests.emulators.tls import TlsMaterial, make_tls

KEY = "token-test-key"
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def azure(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[AzureEmulator]:
    with AzureEmulator(tmp_path, api_key=KEY, tls=tls_material) as emulator:
        yield emulator


def request(url: str, key: str = KEY, **times: float) -> TokenRequest:
    return TokenRequest(url, (f"Ocp-Apim-Subscription-Key: {key}",), **times)


def dialer(ca_file: str, proxy: str | None = None, timeout: float = TIMEOUT) -> Dialer:
    return Dialer(tls_context(Path(ca_file)), proxy, timeout)


def failure(req: TokenRequest, dial: Dialer, timeout: float = TIMEOUT) -> TokenFailed:
    with pytest.raises(TokenFailed) as info:
        fetch_token(req, dial, timeout)
    return info.value


# -- the fetch against the emulator ----------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_token_is_fetched_over_tls_with_the_key(azure: AzureEmulator, framing: str) -> None:
    azure.plan_token(TokenPlan(framing=framing))  # type: ignore[arg-type]
    token = fetch_token(request(azure.token_url), dialer(azure.ca_file), TIMEOUT)
    (fetch,) = azure.token_fetches
    assert fetch.status == 200 and fetch.method == "POST"
    assert token.reveal() == fetch.token == azure.issued_tokens[0]
    headers = {name.lower(): value for name, value in fetch.headers}
    assert headers["ocp-apim-subscription-key"] == KEY
    assert headers["content-length"] == "0"
    assert headers["host"] == f"127.0.0.1:{azure.port}"
    assert KEY not in repr(request(azure.token_url)) and token.reveal() not in repr(token)


def test_a_token_is_fetched_through_the_proxy_tunnel(azure: AzureEmulator) -> None:
    with ConnectProxy() as proxy:
        token = fetch_token(
            request(azure.token_url), dialer(azure.ca_file, proxy=proxy.url), TIMEOUT
        )
        assert proxy.targets == [f"127.0.0.1:{azure.port}"]
    assert token.reveal() == azure.issued_tokens[0]


def test_the_cache_renews_only_when_less_than_renew_before_is_left(azure: AzureEmulator) -> None:
    cache = TokenCache(TIMEOUT)
    req = request(azure.token_url, lifetime=600.0, renew_before=120.0)
    first = cache.get(req, 1000.0, dialer(azure.ca_file))
    assert cache.get(req, 1000.0 + 479.9, dialer(azure.ca_file)) is first  # 120.1 s left
    assert len(azure.token_fetches) == 1 and cache.fetches == 1
    renewed = cache.get(req, 1000.0 + 480.0, dialer(azure.ca_file))  # 120 s left: renew
    assert renewed.reveal() != first.reveal()
    assert cache.get(req, 1000.0 + 480.0 + 479.0, dialer(azure.ca_file)) is renewed
    assert [f.token for f in azure.token_fetches] == [first.reveal(), renewed.reveal()]
    assert "tok-" not in repr(cache) and KEY not in repr(cache)


def test_the_cache_asks_anew_for_another_key_or_after_drop(azure: AzureEmulator) -> None:
    cache = TokenCache(TIMEOUT)
    first = cache.get(request(azure.token_url), 0.0, dialer(azure.ca_file))
    cache.drop()
    second = cache.get(request(azure.token_url), 1.0, dialer(azure.ca_file))
    with pytest.raises(TokenFailed):  # a reloaded key that the service refuses
        cache.get(request(azure.token_url, key="reloaded"), 2.0, dialer(azure.ca_file))
    assert not cache.fresh(request(azure.token_url), 2.0)  # a failure forgets the old one
    assert len({first.reveal(), second.reveal()}) == 2 and len(azure.token_fetches) == 3


# -- what a failure means --------------------------------------------------------------------


def test_a_refused_key_is_fatal(azure: AzureEmulator) -> None:
    error = failure(request(azure.token_url, key="wrong"), dialer(azure.ca_file)).error
    assert (error.code, error.kind, error.retry) == (401, "token_key_refused", Retry.FATAL)
    assert "wrong" not in error.describe()
    assert azure.issued_tokens == []


@pytest.mark.parametrize(
    ("status", "kind", "retry"),
    [
        (403, "token_key_refused", Retry.FATAL),
        (429, "token_rate_limited", Retry.SLOW),
        (500, "token_http_error", Retry.BACKOFF),
        (503, "token_http_error", Retry.BACKOFF),
        (404, "token_http_error", Retry.BACKOFF),
    ],
)
def test_the_token_services_status_decides_the_retry(
    azure: AzureEmulator, status: int, kind: str, retry: Retry
) -> None:
    azure.plan_token(TokenPlan(status=status))
    error = failure(request(azure.token_url), dialer(azure.ca_file)).error
    assert (error.code, error.kind, error.retry) == (status, kind, retry)
    assert f"HTTP {status}" in error.message


def test_an_untrusted_certificate_is_refused(azure: AzureEmulator, tmp_path: Path) -> None:
    stranger = make_tls(tmp_path / "other")  # a CA that did not sign the emulator's cert
    error = failure(request(azure.token_url), dialer(stranger.ca_file)).error
    assert (error.kind, error.retry) == ("token_tls_untrusted", Retry.SLOW)
    assert azure.token_fetches == []


def test_a_plain_http_token_url_is_refused_before_any_connection() -> None:
    error = failure(
        request("http://127.0.0.1:9/sts/v1.0/issueToken"), Dialer(tls_context(None), None, 1)
    ).error
    assert (error.kind, error.retry) == ("token_config", Retry.FATAL)


def test_a_malformed_header_is_never_sent() -> None:
    req = TokenRequest("https://127.0.0.1:9/t", ("Ocp-Apim-Subscription-Key: a\r\nX-Evil: 1",))
    error = failure(req, Dialer(tls_context(None), None, 1)).error
    assert error.kind == "token_config" and "Evil" not in error.message


@pytest.mark.parametrize("kind", ["silent", "unanswered"])
def test_a_dead_token_service_times_out_and_backs_off(kind: str, tls_material) -> None:
    with BlackHole(kind) as hole:  # type: ignore[arg-type]
        started = time.monotonic()
        error = failure(
            request(f"https://127.0.0.1:{hole.port}/sts/v1.0/issueToken"),
            dialer(tls_material.ca_file, timeout=0.3),
            timeout=0.3,
        ).error
        took = time.monotonic() - started
    assert (error.kind, error.retry) == ("token_unreachable", Retry.BACKOFF)
    assert "timed out" in error.message
    assert 0.25 < took < 1.5


@pytest.mark.parametrize("kind", ["silent", "unanswered"])
def test_a_stop_interrupts_a_fetch_that_hangs(kind: str, tls_material) -> None:
    with BlackHole(kind) as hole:  # type: ignore[arg-type]
        dial = dialer(tls_material.ca_file, timeout=30.0)
        errors: list[TokenFailed] = []
        req = request(f"https://127.0.0.1:{hole.port}/sts/v1.0/issueToken")

        def fetch() -> None:
            try:
                fetch_token(req, dial, 30.0)
            except TokenFailed as exc:
                errors.append(exc)

        thread = threading.Thread(target=fetch, name="test-token-fetch")
        thread.start()
        assert hole.wait_attempt(5)
        started = time.monotonic()
        dial.interrupt()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 0.5
    (exc,) = errors
    assert (exc.error.kind, exc.error.retry) == ("token_unreachable", Retry.BACKOFF)
    assert "interrupted" in exc.error.message


class SilentTlsServer:
    """Accepts one TLS connection, reads the request and never answers (until closed):
    a token service that hangs after the handshake."""

    def __init__(self, material: TlsMaterial) -> None:
        self._ctx = material.server_context()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.got_request = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-tls")
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._listener.accept()
        try:
            with self._ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                self.got_request.set()
                self._done.wait(10)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self._listener.close()


def test_a_stop_interrupts_a_fetch_waiting_for_the_answer(tls_material) -> None:
    server = SilentTlsServer(tls_material)
    try:
        dial = dialer(tls_material.ca_file, timeout=30.0)
        errors: list[TokenFailed] = []
        req = request(f"https://127.0.0.1:{server.port}/sts/v1.0/issueToken")

        def fetch() -> None:
            try:
                fetch_token(req, dial, 30.0)
            except TokenFailed as exc:
                errors.append(exc)

        thread = threading.Thread(target=fetch, name="test-token-fetch")
        thread.start()
        assert server.got_request.wait(5)
        started = time.monotonic()
        dial.interrupt()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 0.5
    finally:
        server.close()
    (exc,) = errors
    assert exc.error.kind == "token_unreachable" and "interrupted" in exc.error.message


# -- the HTTP/1.1 answer parser ---------------------------------------------------------------


def feed(data: bytes, piece: int) -> list[bytes]:
    """``data`` as ``recv`` would hand it over, ``piece`` bytes at a time, then EOF."""
    return [data[i : i + piece] for i in range(0, len(data), piece)] + [b""]


def parse(data: bytes, piece: int = 1):  # type: ignore[no-untyped-def]
    pieces = iter(feed(data, piece))
    return read_response(lambda size: next(pieces))


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/jwt\r\n"


@pytest.mark.parametrize("piece", [1, 2, 7, 4096])
@pytest.mark.parametrize(
    "answer",
    [
        HEAD + b"Content-Length: 9\r\n\r\ntok.en-42",
        HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\ntok\r\n6\r\n.en-42\r\n0\r\nT: 1\r\n\r\n",
        HEAD + b"\r\ntok.en-42",  # up to the end of the connection
        b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"Content-Length: 9\r\n\r\ntok.en-42",
        b"HTTP/1.0 200 OK\nContent-Length: 9\n\ntok.en-42",  # bare LFs
    ],
)
def test_every_body_framing_is_read(answer: bytes, piece: int) -> None:
    response = parse(answer, piece)
    assert (response.status, response.body) == (200, b"tok.en-42")


def test_the_status_reason_and_headers_are_read() -> None:
    response = parse(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    )
    assert (response.status, response.reason) == (429, "Too Many Requests")
    assert response.headers == {"retry-after": "60", "x-a": "1, 2"}


@pytest.mark.parametrize(
    "answer",
    [
        HEAD + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1),
        HEAD + b"\r\n" + b"x" * (MAX_BODY + 1),
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (MAX_BODY + 1) + b"x" * 10,
        HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"2000\r\n"
        + b"x" * 0x2000
        + b"\r\n" * 1
        + b"2001\r\n"
        + b"x" * 0x2001
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * (16 * 1024) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 \xb200 OK\r\n\r\n",
        HEAD + b"Content-Length: 5\r\n\r\nab",  # ended early
        HEAD + b"Content-Length: 5, 6\r\n\r\nabcdef",
        HEAD + b"Content-Length: -1\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
        HEAD + b"Bad Header\r\n\r\n",
        HEAD,  # no end of the head
    ],
)
def test_a_malformed_or_oversized_answer_is_refused(answer: bytes) -> None:
    with pytest.raises(HttpError):
        parse(answer, 4096)
