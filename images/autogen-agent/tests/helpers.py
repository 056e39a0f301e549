"""Shared by the tests: the example team and fakes of the runner's boundaries."""

import io
import json
import os
from typing import Any

from reference_agent.logs import Logger

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE_TEAM = os.path.join(HERE, "..", "examples", "analysis-risk-team.json")


def example_team() -> dict[str, Any]:
    with open(EXAMPLE_TEAM) as f:
        return json.load(f)


def quiet_logger() -> tuple[Logger, io.StringIO]:
    out = io.StringIO()
    return Logger("a1", out), out


def log_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


class FakeStore:
    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.fail_get = False
        self.fail_put = False

    async def get_result(self, task_id: str) -> dict[str, Any] | None:
        if self.fail_get:
            raise ConnectionError("redis down")
        return self.results.get(task_id)

    async def put_result(self, task_id: str, result: dict[str, Any]) -> None:
        if self.fail_put:
            raise ConnectionError("redis down")
        self.results[task_id] = result


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.fail = False

    async def publish_result(self, result: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the broker did not confirm the result")
        self.published.append(result)
