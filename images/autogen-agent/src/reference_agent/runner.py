"""What happens to one delivered task, apart from the connections.

`Runner.handle` answers a delivery and returns when the result is confirmed by the
broker; the caller acknowledges then. It raises when the result could not be
published, and the caller gives the task back (unacknowledged). The order makes a
result neither lost nor computed twice:

1. a result stored for this task id (the task was answered, the ack was lost): that
   result is published again, the team does not run;
2. otherwise the team runs (`failed` with the error when it raises);
3. the result is stored in Redis (`agent:<id>:data:result:<task_id>`, with a TTL);
4. the result is published and its confirm awaited.
"""

import time
from enum import Enum
from typing import Any, Awaitable, Callable, Protocol

from . import protocol
from .logs import Logger
from .team import TeamOutcome, TeamRunError


class Store(Protocol):
    async def get_result(self, task_id: str) -> dict[str, Any] | None: ...

    async def put_result(self, task_id: str, result: dict[str, Any]) -> None: ...


class Publisher(Protocol):
    async def publish_result(self, result: dict[str, Any]) -> None:
        """Returns once the broker confirmed the result; raises otherwise."""


#: Runs a task text within a timeout (the team, or a stand-in in tests).
RunTeam = Callable[[str, float], Awaitable[TeamOutcome]]


class Outcome(Enum):
    #: The team ran and its result was published.
    ANSWERED = "answered"
    #: A stored result was published again (a redelivered task).
    REPLAYED = "replayed"
    #: The body was not a task; a `failed` result said so.
    INVALID = "invalid"


class Runner:
    def __init__(
        self,
        *,
        agent_id: str,
        run_team: RunTeam | None,
        store: Store,
        publisher: Publisher,
        log: Logger,
        task_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_id = agent_id
        #: None: the agent has no team (no AUTOGEN_CONFIG); tasks fail saying so.
        self._run_team = run_team
        self._store = store
        self._publisher = publisher
        self._log = log
        self._task_timeout_s = task_timeout_s
        self._clock = clock

    async def handle(self, body: bytes, redelivered: bool = False) -> Outcome:
        started = self._clock()
        try:
            task = protocol.parse_task(body)
        except protocol.InvalidTask as e:
            self._log.error("invalid task", error=str(e), task_id=e.task_id)
            result = self._result(e.task_id, TeamOutcome(), started, str(e))
            await self._publisher.publish_result(result)
            return Outcome.INVALID

        stored = await self._stored(task.task_id)
        if stored is not None:
            self._log.info(
                "task answered before: publishing its stored result again",
                task_id=task.task_id,
                redelivered=redelivered,
            )
            await self._publisher.publish_result(stored)
            return Outcome.REPLAYED

        self._log.info("task started", task_id=task.task_id, redelivered=redelivered)
        error = None
        if self._run_team is None:
            outcome = TeamOutcome()
            error = "this agent has no team: AUTOGEN_CONFIG is empty"
        else:
            try:
                outcome = await self._run_team(task.task, self._task_timeout_s)
            except TeamRunError as e:
                outcome, error = e.outcome, str(e)
                self._log.error("the team raised", task_id=task.task_id, detail=e.detail)
        result = self._result(task.task_id, outcome, started, error)
        self._log.info(
            "task finished",
            task_id=task.task_id,
            status=result["status"],
            messages=len(outcome.messages),
            stop_reason=outcome.stop_reason,
            error=error,
            duration_ms=int((self._clock() - started) * 1000),
        )
        try:
            await self._store.put_result(task.task_id, result)
        except Exception as e:
            # Publishing matters more; a redelivery would run the task again.
            self._log.warning("result not stored", task_id=task.task_id, error=repr(e))
        await self._publisher.publish_result(result)
        return Outcome.ANSWERED

    async def _stored(self, task_id: str) -> dict[str, Any] | None:
        try:
            return await self._store.get_result(task_id)
        except Exception as e:
            self._log.warning("stored result not readable", task_id=task_id, error=repr(e))
            return None

    def _result(
        self, task_id: str | None, outcome: TeamOutcome, started: float, error: str | None
    ) -> dict[str, Any]:
        return protocol.result(
            task_id=task_id,
            agent_id=self.agent_id,
            status=protocol.FAILED if error else protocol.COMPLETED,
            messages=outcome.messages,
            stop_reason=outcome.stop_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            started_at=started,
            finished_at=self._clock(),
            error=error,
        )
