"""What every gateway route shares: who is asking, how much, and the wait for Kafka.

:class:`GatewayCore` authenticates a request's API key (and checks its scope),
reads a body within the size limit (gunzipped within the same limit), charges
the key's rate limit and publishes events with ``acks=all`` within
``ack_timeout``. The routes (:mod:`thumbline.producers.gateway`, ``gateway_reads``,
``gateway_otlp``) only say what their body means.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from thumbline.keys import ApiKey, KeyRing, Scope
from thumbline.metrics import Metrics
from thumbline.outages import transient
from thumbline.producers.errors import DeliveryFailed, ProducerClosed
from thumbline.producers.kafka import FeedbackProducer
from thumbline.schemas import FeedbackEvent, InvalidEvent, TimeBounds, TraceEvent

logger = logging.getLogger("thumbline.producers.gateway")

RETRY_AFTER_SECONDS = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The gateway's error body, ``{"error": ...}`` (and ``retriable`` where it applies)."""
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def stamp_annotator(fields: dict[str, Any], key: ApiKey | None, what: str) -> None:
    """Set who gave a feedback event (``fields["annotator"]``) from the key that sent it.

    - an ingest key with an annotator (``keys create --annotator evaluator``): that one,
      whatever the body or the shape says;
    - an ingest key without one (an end users' key, the one a browser holds): ``end_user``;
      feedback that says it is someone else's (a body's ``annotator``, an OTLP evaluation
      result, a shape that is a judge's) is refused, so it never counts as a user's;
    - an admin key, or no key (a loopback gateway before any key exists): what the body
      or the shape says, ``end_user`` by default.

    Raises:
        InvalidEvent: naming ``annotator`` and the key to create.
    """
    said = fields.get("annotator")
    if key is None or key.scope == "admin":
        fields["annotator"] = said if said is not None else "end_user"
        return
    own = key.writes_as
    if own != "end_user" or said in (None, own):
        fields["annotator"] = own
        return
    who = said if said in ("reviewer", "evaluator", "code") else "evaluator"
    raise InvalidEvent(what, [("annotator", said, (
        "this key writes end users' feedback only; send the feedback of a reviewer, an "
        "evaluator or code with a key of its own: thumbline keys create --scope ingest "
        f"--project {key.project} --annotator {who}"
    ))])  # fmt: skip


class RateLimiter:
    """A token bucket per key: ``rate`` events a second, bursts of one second's worth.

    A batch larger than the bucket passes when the bucket is full and leaves it
    in debt, so the key's average stays at ``rate``. At most ``max_buckets``
    are held: past that the least recently used is dropped (``on_evict`` is
    called), so a flood of keys never wipes the debt of a key in use; a dropped
    key starts again with a full bucket.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_buckets: int = 100_000,
        on_evict: Callable[[], object] = lambda: None,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._max_buckets = max_buckets
        self._on_evict = on_evict
        self._buckets: dict[str, tuple[float, float]] = {}  # least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, who: str, events: int) -> float:
        """0 if allowed (and counted), else the seconds to wait before it would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(who, (self.rate, now))  # re-inserted: most recent
        if len(self._buckets) >= self._max_buckets:
            del self._buckets[next(iter(self._buckets))]
            self._on_evict()
        tokens = min(self.rate, tokens + (now - at) * self.rate)
        needed = min(events, self.rate)
        if tokens < needed:
            self._buckets[who] = (tokens, now)
            return (needed - tokens) / self.rate
        self._buckets[who] = (tokens - events, now)
        return 0.0


class Unacknowledged(Exception):
    """Kafka did not acknowledge a request's events within ``ack_timeout``."""

    retriable = True


@dataclass
class GatewayCore:
    producer: FeedbackProducer
    keys: KeyRing
    metrics: Metrics
    host: str
    max_body_bytes: int = 5 * 1024 * 1024
    rate_limit: float = 0.0
    ack_timeout: float = 10.0
    time_bounds: TimeBounds = TimeBounds()  # noqa: RUF009 (frozen)

    def __post_init__(self) -> None:
        self.loopback = is_loopback(self.host)
        self.limiter = RateLimiter(
            self.rate_limit, on_evict=self.metrics.bound_hits.labels("rate_limit_buckets").inc
        )

    async def authenticate(self, request: Request, scope: Scope) -> ApiKey | None:
        """The request's key, or None while no key exists on a loopback gateway.

        Raises HTTPException 401 (no, unknown or revoked key), 403 (scope) or
        503 (the key store did not answer)."""
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        token = token or request.headers.get("x-api-key")
        keys = self.keys
        if keys.stale:  # the key table is read in a thread; fresh, it costs no hop
            try:
                await keys.refreshed()
            except Exception as exc:
                if not transient(exc):
                    raise
                raise HTTPException(
                    503, f"the key store did not answer: {exc}",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None  # fmt: skip
        if token is None:
            if self.loopback and not keys.has_keys:
                return None  # no key exists yet, and only this machine can reach us
            raise HTTPException(
                401, "send an API key: Authorization: Bearer tl_... (thumbline keys create)",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        key = keys.lookup(token)  # from memory, the same work for unknown and wrong keys
        if key is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if not key.may(scope):
            raise HTTPException(403, f"this key's scope is {key.scope}: it cannot {scope}")
        return key

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"the body is over {self.max_body_bytes} bytes: send smaller batches"
        )

    async def read_raw(self, request: Request, *, gzip_ok: bool = False) -> bytes:
        """The body, at most ``max_body_bytes``; with ``gzip_ok``, a gzip body is
        inflated and its inflated size is held to the same limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip" or not gzip_ok:
            raise HTTPException(
                415, f"unsupported Content-Encoding {encoding!r}: send gzip or none"
            )
        inflater = zlib.decompressobj(wbits=31)  # gzip framing
        try:
            plain = inflater.decompress(body, self.max_body_bytes + 1)
        except zlib.error as exc:
            raise HTTPException(400, f"the body is not valid gzip: {exc}") from None
        if len(plain) > self.max_body_bytes or inflater.unconsumed_tail:
            raise HTTPException(
                413, f"the body inflates to over {self.max_body_bytes} bytes: send smaller batches"
            )
        if not inflater.eof:
            raise HTTPException(400, "the gzip body is cut short")
        return plain

    async def read_json(self, request: Request) -> Any:
        try:
            return orjson.loads(await self.read_raw(request))
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None

    def charge(self, key: ApiKey | None, events: int) -> JSONResponse | None:
        """A 429 answer when ``events`` more would put the key over its rate, else None."""
        wait = self.limiter.take(key.key_id if key else "anonymous", events)
        if wait <= 0:
            return None
        retry = max(1, math.ceil(wait))
        return error(
            429, f"over {self.limiter.rate:g} events a second for this key: retry in {retry} s",
            retriable=True, headers={"Retry-After": str(retry)},
        )  # fmt: skip

    async def publish(self, kind: str, events: Sequence[FeedbackEvent | TraceEvent]) -> None:
        """Send ``events`` and wait for Kafka's acknowledgement of all of them.

        Raises:
            Unacknowledged: not acknowledged within ``ack_timeout`` (they may still land).
        """
        if not events:
            return
        try:
            # The whole wait: the linger, the queue behind a batch in flight, the request.
            async with asyncio.timeout(self.ack_timeout):
                await self.producer.send_many(events)
        except (DeliveryFailed, ProducerClosed, TimeoutError) as exc:
            logger.warning(
                "Kafka did not acknowledge %d events: %s", len(events),
                str(exc) or f"no answer within {self.ack_timeout:g} s",
            )  # fmt: skip
            self.metrics.gateway_events.labels(kind, "unavailable").inc(len(events))
            raise Unacknowledged(
                f"Kafka did not acknowledge the events within {self.ack_timeout:g} s: they "
                "may still land; send the same events again (the event ids keep it to one row)"
            ) from None
        self.metrics.gateway_events.labels(kind, "accepted").inc(len(events))
