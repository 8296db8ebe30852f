"""SyncFeedbackProducer: the SDK for applications that are not async.

It runs a :class:`FeedbackProducer` on an event loop in a background thread;
every method blocks until Kafka acknowledged the event (or raises), exactly
like the awaited async method of the same name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from thumbline.producers.errors import ProducerClosed
from thumbline.producers.kafka import Delivery, Event, FeedbackProducer

T = TypeVar("T")


class SyncFeedbackProducer:
    """Blocking facade of :class:`FeedbackProducer`; takes the same arguments.

    Use ``with SyncFeedbackProducer(bootstrap_servers=...) as fb:``; ``close()``
    is safe to call twice. Methods may be called from any thread.
    """

    def __init__(self, *, timeout: float = 60.0, **kwargs: Any) -> None:
        self._timeout = timeout
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: FeedbackProducer | None = None

    def start(self) -> SyncFeedbackProducer:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="thumbline-producer", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def build() -> FeedbackProducer:
            producer = FeedbackProducer(**self._kwargs)
            await producer.start()
            return producer

        try:
            self._producer = self._run(build())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def close(self) -> None:
        """Deliver what is buffered and stop; safe to call twice."""
        if self._loop is None:
            return
        try:
            if self._producer is not None:
                self._run(self._producer.stop())
        finally:
            self._producer = None
            self._shutdown_loop()

    def __enter__(self) -> SyncFeedbackProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, event: Event) -> Delivery:
        return self._call(lambda p: p.send(event))

    def flush(self) -> None:
        self._call(lambda p: p.flush())

    def feedback(self, trace_id: str | None, **fields: Any) -> Delivery:
        return self._call(lambda p: p.feedback(trace_id, **fields))

    def thumb_up(self, trace_id: str | None, **fields: Any) -> Delivery:
        return self._call(lambda p: p.thumb_up(trace_id, **fields))

    def thumb_down(self, trace_id: str | None, **fields: Any) -> Delivery:
        return self._call(lambda p: p.thumb_down(trace_id, **fields))

    def rating(self, trace_id: str | None, value: float, **fields: Any) -> Delivery:
        return self._call(lambda p: p.rating(trace_id, value, **fields))

    def score(self, trace_id: str | None, value: float, **fields: Any) -> Delivery:
        return self._call(lambda p: p.score(trace_id, value, **fields))

    def boolean(self, trace_id: str | None, value: bool, **fields: Any) -> Delivery:
        return self._call(lambda p: p.boolean(trace_id, value, **fields))

    def text(self, trace_id: str | None, comment: str, **fields: Any) -> Delivery:
        return self._call(lambda p: p.text(trace_id, comment, **fields))

    def category(self, trace_id: str | None, category: str, **fields: Any) -> Delivery:
        return self._call(lambda p: p.category(trace_id, category, **fields))

    def signal(self, trace_id: str | None, name: str, **fields: Any) -> Delivery:
        return self._call(lambda p: p.signal(trace_id, name, **fields))

    def correction(self, trace_id: str | None, correction: str, **fields: Any) -> Delivery:
        return self._call(lambda p: p.correction(trace_id, correction, **fields))

    def trace(self, **fields: Any) -> str:
        return self._call(lambda p: p.trace(**fields))

    def span(self, trace_id: str, **fields: Any) -> str:
        return self._call(lambda p: p.span(trace_id, **fields))

    def _call(self, make: Callable[[FeedbackProducer], Coroutine[Any, Any, T]]) -> T:
        if self._producer is None:
            raise ProducerClosed("the producer is not started (call start() or use with)")
        producer = self._producer
        return self._run(make(producer))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None  # noqa: S101
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5)
            loop.close()
