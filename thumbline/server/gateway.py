"""The gateway as ``thumbline up`` and ``thumbline gateway`` run it: producer, keys, server.

The app itself (routes, auth, limits) is :mod:`thumbline.producers.gateway`; this wires
it to the settings: a Kafka producer with ``acks=all``, the key ring on the
store, two pools of SQL-sandbox clients (the inbox and trace reads, and
``POST /v1/sql``: a slow admin query never delays a read), and uvicorn on the
configured address.
"""

from __future__ import annotations

import asyncio

from clickhouse_connect.driver.client import Client

from thumbline.keys import KeyRing
from thumbline.metrics import Metrics
from thumbline.outages import Waits
from thumbline.producers.gateway import build_app
from thumbline.producers.gateway_server import Gateway, check_exposure
from thumbline.producers.kafka import FeedbackProducer
from thumbline.sandbox import Sandbox, warn_if_unwalled
from thumbline.score_configs import sandbox_sql
from thumbline.settings import Settings
from thumbline.sqlpool import SqlPool
from thumbline.store import open_client


class GatewayProcess:
    """Start with ``await GatewayProcess(...).start()``; ``stop()`` is safe to call twice."""

    def __init__(
        self, settings: Settings, bootstrap: str, metrics: Metrics, *, waits: Waits | None = None
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = metrics
        #: What the process waits for (in thumbline up: the stream's waits); /readyz says it.
        self.waits = waits or Waits(metrics, mask=settings.mask)
        self.url = ""
        self._client: Client | None = None
        self._pools: list[SqlPool] = []
        self._producer: FeedbackProducer | None = None
        self._gateway: Gateway | None = None
        self.keys: KeyRing

    async def start(self) -> GatewayProcess:
        s = self.settings
        try:
            self._client = await asyncio.to_thread(open_client, s, readonly=True)
            warn_if_unwalled(s)
            sandbox, size = Sandbox(s), s.gateway_sql_workers
            for name in ("thumbline-reads", "thumbline-sql"):
                pool = await asyncio.to_thread(SqlPool, s, size=size, name=name, sandbox=sandbox)
                self._pools.append(pool)
            self.keys = KeyRing(
                self._client, s.clickhouse_database, ttl=s.gateway_key_cache_seconds,
                max_keys=s.gateway_max_keys, metrics=self.metrics,
            )  # fmt: skip
            await check_exposure(self.keys, s.gateway_host)  # before connecting anything
            # The app bounds each request's whole wait by the ack timeout; a request timeout
            # as long makes aiokafka give up a batch past it soon after, not 40 s later.
            self._producer = FeedbackProducer(
                bootstrap_servers=self.bootstrap, topic_prefix=s.topic_prefix,
                linger_ms=2.0, request_timeout_ms=int(s.gateway_ack_timeout_seconds * 1000),
                **s.kafka_kwargs(),
            )  # fmt: skip
            await self._producer.start()
            app = build_app(
                producer=self._producer, keys=self.keys, reads=self._pools[0],
                sql=self._pools[1], database=s.clickhouse_database, host=s.gateway_host,
                metrics=self.metrics, max_body_bytes=s.gateway_max_body_bytes,
                rate_limit=s.gateway_rate_limit, cors_origins=s.cors_origins,
                ack_timeout=s.gateway_ack_timeout_seconds, time_bounds=s.time_bounds,
                problems=self.waits.problems, otlp_project=s.otlp_project,
                capture_content=s.capture_content,
                score_sql=sandbox_sql(s, open_path=False),
                rate_windows=(s.rate_window_seconds, *s.sliding_windows),
                rate_annotators=s.counted_annotators,
            )  # fmt: skip
            self._gateway = await Gateway(app, host=s.gateway_host, port=s.gateway_port).start()
            self.url = self._gateway.url
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            await gateway.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        pools, self._pools = self._pools, []
        for pool in pools:
            await asyncio.to_thread(pool.close)
        client, self._client = self._client, None
        if client is not None:
            client.close()
