"""A 202 only within the ack timeout: a broker that stops answering gets 503s in time.

The broker is paused (SIGSTOP): its sockets stay open and every request to it
hangs, which is what a stuck or overloaded cluster looks like to a producer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from tests.conftest import unique
from tests.integration.conftest import consume
from tests.integration.test_gateway import post, ready
from thumbline.broker import EmbeddedBroker, free_port
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics

ACK_TIMEOUT = 3.0
MARGIN = 2.0  # the HTTP round trip and the event loop, on a busy 2-core machine


async def timed_post(url: str, body: dict, after: float) -> tuple[int, float, dict, dict]:
    await asyncio.sleep(after)
    started = time.monotonic()
    status, answer, headers = await post(url, body)
    return status, time.monotonic() - started, answer, headers


async def test_no_202_comes_later_than_the_ack_timeout(thumbline_bin, clean_env, tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    prefix, gateway_port = f"{unique('ack')}.", free_port()
    gateway: subprocess.Popen[str] | None = None
    paused = False
    try:
        await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
        env = {
            **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
            "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap, "THUMBLINE_TOPIC_PREFIX": prefix,
            "THUMBLINE_PARTITIONS": "4", "THUMBLINE_GATEWAY_PORT": str(gateway_port),
            "THUMBLINE_GATEWAY_ACK_TIMEOUT_SECONDS": str(ACK_TIMEOUT),
        }  # fmt: skip
        gateway = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
            [thumbline_bin, "gateway"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{gateway_port}"
        assert await ready(base, gateway), "the gateway did not start"
        url, t = f"{base}/v1/feedback", unique("paused")
        assert (await post(url, {"trace_id": t, "label": "good"}))[0] == 202  # connected

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        paused = True
        # One partition (one trace): each batch queues behind the one in flight.
        events = [{"event_id": f"{t}-{i}", "trace_id": t, "label": "bad"} for i in range(6)]
        answers = await asyncio.gather(
            *(timed_post(url, event, after=0.5 * i) for i, event in enumerate(events))
        )
        for status, seconds, body, headers in answers:
            assert status == 503 and seconds <= ACK_TIMEOUT + MARGIN, (status, seconds)
            assert body["retriable"] is True and int(headers["Retry-After"]) >= 1

        os.kill(broker.pid, signal.SIGCONT)
        paused = False
        for event in events:  # the client retries as told: the same event ids
            for _ in range(30):
                if (await post(url, event))[0] == 202:
                    break
                await asyncio.sleep(1)
            else:
                raise AssertionError(f"no 202 for {event['event_id']} after the broker resumed")
        messages = await consume(broker.bootstrap, [f"{prefix}feedback"], events=len(events) + 1)
        landed = {e["event_id"] for _, _, batch in messages for e in batch if "event_id" in e}
        assert {e["event_id"] for e in events} <= landed  # some maybe twice: one row each
    finally:
        if paused and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        if gateway is not None:
            gateway.terminate()
            try:
                await asyncio.to_thread(gateway.wait, 30)
            except subprocess.TimeoutExpired:
                gateway.kill()
                await asyncio.to_thread(gateway.wait)
            if gateway.stderr:
                gateway.stderr.close()
        await asyncio.to_thread(broker.stop)
