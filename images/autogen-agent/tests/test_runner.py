import asyncio
import json
import unittest

from reference_agent.runner import Outcome, Runner
from reference_agent.team import TeamOutcome, TeamRunError

from .helpers import FakePublisher, FakeStore, log_lines, quiet_logger

TASK = json.dumps({"task_id": "t1", "task": "Assess ACME"}).encode()


class Team:
    """A stand-in team: answers with the task text, or raises."""

    def __init__(self, fail: bool = False) -> None:
        self.runs = 0
        self.fail = fail

    async def run(self, task: str, timeout_s: float) -> TeamOutcome:
        self.runs += 1
        said = [{"source": "user", "type": "TextMessage", "content": task}]
        if self.fail:
            raise TeamRunError("ValueError: boom", TeamOutcome(messages=said), "long detail")
        return TeamOutcome(
            messages=said + [{"source": "a", "type": "TextMessage", "content": "done"}],
            stop_reason="stopped",
            prompt_tokens=3,
            completion_tokens=4,
        )


def make(team: Team | None = None):
    store, publisher = FakeStore(), FakePublisher()
    log, out = quiet_logger()
    ticks = iter(range(100, 10_000))
    runner = Runner(
        agent_id="a1",
        run_team=team.run if team else None,
        store=store,
        publisher=publisher,
        log=log,
        task_timeout_s=30,
        clock=lambda: float(next(ticks)),
    )
    return runner, store, publisher, out


class RunnerTest(unittest.TestCase):
    def test_completed_result_is_stored_then_published(self) -> None:
        team = Team()
        runner, store, publisher, _ = make(team)
        self.assertIs(asyncio.run(runner.handle(TASK)), Outcome.ANSWERED)
        [result] = publisher.published
        self.assertEqual(store.results["t1"], result)
        self.assertEqual(result["status"], "completed")
        self.assertEqual(result["task_id"], "t1")
        self.assertEqual(result["agent_id"], "a1")
        self.assertEqual(result["messages"][-1]["content"], "done")
        self.assertEqual(result["stop_reason"], "stopped")
        self.assertEqual(result["usage"], {"prompt_tokens": 3, "completion_tokens": 4})
        self.assertLess(result["started_at"], result["finished_at"])
        self.assertNotIn("error", result)

    def test_redelivered_task_is_answered_from_the_store(self) -> None:
        team = Team()
        runner, _, publisher, _ = make(team)
        asyncio.run(runner.handle(TASK))
        self.assertIs(asyncio.run(runner.handle(TASK, redelivered=True)), Outcome.REPLAYED)
        self.assertEqual(team.runs, 1)
        self.assertEqual(publisher.published[0], publisher.published[1])

    def test_raising_team_is_answered_failed(self) -> None:
        runner, _, publisher, out = make(Team(fail=True))
        asyncio.run(runner.handle(TASK))
        [result] = publisher.published
        self.assertEqual(result["status"], "failed")
        self.assertEqual(result["error"], "ValueError: boom")
        self.assertEqual(len(result["messages"]), 1)
        self.assertIn("long detail", [line.get("detail") for line in log_lines(out)])

    def test_no_team_answers_failed(self) -> None:
        runner, _, publisher, _ = make(None)
        asyncio.run(runner.handle(TASK))
        self.assertIn("AUTOGEN_CONFIG", publisher.published[0]["error"])

    def test_invalid_task_is_answered_failed(self) -> None:
        team = Team()
        runner, _, publisher, _ = make(team)
        outcome = asyncio.run(runner.handle(b'{"task_id": "t9"}'))
        self.assertIs(outcome, Outcome.INVALID)
        self.assertEqual(publisher.published[0]["task_id"], "t9")
        self.assertEqual(publisher.published[0]["status"], "failed")
        self.assertEqual(team.runs, 0)

    def test_unconfirmed_publish_raises_so_the_task_is_given_back(self) -> None:
        team = Team()
        runner, store, publisher, _ = make(team)
        publisher.fail = True
        with self.assertRaises(RuntimeError):
            asyncio.run(runner.handle(TASK))
        # The redelivery publishes the stored result; the team does not run again.
        publisher.fail = False
        self.assertIs(asyncio.run(runner.handle(TASK, redelivered=True)), Outcome.REPLAYED)
        self.assertEqual(team.runs, 1)
        self.assertEqual(publisher.published[0], store.results["t1"])

    def test_redis_trouble_does_not_stop_the_answer(self) -> None:
        team = Team()
        runner, store, publisher, out = make(team)
        store.fail_get = store.fail_put = True
        self.assertIs(asyncio.run(runner.handle(TASK)), Outcome.ANSWERED)
        self.assertEqual(len(publisher.published), 1)
        warnings = [line["msg"] for line in log_lines(out) if line["level"] == "warning"]
        self.assertEqual(warnings, ["stored result not readable", "result not stored"])


if __name__ == "__main__":
    unittest.main()
