"""The running agent: connections, consumer, heartbeat, signals.

RabbitMQ through aio-pika's robust connection (it reconnects and restores the
queue, its binding and the prefetch by itself); Redis through redis.asyncio. Both
with the agent's own credentials from the URLs (contract section 7): the agent
declares and binds only its own queue `agent:<id>:inbox`, never the exchange, and
publishes only `agent:<id>:result`.
"""

import asyncio
import json
import signal
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from aiormq.abc import ConfirmationFrameType
from pamqp.commands import Basic

from . import protocol
from .logs import Logger
from .runner import Outcome, Runner
from .settings import Settings, redacted_url
from .team import TeamRunner

#: Seconds between attempts while the broker cannot be reached at start.
CONNECT_RETRY_S = 2.0
#: Seconds a task whose result could not be published waits before it is given back.
REQUEUE_DELAY_S = 1.0
#: Seconds one clean-up step (ack, nack, cancel, close) may take.
QUIET_TIMEOUT_S = 3.0


class RedisStore:
    """Stored results in Redis (`runner.Store`)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def _key(self, task_id: str) -> str:
        s = self._settings
        return protocol.stored_result_redis_key(s.redis_prefix, s.agent_id, task_id)

    async def get_result(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(self._key(task_id))
        return None if raw is None else json.loads(raw)

    async def put_result(self, task_id: str, result: dict[str, Any]) -> None:
        await self._client.set(
            self._key(task_id), json.dumps(result), px=self._settings.result_ttl_s * 1000
        )


class ResultPublisher:
    """Publishes results on the exchange and waits for the confirm (`runner.Publisher`)."""

    def __init__(self, exchange: aio_pika.abc.AbstractExchange, agent_id: str) -> None:
        self._exchange = exchange
        self._routing_key = protocol.result_key(agent_id)

    async def publish_result(self, result: dict[str, Any]) -> None:
        message = aio_pika.Message(
            json.dumps(result).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=result.get("task_id"),
        )
        confirmation: ConfirmationFrameType | None = await self._exchange.publish(
            message, routing_key=self._routing_key
        )
        if not isinstance(confirmation, Basic.Ack):
            raise RuntimeError(f"the broker did not confirm the result: {confirmation!r}")


class Agent:
    def __init__(self, settings: Settings, log: Logger) -> None:
        self.settings = settings
        self.log = log
        self.team = TeamRunner(settings.autogen_config) if settings.autogen_config else None
        self.stopping = asyncio.Event()
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        #: The task being worked on (its asyncio task), for SIGTERM.
        self.in_hand: asyncio.Task[None] | None = None
        self.in_hand_id: str | None = None
        #: True once the inbox is bound and consumed.
        self.consuming = False
        #: Set once the inbox is consumed: the first heartbeat waits for it (see
        #: `heartbeat_loop`).
        self.ready = asyncio.Event()
        #: Set when the health may have changed (the broker lost or back, consuming
        #: begun): the heartbeat is written at once rather than at the next interval.
        self.health_changed = asyncio.Event()
        self.redis = aioredis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )

    # --- heartbeat -------------------------------------------------------------
    def health(self) -> tuple[str, str]:
        """The heartbeat's status and detail now."""
        if self.connection is None or not self.connection.connected.is_set():
            return protocol.UNHEALTHY, "no connection to the broker"
        if not self.consuming:
            return protocol.UNHEALTHY, "not consuming tasks yet"
        if self.in_hand_id is not None:
            return protocol.OK, f"working on task {self.in_hand_id}"
        return protocol.OK, "idle"

    async def heartbeat_loop(self) -> None:
        """Writes the heartbeat (contract section 8).

        Nothing before the inbox is consumed: an agent that has not reached the broker
        yet is starting, not unhealthy, and the manager reads its silence as `starting`
        (the image's label `autogen.heartbeat=true` says a heartbeat will come). Then one
        at once, one at once whenever the health may have changed (`health_changed`:
        the broker lost or back), and one every `HEARTBEAT_INTERVAL_S` otherwise.
        """
        s = self.settings
        key = protocol.heartbeat_redis_key(s.redis_prefix, s.agent_id)
        ttl_ms = protocol.heartbeat_ttl_ms(s.heartbeat_interval_s)
        await self.ready.wait()
        writer = _HeartbeatWriter(self.redis, key, ttl_ms, self.log)
        while True:
            # Cleared before the health is read: a change after this wakes the wait.
            self.health_changed.clear()
            await writer.write(*self.health())
            try:
                await asyncio.wait_for(self.health_changed.wait(), s.heartbeat_interval_s)
            except asyncio.TimeoutError:
                pass

    # --- broker ----------------------------------------------------------------
    async def connect(self) -> aio_pika.abc.AbstractRobustConnection:
        """The robust connection, retrying until it is made or the agent stops."""
        url = self.settings.rabbitmq_url
        attempt = 0
        while True:
            attempt += 1
            try:
                connection = await aio_pika.connect_robust(
                    url,
                    client_properties={"connection_name": f"agent-{self.settings.agent_id}"},
                )
                self.log.info("connected to the broker", url=redacted_url(url))
                connection.close_callbacks.add(self._on_close)
                connection.reconnect_callbacks.add(self._on_reconnect)
                return connection
            except Exception as e:
                if attempt == 1 or attempt % 30 == 0:
                    self.log.warning(
                        "broker not reachable; retrying",
                        url=redacted_url(url),
                        error=repr(e),
                        attempt=attempt,
                    )
                try:
                    await asyncio.wait_for(self.stopping.wait(), CONNECT_RETRY_S)
                    raise asyncio.CancelledError
                except asyncio.TimeoutError:
                    pass

    def _on_close(self, _conn: Any, exc: BaseException | None = None) -> None:
        if not self.stopping.is_set():
            self.log.warning("lost the broker; reconnecting", error=repr(exc))
        self.health_changed.set()

    def _on_reconnect(self, _conn: Any) -> None:
        self.log.info("reconnected to the broker")
        self.health_changed.set()

    def _consuming_started(self) -> None:
        """The inbox is consumed: the agent is ready, and says so at once."""
        self.consuming = True
        self.ready.set()
        self.health_changed.set()

    async def consume(self) -> tuple[aio_pika.abc.AbstractQueue, str]:
        """Declares and binds the inbox and starts consuming: the queue and consumer tag."""
        s = self.settings
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        # One task at a time (restored by the robust channel after a reconnect).
        await channel.set_qos(prefetch_count=1)
        # Not declared: the agent may not configure the exchange, only use it.
        exchange = await channel.get_exchange(s.exchange, ensure=False)
        runner = Runner(
            agent_id=s.agent_id,
            run_team=self.team.run if self.team else None,
            store=RedisStore(self.redis, s),
            publisher=ResultPublisher(exchange, s.agent_id),
            log=self.log,
            task_timeout_s=s.task_timeout_s,
        )
        queue = await channel.declare_queue(protocol.inbox_queue(s.agent_id), durable=True)
        await queue.bind(exchange, routing_key=protocol.task_key(s.agent_id))

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if self.stopping.is_set():
                await _quietly(message.nack(requeue=True))
                return
            work = asyncio.create_task(self._process(runner, message))
            self.in_hand = work
            self.in_hand_id = protocol.task_id_of(message.body) or "a task without an id"
            try:
                await work
            finally:
                self.in_hand = None
                self.in_hand_id = None

        tag = await queue.consume(on_message, no_ack=False)
        self.log.info(
            "consuming tasks",
            queue=protocol.inbox_queue(s.agent_id),
            exchange=s.exchange,
            routing_key=protocol.task_key(s.agent_id),
        )
        return queue, tag

    async def subscribe(self) -> tuple[aio_pika.abc.AbstractQueue, str] | None:
        """`consume`, retried (the exchange may not be there yet); None if stopped first."""
        attempt = 0
        while not self.stopping.is_set():
            attempt += 1
            try:
                subscription = await self.consume()
                self._consuming_started()
                return subscription
            except Exception as e:
                if attempt == 1 or attempt % 30 == 0:
                    self.log.warning(
                        "cannot consume tasks yet; retrying", error=repr(e), attempt=attempt
                    )
                try:
                    await asyncio.wait_for(self.stopping.wait(), CONNECT_RETRY_S)
                except asyncio.TimeoutError:
                    pass
        return None

    async def _process(
        self, runner: Runner, message: aio_pika.abc.AbstractIncomingMessage
    ) -> None:
        try:
            outcome = await runner.handle(message.body, bool(message.redelivered))
        except asyncio.CancelledError:
            self.log.warning("task given back unfinished (stopping)")
            await _quietly(message.nack(requeue=True))
            raise
        except Exception as e:
            self.log.error("result not published; giving the task back", error=repr(e))
            await asyncio.sleep(REQUEUE_DELAY_S)
            await _quietly(message.nack(requeue=True))
            return
        if not await _quietly(message.ack()):
            # The channel went away with the delivery: it comes again and is answered
            # from the stored result.
            self.log.warning("ack lost; a redelivery will be answered from the stored result")
        elif outcome is Outcome.INVALID:
            self.log.info("invalid task acknowledged")

    # --- the whole life ----------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self._on_signal, name)
        self.log.info(
            "started",
            team=self.team.description if self.team else None,
            redis=redacted_url(s.redis_url),
            heartbeat_interval_s=s.heartbeat_interval_s,
        )
        if self.team is None:
            self.log.warning("no AUTOGEN_CONFIG: tasks will be answered failed")
        heartbeat = asyncio.create_task(self.heartbeat_loop())
        try:
            try:
                self.connection = await self.connect()
            except asyncio.CancelledError:
                self.log.info("stopped before the broker was reached")
                return 0
            subscription = await self.subscribe()
            if subscription is None:
                return 0
            queue, tag = subscription
            await self.stopping.wait()
            # No new task from here on; the one in hand may finish.
            await _quietly(queue.cancel(tag))
            await self._finish_in_hand()
            return 0
        finally:
            heartbeat.cancel()
            if self.connection is not None:
                await _quietly(self.connection.close())
            await _quietly(self.redis.aclose())
            self.log.info("exiting")

    def _on_signal(self, name: str) -> None:
        if self.stopping.is_set():
            return
        self.log.info(
            f"received {name}: stopping",
            task_in_hand=self.in_hand_id,
            grace_s=self.settings.stop_grace_s,
        )
        self.stopping.set()

    async def _finish_in_hand(self) -> None:
        task = self.in_hand
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=self.settings.stop_grace_s)
        if done:
            self.log.info("task in hand finished before exit")
            return
        task.cancel()
        await asyncio.wait({task}, timeout=2)


class _HeartbeatWriter:
    """Writes heartbeats, logging a failure once (and the recovery) and each change of
    status, not every write."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_ms: int, log: Logger) -> None:
        self._client = client
        self._key = key
        self._ttl_ms = ttl_ms
        self._log = log
        self._failing = False
        self._last_status: str | None = None

    async def write(self, status: str, detail: str) -> None:
        try:
            await self._client.set(self._key, protocol.heartbeat(status, detail), px=self._ttl_ms)
            if self._failing:
                self._log.info("heartbeat written again")
            self._failing = False
        except Exception as e:
            if not self._failing:
                self._log.warning("heartbeat not written", error=repr(e))
            self._failing = True
        if status != self._last_status:
            self._log.info("health", status=status, detail=detail)
            self._last_status = status


async def _quietly(awaitable: Any, timeout_s: float = QUIET_TIMEOUT_S) -> bool:
    """Awaits `awaitable` for at most `timeout_s`; False (no exception) when it fails.

    Bounded because a robust channel waits for its reconnection before it answers:
    without the broker, a shutdown step would wait forever.
    """
    try:
        await asyncio.wait_for(awaitable, timeout_s)
        return True
    except (Exception, asyncio.TimeoutError):
        return False
