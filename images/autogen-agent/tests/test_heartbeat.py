"""The heartbeat loop against a fake Redis and a stand-in broker connection: nothing
before the inbox is consumed, one at once when it is, one at once when the broker is
lost or back, one every interval otherwise."""

import asyncio
import json
import time
import unittest
from typing import Any

from reference_agent.service import Agent
from reference_agent.settings import load

from .helpers import quiet_logger

#: Long enough that a write within a test's waits is never the interval's.
LONG_INTERVAL_S = "30"


class FakeRedis:
    """Records every SET; `written` is set on each."""

    def __init__(self) -> None:
        self.sets: list[tuple[float, str, dict[str, Any], int]] = []
        self.written = asyncio.Event()

    async def set(self, key: str, value: str, px: int) -> None:
        self.sets.append((time.monotonic(), key, json.loads(value), px))
        self.written.set()

    async def aclose(self) -> None:
        pass


class FakeConnection:
    """What `Agent.health` reads of aio-pika's robust connection."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()


def agent(interval_s: str) -> tuple[Agent, FakeRedis, FakeConnection]:
    settings = load(
        {
            "AGENT_ID": "a1",
            "RABBITMQ_URL": "amqp://agent-a1:secret@127.0.0.1:1/%2f",
            "REDIS_URL": "redis://agent-a1:secret@127.0.0.1:1/0",
            "REDIS_PREFIX": "p:",
            "HEARTBEAT_INTERVAL_S": interval_s,
        }
    )
    log, _ = quiet_logger()
    a = Agent(settings, log)
    fake, conn = FakeRedis(), FakeConnection()
    a.redis = fake  # type: ignore[assignment]
    a.connection = conn  # type: ignore[assignment]
    return a, fake, conn


async def next_write(fake: FakeRedis, timeout_s: float = 2.0) -> dict[str, Any]:
    """The heartbeat of the next SET, waiting at most `timeout_s`."""
    await asyncio.wait_for(fake.written.wait(), timeout_s)
    fake.written.clear()
    return fake.sets[-1][2]


class HeartbeatTest(unittest.IsolatedAsyncioTestCase):
    async def test_nothing_before_the_inbox_is_consumed_then_at_once(self) -> None:
        a, fake, conn = agent(LONG_INTERVAL_S)
        loop = asyncio.create_task(a.heartbeat_loop())
        try:
            # Connecting (the broker not reached yet, then reached, inbox not yet consumed).
            await asyncio.sleep(0.2)
            conn.connected.set()
            await asyncio.sleep(0.2)
            self.assertEqual(fake.sets, [], "no heartbeat before the inbox is consumed")
            consumed_at = time.monotonic()
            a._consuming_started()
            hb = await next_write(fake)
            self.assertLess(fake.sets[0][0] - consumed_at, 0.5, "written at once")
            self.assertEqual((hb["status"], hb["detail"]), ("ok", "idle"))
            _, key, _, px = fake.sets[0]
            self.assertEqual(key, "p:agent:a1:data:heartbeat")
            self.assertEqual(px, 90_000, "three intervals")
        finally:
            loop.cancel()

    async def test_a_lost_and_regained_broker_is_written_at_once(self) -> None:
        a, fake, conn = agent(LONG_INTERVAL_S)
        conn.connected.set()
        loop = asyncio.create_task(a.heartbeat_loop())
        try:
            a._consuming_started()
            self.assertEqual((await next_write(fake))["status"], "ok")
            # aio-pika clears `connected`, then calls the close callbacks.
            conn.connected.clear()
            a._on_close(conn, ConnectionError("gone"))
            hb = await next_write(fake)
            self.assertEqual(
                (hb["status"], hb["detail"]), ("unhealthy", "no connection to the broker")
            )
            # Reconnected: `connected` set, then the reconnect callbacks.
            conn.connected.set()
            a._on_reconnect(conn)
            self.assertEqual((await next_write(fake))["status"], "ok")
            self.assertEqual(len(fake.sets), 3, "one write per change, none in between")
        finally:
            loop.cancel()

    async def test_written_every_interval_otherwise(self) -> None:
        a, fake, conn = agent("0.2")
        conn.connected.set()
        loop = asyncio.create_task(a.heartbeat_loop())
        try:
            a._consuming_started()
            for _ in range(3):
                self.assertEqual((await next_write(fake, 1.0))["status"], "ok")
            gaps = [b[0] - a_[0] for a_, b in zip(fake.sets, fake.sets[1:])]
            self.assertTrue(all(0.15 < g < 0.6 for g in gaps), gaps)
        finally:
            loop.cancel()

    async def test_a_failed_write_is_logged_once_and_the_loop_goes_on(self) -> None:
        a, fake, conn = agent("0.1")
        conn.connected.set()
        calls = 0

        async def failing_set(key: str, value: str, px: int) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("redis down")

        fake.set = failing_set  # type: ignore[method-assign]
        log, out = quiet_logger()
        a.log = log
        loop = asyncio.create_task(a.heartbeat_loop())
        try:
            a._consuming_started()
            await asyncio.sleep(0.5)
            self.assertGreaterEqual(calls, 3)
            warnings = [line for line in out.getvalue().splitlines() if "not written" in line]
            self.assertEqual(len(warnings), 1, out.getvalue())
        finally:
            loop.cancel()


if __name__ == "__main__":
    unittest.main()
