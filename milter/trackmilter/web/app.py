"""The tracker as a plain ASGI application: verify, answer, judge, hand the hit to the writer.

No framework: the work per request is one HMAC, one verdict and one queue append, and a
router or middleware stack would cost more than all three. Nothing here waits on the
database; a hit reaches it through the background writer (and its spool).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from trackmilter.judging import KEPT_HEADER, KEPT_VERSION
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.model import HitReason, HitRecorded, utcnow
from trackmilter.tokens import MAX_TOKEN_CHARS, InvalidToken, Kind, Signer, TokenData
from trackmilter.web.api import PREFIX as API_PREFIX
from trackmilter.web.api import Api
from trackmilter.web.forwarded import ClientResolver, IPAddress, parse_ip, truncate
from trackmilter.web.rdns import label_for_hostname

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

# 1x1 transparent GIF (43 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
# Request headers kept as evidence: intent (prefetch / preview), fetch metadata, what a
# browser sends on a navigation (trackmilter.navigation), proxies. Each hit records which
# set it was kept with (judging.KEPT_HEADER): version 2 added the client hints.
EVIDENCE_HEADERS = frozenset({
    b"sec-purpose", b"purpose", b"x-purpose", b"x-moz", b"sec-fetch-mode", b"sec-fetch-site",
    b"sec-fetch-dest", b"sec-fetch-user", b"accept", b"accept-language", b"via", b"from",
    b"x-forwarded-for", b"forwarded", b"sec-ch-ua", b"sec-ch-ua-mobile",
    b"sec-ch-ua-platform", b"upgrade-insecure-requests",
})

_ADDRESS_EVIDENCE = frozenset({"x-forwarded-for", "forwarded", "reverse-dns"})
_NO_STORE = (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0")
_NOT_FOUND = (404, [(b"content-type", b"text/plain; charset=utf-8"), _NO_STORE], b"not found\n")
_COMMON = [(b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff")]


class Sink(Protocol):
    def submit(self, event: HitRecorded) -> None: ...


class Judge(Protocol):
    """The verdict at answer time, given the hit with the client address whole (the judge
    remembers the message's earlier hits in this process)."""

    def __call__(self, hit: HitRecorded, client: IPAddress | None = None
                 ) -> tuple[str, tuple[HitReason, ...]]: ...


class Networks(Protocol):
    def lookup(self, ip: IPAddress) -> str | None: ...


class TrackerApp:
    """ASGI callable. Routes: BASE/c/TOKEN (302), BASE/o/TOKEN (GIF), /healthz, /readyz,
    /metrics."""

    def __init__(
        self,
        *,
        base_url: str,
        signer: Signer,
        sink: Sink,
        metrics: Metrics,
        judge: Judge,
        resolver: ClientResolver,
        networks: Networks | None = None,
        ready: Callable[[], bool] = lambda: True,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 128,
        name: str = "",
        clock: Callable[[], datetime] = utcnow,
        api: Api | None = None,
        rdns: Any = None,
    ) -> None:
        # The ASGI path is percent-decoded: so must the prefix be.
        prefix = unquote(urlsplit(base_url).path.rstrip("/"))
        self._click = prefix + "/c/"
        self._open = prefix + "/o/"
        self._signer = signer
        self.key_ids = signer.key_ids
        self._sink = sink
        self._metrics = metrics
        self._judge = judge
        self._resolver = resolver
        self._networks = networks
        self._ready = ready
        self._v4, self._v6 = ipv4_prefix, ipv6_prefix
        # With [privacy] truncation, evidence that carries whole addresses (forwarding
        # headers, a PTR name such as c-203-0-113-7.example.net) is not stored either.
        self._truncating = ipv4_prefix < 32 or ipv6_prefix < 128
        self._name = name
        self._clock = clock
        self._api = api  # None: /api/v1/ is not served ([web] api_token_file empty)
        self._rdns = rdns  # [web] reverse_dns: a ReverseDNS, never waited on
        self._log = get_logger(component="web")
        # Hit ids: unique per process start (random prefix) and per hit (a counter); a
        # getrandom() call per hit showed as a tenth of the tracker's CPU.
        self._ids = map(f"{os.urandom(6).hex()}{{:x}}".format, itertools.count(1))
        # Called at lifespan shutdown (the server stops this worker): flush and close.
        self.on_shutdown: Callable[[], None] | None = None

    def set_signer(self, signer: Signer) -> None:
        """Verify with these keys from now on (`trackmilter edge` after a key rotation)."""
        self._signer = signer
        self.key_ids = signer.key_ids

    def set_networks(self, networks: Any) -> None:
        """Look clients up in these lists from now on (`trackmilter edge` on SIGHUP)."""
        self._networks = networks

    def close(self) -> None:
        """Stop background lookups (reverse DNS)."""
        if self._rdns is not None:
            self._rdns.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    try:
                        self.on_shutdown()
                    except Exception as e:  # noqa: BLE001 - still report the shutdown
                        self._log.error("web_shutdown_failed", error=repr(e))
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith(self._click):
            status, headers, body = self._hit(scope, path[len(self._click):], method, Kind.CLICK)
        elif path.startswith(self._open):
            status, headers, body = self._hit(scope, path[len(self._open):], method, Kind.OPEN)
        elif path == "/healthz":
            status, headers, body = 200, [(b"content-type", b"text/plain")], b"ok\n"
        elif path == "/readyz":
            ok = self._ready()
            status = 200 if ok else 503
            headers = [(b"content-type", b"text/plain")]
            body = b"ready\n" if ok else b"store unavailable: hits are being spooled\n"
        elif path.startswith(API_PREFIX) and self._api is not None:
            status, headers, body = await self._api.handle(scope, path, method)
        elif path == "/metrics":
            status, headers = 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            body = generate_latest(_exposed(self._metrics.registry))
        else:
            status, headers, body = _NOT_FOUND
        length = str(len(body)).encode()
        if method == "HEAD":
            body = b""  # the length is still that of the GET answer (RFC 9110 §9.3.2)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", length)]})
        await send({"type": "http.response.body", "body": body})

    def _hit(self, scope: Scope, token: str, method: str, want: Kind
             ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        start = time.perf_counter()
        target = "click" if want is Kind.CLICK else "open"
        if method not in ("GET", "HEAD"):
            return 405, [(b"allow", b"GET, HEAD"), _NO_STORE], b""
        data = self._verified(token, want, target)
        if data is None:
            return _NOT_FOUND
        try:
            self._record(scope, target, method, data.tracking_id, data.index, data.url)
        except Exception as e:  # noqa: BLE001 - the answer never depends on recording
            self._log.error("hit_record_failed", error=repr(e), tracking_id=data.tracking_id)
        self._metrics.child(self._metrics.request_seconds, target).observe(
            time.perf_counter() - start)
        if want is Kind.CLICK:
            # The URL is the signed one, checked against a printable-ASCII pattern by verify:
            # no CR/LF or space can reach this header, and no other host can be named.
            return 302, [(b"location", data.url.encode("ascii")), _NO_STORE, *_COMMON], b""
        return 200, [(b"content-type", b"image/gif"), _NO_STORE, (b"pragma", b"no-cache"),
                     (b"expires", b"0"), *_COMMON], PIXEL

    def ingest(self, path: str, method: str, headers: Sequence[tuple[bytes, bytes]],
               client: str | None, at: datetime, hit_id: str, *, hints: bool = True) -> bool:
        """A hit nginx already answered (`trackmilter edge`): the token verified again
        here, then the same verdict and recording as a request answered by this app.

        ``client`` is the address nginx logged (after its real-IP module, if any): it is
        taken as it is, whatever the resolver would make of forwarding headers. ``hit_id``
        (nginx's $request_id) makes reading the same log line twice store one hit.
        ``hints``: the log carried the client-hint headers (its format tm2, not tm1).
        False when the token does not verify or the path is none of ours.
        """
        if path.startswith(self._click):
            token, want, target = path[len(self._click):], Kind.CLICK, "click"
        elif path.startswith(self._open):
            token, want, target = path[len(self._open):], Kind.OPEN, "open"
        else:
            return False
        data = self._verified(token, want, target)
        if data is None:
            return False
        self._record({"headers": headers, "client": (client, 0) if client else None}, target,
                     method, data.tracking_id, data.index, data.url, at=at, hit_id=hit_id,
                     resolve=False, hints=hints)
        return True

    def _verified(self, token: str, want: Kind, target: str) -> TokenData | None:
        """The token's data, or None (counted) for anything but a token of kind `want`."""
        try:
            if len(token) > MAX_TOKEN_CHARS:  # never signed: checked before any decoding
                raise InvalidToken("too long")
            data = self._signer.verify(token)
            if data.kind is not want:
                raise InvalidToken("token of the other kind")
        except InvalidToken:
            self._metrics.child(self._metrics.invalid_tokens, target).inc()
            return None
        return data

    def _record(self, scope: Scope, target: str, method: str, tid: str, index: int,
                url: str, *, at: datetime | None = None, hit_id: str | None = None,
                resolve: bool = True, hints: bool = True) -> None:
        ua = ""
        forwarded = xff = None
        kept: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value.decode("latin-1")
            elif name in EVIDENCE_HEADERS:
                text = value.decode("latin-1")
                key = name.decode("latin-1")
                # One value per name, bounded: evidence, not a place to store megabytes.
                if key not in kept:
                    kept[key] = text[:512]
                if name == b"forwarded":
                    forwarded = text if forwarded is None else f"{forwarded}, {text}"
                elif name == b"x-forwarded-for":
                    xff = text if xff is None else f"{xff}, {text}"
        if hints:
            kept[KEPT_HEADER] = KEPT_VERSION
        peer = scope.get("client")
        if resolve:
            ip = self._resolver.client(peer[0] if peer else None, forwarded, xff)
        else:
            ip = parse_ip(peer[0]) if peer else None
        network = (self._networks.lookup(ip) or "") if self._networks and ip else ""
        if self._rdns is not None and ip is not None:
            # Known only from a client's second hit on (resolved in the background).
            name = self._rdns.name(ip)
            if name:
                kept["reverse-dns"] = name[:255]
                network = network or label_for_hostname(name) or ""
        if at is None:
            at = self._clock()
        hit = HitRecorded(
            hit_id=hit_id or next(self._ids), target=target, tracking_id=tid, at=at, index=index,
            url=url, client=str(ip) if ip else "", network=network, method=method,
            user_agent=ua[:1024], headers=tuple(kept.items()), tracker=self._name,
            # Link 0 is the hidden link the milter adds with [tracking] honeypot: no person
            # sees it, so whoever follows it is a machine.
            honeypot=target == "click" and index == 0,
        )
        verdict, reasons = self._judge(hit, ip)
        evidence = hit.headers
        if self._truncating:
            evidence = tuple((k, v) for k, v in evidence if k not in _ADDRESS_EVIDENCE)
        stored = HitRecorded(
            hit_id=hit.hit_id, target=target, tracking_id=tid, at=at, index=index, url=url,
            client=truncate(ip, self._v4, self._v6), network=network, method=method,
            user_agent=hit.user_agent, headers=evidence, tracker=self._name,
            honeypot=hit.honeypot, verdict=verdict, reasons=reasons,
        )
        self._sink.submit(stored)
        m = self._metrics
        m.child(m.hits, target, verdict).inc()
        for r in reasons:
            m.child(m.hit_reasons, target, r.code).inc()
        self._log.info(
            "hit", target=target, tracking_id=tid, index=index, verdict=verdict,
            reasons=[r.code for r in reasons], client=stored.client, network=network,
            user_agent=ua[:200], method=method, hit_id=hit.hit_id,
        )


def _exposed(registry: CollectorRegistry) -> CollectorRegistry:
    """This process's registry, or, with several workers (PROMETHEUS_MULTIPROC_DIR set by
    `trackmilter web`), every worker's samples merged: whichever worker answers the scrape
    reports them all."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return registry
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged
