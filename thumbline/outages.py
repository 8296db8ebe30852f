"""Outages of Kafka and the store are waited out, not fatal.

A call to Kafka or ClickHouse that fails with an error waiting can cure
(:func:`transient`) is retried with growing back-off for as long as it takes.
The caller holds its input meanwhile (a job waiting on a send or an insert
takes nothing new), so Kafka keeps the backlog and nothing is dropped; the
tables' identities and the rates' per-event counts make a call that went
through twice count once. Any other error is a bug: it ends the process with
its traceback.

:class:`Waits` is one process's record of what it waits for. The retry loops
report to it, ``/readyz`` reads it (:meth:`Waits.problems`), and it logs
quietly: one WARNING when a wait begins, one a minute while it lasts, one when
it ends. Every retry is counted in ``thumbline_dependency_retries_total``, and
``thumbline_dependency_waiting`` says what waits now.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError, KafkaUnavailableError
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

from thumbline.metrics import Metrics
from thumbline.schemas.errors import ThumblineError

logger = logging.getLogger(__name__)

Dependency = Literal["kafka", "store"]
KAFKA: Dependency = "kafka"
STORE: Dependency = "store"
_NAMES: dict[Dependency, str] = {"kafka": "Kafka", "store": "the store (ClickHouse)"}

#: Back-off: the first retry after this long, doubling up to MAX_DELAY (minus up
#: to a fifth, at random, so that workers do not retry in step).
FIRST_DELAY = 0.25
MAX_DELAY = 5.0
#: While a wait lasts, a reminder at most this often (the log stays quiet).
REMIND_EVERY = 60.0
#: A stopping process checks this often whether to give up a back-off.
_STOP_CHECK = 0.5

#: ClickHouse's codes for a statement that can never succeed as it was sent (a
#: bug, or a wrong setting), not an outage: sending it again cannot help.
PERMANENT_CODES = frozenset({
    1, 2, 6, 16, 26, 27, 36, 38, 41, 42, 43, 44, 46, 47, 48, 49, 53, 60, 62, 70, 72, 81,
    115, 117, 130, 164, 184, 215, 352, 386, 456, 457, 497, 516,
})  # fmt: skip

#: ClickHouse's codes for a server that cannot serve a statement now, whatever it is.
#: For SQL that people send (the sandbox) only these, and no answer at all, are worth
#: sending again: any other code is the statement's own fault (:func:`outage`).
OUTAGE_CODES = frozenset({
    3, 32, 202, 203, 209, 210, 236, 242, 252, 319, 394, 425, 999, 1000,
})  # fmt: skip

T = TypeVar("T")
P = ParamSpec("P")


def transient(exc: BaseException) -> bool:
    """Whether waiting can cure ``exc``: Kafka or the store did not answer, or not yet.

    - thumbline's errors: their ``retriable`` flag;
    - aiokafka's: their ``retriable`` flag (a request timed out, a connection
      dropped, a leader moved...), plus the client's own timeouts (no metadata
      in time, a full buffer) and no broker reachable at all;
    - clickhouse-connect's: ``OperationalError`` (a server, or the store
      owner's endpoint, did not answer) and a ``DatabaseError`` whose code is
      not the statement's own fault (:data:`PERMANENT_CODES`); never
      ``ProgrammingError``;
    - the network's: ``OSError`` and timeouts.
    """
    if isinstance(exc, ThumblineError):
        return exc.retriable
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError | KafkaUnavailableError)
    if isinstance(exc, ProgrammingError):
        return False
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DatabaseError):
        return getattr(exc, "code", None) not in PERMANENT_CODES
    return isinstance(exc, OSError | TimeoutError)


def outage(exc: BaseException, code: int | None) -> bool:
    """Whether a statement people sent failed because the store could not serve it
    (it did not answer, or said so with one of :data:`OUTAGE_CODES`), not because of
    the statement. :func:`transient` errs the other way, for the stream's own SQL:
    there an unknown code is waited out rather than dropping what the stream holds."""
    if isinstance(exc, OperationalError | OSError | TimeoutError):
        return True
    return code in OUTAGE_CODES


class WaitAborted(ThumblineError):
    """The process is stopping while a call waits for Kafka or the store.

    What the caller held stays unacknowledged: the next start replays it.
    """

    retriable = False


@dataclass(slots=True)
class _Wait:
    since: float
    reminded_at: float
    attempts: int = 0
    error: str = ""


class Waits:
    """What this process waits for now, and the back-off of the loops that wait.

    Thread-safe: store calls run in threads and report here too.

    Args:
        metrics: where retries and waits are counted (optional).
        mask: removes secrets from error texts before they are logged or shown.
        first_delay, max_delay: the back-off (see :data:`FIRST_DELAY`).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        mask: Callable[[str], str] = str,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._mask = mask
        self._clock = clock
        self._lock = threading.Lock()
        self._waits: dict[tuple[Dependency, str], _Wait] = {}
        self._stopping = threading.Event()

    # Reporting ----------------------------------------------------------------

    def failed(self, dependency: Dependency, operation: str, exc: BaseException) -> float:
        """Record one failed call of ``operation``; return how long to wait before the next."""
        now = self._clock()
        text = self._describe(exc)
        with self._lock:
            wait = self._waits.get((dependency, operation))
            began = wait is None
            if wait is None:
                wait = self._waits[(dependency, operation)] = _Wait(since=now, reminded_at=now)
            wait.attempts += 1
            wait.error = text
            remind = not began and now - wait.reminded_at >= REMIND_EVERY
            if remind:
                wait.reminded_at = now
            attempts, since = wait.attempts, wait.since
            count = self._count(dependency)
        name = _NAMES[dependency]
        if began:
            logger.warning(
                "waiting for %s: %s failed (%s); retrying with back-off for as long as it "
                "takes, the input waits meanwhile", name, operation, text,
            )  # fmt: skip
        elif remind:
            logger.warning(
                "still waiting for %s after %.0f s: %s (%d attempts; last: %s)",
                name, now - since, operation, attempts, text,
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.dependency_retries.labels(dependency, operation).inc()
            self.metrics.dependency_waiting.labels(dependency).set(count)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            return float(retry_after)  # the caller knows better (e.g. the sink's own schedule)
        delay = min(self.max_delay, self.first_delay * 2 ** min(attempts - 1, 16))
        return delay * random.uniform(0.8, 1.0)  # noqa: S311 (jitter, not a secret)

    def succeeded(self, dependency: Dependency, operation: str) -> None:
        """``operation`` went through: its wait, if any, is over."""
        with self._lock:
            wait = self._waits.pop((dependency, operation), None)
            if wait is None:
                return
            count = self._count(dependency)
        logger.warning(
            "%s answers again: %s went through after %.0f s (%d retries)",
            _NAMES[dependency], operation, self._clock() - wait.since, wait.attempts,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.dependency_waiting.labels(dependency).set(count)

    def _count(self, dependency: Dependency) -> int:
        return sum(1 for d, _ in self._waits if d == dependency)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return self._mask(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def waiting(self, dependency: Dependency | None = None) -> bool:
        """True while some operation waits (for ``dependency``, or for anything)."""
        with self._lock:
            return any(dependency in (None, d) for d, _ in self._waits)

    def problems(self) -> list[str]:
        """What waits now, one line each, for ``/readyz``."""
        now = self._clock()
        with self._lock:
            waits = sorted(self._waits.items(), key=lambda item: item[1].since)
            return [
                f"waiting for {_NAMES[dependency]} for {now - w.since:.0f} s: {operation} "
                f"({w.attempts} attempts; last: {w.error})"
                for (dependency, operation), w in waits
            ]

    # Waiting ------------------------------------------------------------------

    def stop(self) -> None:
        """The process stops: back-offs under way, and later ones, raise WaitAborted."""
        self._stopping.set()

    async def wait(self, dependency: Dependency, operation: str, exc: BaseException) -> None:
        """Record a failure of ``operation`` and sleep its back-off.

        Raises:
            WaitAborted: the process is stopping.
        """
        deadline = self._clock() + self.failed(dependency, operation, exc)
        while not self._stopping.is_set():
            left = deadline - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _STOP_CHECK))
        raise WaitAborted(f"stopped while waiting for {_NAMES[dependency]} ({operation})")

    def wait_blocking(self, dependency: Dependency, operation: str, exc: BaseException) -> None:
        """:meth:`wait` for a thread (a blocking store call)."""
        if self._stopping.wait(self.failed(dependency, operation, exc)):
            raise WaitAborted(f"stopped while waiting for {_NAMES[dependency]} ({operation})")

    async def retry(
        self, dependency: Dependency, operation: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """``await call()`` until it returns; transient errors are waited out, others raised."""
        while True:
            try:
                result = await call()
            except Exception as exc:
                if not transient(exc):
                    raise
                await self.wait(dependency, operation, exc)
                continue
            self.succeeded(dependency, operation)
            return result

    def blocking(
        self, dependency: Dependency, operation: str, call: Callable[P, T]
    ) -> Callable[P, T]:
        """``call`` retried in the calling thread like :meth:`retry` (run it in a thread).

        Retrying inside the call, not around it, matters when the caller changes
        its state around the call and cannot simply call again (the join's expiry).
        """

        def retried(*args: P.args, **kwargs: P.kwargs) -> T:
            while True:
                try:
                    result = call(*args, **kwargs)
                except Exception as exc:
                    if not transient(exc):
                        raise
                    self.wait_blocking(dependency, operation, exc)
                    continue
                self.succeeded(dependency, operation)
                return result

        return retried
