"""Contract section 8 in one place: names, the heartbeat, tasks and results.

Plain functions on plain data; nothing here does I/O.
"""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

#: Heartbeat statuses.
OK = "ok"
UNHEALTHY = "unhealthy"
#: Result statuses.
COMPLETED = "completed"
FAILED = "failed"
#: The heartbeat key lives this many intervals (`SET ... PX`).
HEARTBEAT_TTL_INTERVALS = 3


def inbox_queue(agent_id: str) -> str:
    return f"agent:{agent_id}:inbox"


def task_key(agent_id: str) -> str:
    return f"agent:{agent_id}:task"


def result_key(agent_id: str) -> str:
    return f"agent:{agent_id}:result"


def heartbeat_redis_key(prefix: str, agent_id: str) -> str:
    return f"{prefix}agent:{agent_id}:data:heartbeat"


def stored_result_redis_key(prefix: str, agent_id: str, task_id: str) -> str:
    """Where a published result is kept, to answer the task again if redelivered."""
    return f"{prefix}agent:{agent_id}:data:result:{task_id}"


def heartbeat(status: str, detail: str, now_ms: int | None = None) -> str:
    """The heartbeat value: `{"ts": <unix ms>, "status", "detail"}`."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"ts": ts, "status": status, "detail": detail})


def heartbeat_ttl_ms(interval_s: float) -> int:
    return int(interval_s * 1000 * HEARTBEAT_TTL_INTERVALS)


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(ts, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class InvalidTask(Exception):
    """The body is not a task; `task_id` is set when the body had one."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


@dataclass(frozen=True)
class Task:
    task_id: str
    task: str
    #: The whole body (more fields are allowed).
    body: dict[str, Any]


def parse_task(data: bytes) -> Task:
    """A task from a delivery's body, or `InvalidTask` saying what is wrong."""
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidTask(f"the task is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidTask("the task is not a JSON object")
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTask("the task has no task_id string")
    task = body.get("task")
    if not isinstance(task, str):
        raise InvalidTask("the task has no task text (field task)", task_id)
    return Task(task_id=task_id, task=task, body=body)


def task_id_of(data: bytes) -> str | None:
    """The task id of a delivery's body, when it has one (for logs and the heartbeat)."""
    try:
        return parse_task(data).task_id
    except InvalidTask as e:
        return e.task_id


def result(
    *,
    task_id: str | None,
    agent_id: str,
    status: str,
    messages: list[dict[str, Any]],
    stop_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    started_at: float,
    finished_at: float,
    error: str | None = None,
) -> dict[str, Any]:
    """The result body; `error` only when failed."""
    body: dict[str, Any] = {
        "task_id": task_id,
        "agent_id": agent_id,
        "status": status,
        "messages": messages,
        "stop_reason": stop_reason,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "started_at": rfc3339(started_at),
        "finished_at": rfc3339(finished_at),
    }
    if status == FAILED:
        body["error"] = error or "failed"
    return body
