"""Every Prometheus metric thumbline exports, declared in one place.

Built against a registry passed in (tests use their own); labels only from
bounded sets (topic, table, reason, outcome, rule, and project / environment /
model / capability capped at :data:`MAX_DIMENSION_SETS` label sets), never
ids. Durations are in seconds; counters end in ``_total``. The long-running
process (``thumbline up``) serves them on ``/metrics`` (:func:`serve`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from thumbline.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_DIMENSION_SETS = 500

_FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
_INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def gained(counts: dict[str, int], synced: dict[str, int]) -> Iterator[tuple[str, int]]:
    """Each counter of ``counts`` that grew since the last call, with how much.

    For jobs that count in plain dicts on the hot path and report to Prometheus
    on a tick: ``synced`` remembers what was reported.
    """
    for key, value in list(counts.items()):
        delta = value - synced.get(key, 0)
        if delta > 0:
            synced[key] = value
            yield key, delta


class Metrics:
    """The metrics of one process.

    Args:
        registry: where they are registered; ``CollectorRegistry()`` per process
            (the default global registry also holds the process collectors).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.events_consumed = Counter(
            "thumbline_events_consumed_total", "Events read, by topic.", ["topic"], registry=r
        )
        self.events_produced = Counter(
            "thumbline_events_produced_total", "Events written to Kafka, by topic.", ["topic"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "thumbline_dead_letters_total", "Inputs dead-lettered, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.join_outcomes = Counter(
            "thumbline_join_outcomes_total",
            "Feedback rows emitted by the join: joined, orphan or corrected.",
            ["outcome"],
            registry=r,
        )
        self.join_pending = Gauge(
            "thumbline_join_pending", "Feedback held, waiting for its trace.", registry=r
        )
        self.bound_hits = Counter(
            "thumbline_bound_hits_total",
            "Times an in-memory structure reached its bound, by structure (join_pending: "
            "feedback orphaned early; join_traces, join_orphans: entries forgotten before their "
            "retention; rate_windows, spike_tracks: events or dimensions left out "
            "of the rates; api_keys: a key table larger than the gateway holds, the oldest "
            "refused; rate_limit_buckets: the least recently used bucket dropped).",
            ["structure"],
            registry=r,
        )
        self.sink_rows = Counter(
            "thumbline_sink_rows_total", "Rows written to ClickHouse, by table.", ["table"],
            registry=r,
        )  # fmt: skip
        self.sink_batches = Counter(
            "thumbline_sink_batches_total", "Inserts into ClickHouse, by table.", ["table"],
            registry=r,
        )  # fmt: skip
        self.sink_failures = Counter(
            "thumbline_sink_failures_total", "Writes ClickHouse refused (retried).", registry=r
        )
        self.insert_seconds = Histogram(
            "thumbline_sink_insert_seconds", "Time to write one batch to ClickHouse.",
            buckets=_INSERT_BUCKETS, registry=r,
        )  # fmt: skip
        self.helper_inserts = Counter(
            "thumbline_helper_inserts_total",
            "Inserts join helper processes made through the store owner, by table.",
            ["table"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "thumbline_consumer_lag_messages",
            "Messages not yet read (high watermark minus position), by topic.",
            ["topic"],
            registry=r,
        )
        self.freshness = Histogram(
            "thumbline_freshness_seconds",
            "From an event's received_at to its row being queryable in ClickHouse.",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.bad_rate = Gauge(
            "thumbline_bad_rate",
            "Bad-feedback rate of the last ended base window, per project/environment/model.",
            ["project", "environment", "model"],
            registry=r,
        )
        self.feedback_window = Gauge(
            "thumbline_window_feedback",
            "Explicit feedback in the last ended base window, per project/environment/model.",
            ["project", "environment", "model"],
            registry=r,
        )
        self.late_events = Counter(
            "thumbline_rate_late_events_total",
            "Feedback that came after its rate window completed: the window is recomputed "
            "from the feedback table and written again (nothing is lost).",
            registry=r,
        )
        self.rate_recomputes = Counter(
            "thumbline_rate_recomputes_total",
            "Rate windows read back from the feedback table (late rows, reconciliation).",
            registry=r,
        )
        self.rates_watermark_lag = Gauge(
            "thumbline_rates_watermark_lag_seconds",
            "How far the rates' watermark (the join's stored input) is behind the clock: "
            "windows complete this much later than they end.",
            registry=r,
        )
        self.alerts = Counter(
            "thumbline_alerts_total", "Alert state changes, by rule and state.", ["rule", "state"],
            registry=r,
        )  # fmt: skip
        self.alerts_firing = Gauge(
            "thumbline_alerts_firing",
            "1 while a spike alert fires, per rule and dimensions.",
            ["rule", "project", "environment", "model", "capability"],
            registry=r,
        )
        self.webhooks = Counter(
            "thumbline_webhook_deliveries_total",
            "Alert webhook deliveries: delivered, retried, failed, dropped.",
            ["outcome"],
            registry=r,
        )
        self.gateway_requests = Counter(
            "thumbline_gateway_requests_total",
            "HTTP requests to the gateway, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.gateway_events = Counter(
            "thumbline_gateway_events_total",
            "Events posted to the gateway: accepted (acknowledged by Kafka) or rejected.",
            ["kind", "outcome"],
            registry=r,
        )
        self.dependency_retries = Counter(
            "thumbline_dependency_retries_total",
            "Calls to Kafka or the store that failed with an error waiting can cure, and were "
            "retried, by dependency (kafka, store) and operation.",
            ["dependency", "operation"],
            registry=r,
        )
        self.dependency_waiting = Gauge(
            "thumbline_dependency_waiting",
            "Operations waiting now for a dependency (kafka, store) to answer again; "
            "while above 0, /readyz says not ready.",
            ["dependency"],
            registry=r,
        )
        self._dimension_sets: set[tuple[str, ...]] = set()
        self._capped = False

    def bounded(self, labels: tuple[str, ...]) -> bool:
        """True if this dimension label set may be exported (at most MAX_DIMENSION_SETS)."""
        if labels in self._dimension_sets:
            return True
        if len(self._dimension_sets) < MAX_DIMENSION_SETS:
            self._dimension_sets.add(labels)
            return True
        if not self._capped:
            self._capped = True
            logger.warning(
                "more than %d dimension sets: later ones are left out of the per-dimension "
                "gauges (rates and alerts are still computed and stored)",
                MAX_DIMENSION_SETS,
            )
        return False


class MetricsServer:
    """``/metrics`` over HTTP in a thread; ``stop()`` is safe to call twice.

    With ``ready`` (what keeps the process from being ready, None when nothing
    does) it also answers ``/healthz`` (200 while the process serves) and
    ``/readyz`` (200, or 503 with the reason): the probes of a worker.
    """

    def __init__(
        self, metrics: Metrics, *, host: str, port: int,
        ready: Callable[[], str | None] | None = None,
    ) -> None:  # fmt: skip
        from wsgiref.simple_server import make_server

        from prometheus_client.exposition import (
            ThreadingWSGIServer,
            _get_best_family,
            _SilentHandler,
            make_wsgi_app,
        )

        class Server(ThreadingWSGIServer):
            """IPv4 or IPv6, as the host asks (as prometheus_client's own server)."""

        metrics_app = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = environ.get("PATH_INFO", "")
            if ready is None or path not in ("/healthz", "/readyz"):
                return metrics_app(environ, start_response)
            reason = ready() if path == "/readyz" else None
            status = "200 OK" if reason is None else "503 Service Unavailable"
            body = orjson.dumps({"status": "ok" if reason is None else "unavailable",
                                 **({"reason": reason} if reason else {})})  # fmt: skip
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]

        try:
            Server.address_family, addr = _get_best_family(host, port)
            self._server: Any = make_server(addr, port, app, Server, handler_class=_SilentHandler)
        except OSError as exc:
            raise ConfigError(
                f"/metrics cannot be served on {host}:{port}: {exc.strerror}; set "
                "THUMBLINE_METRICS_PORT (0: any free port) or THUMBLINE_METRICS_ENABLED=false"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        self.url = f"http://{host}:{self._server.server_port}/metrics"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
