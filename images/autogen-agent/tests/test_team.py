import asyncio
import unittest

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.replay import ReplayChatCompletionClient

from reference_agent.team import TeamConfigError, TeamRunError, TeamRunner, load_team

from .helpers import example_team


def one_agent_team(answers: list[str]) -> dict:
    agent = AssistantAgent("solo", model_client=ReplayChatCompletionClient(answers))
    team = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(3))
    return team.dump_component().model_dump(mode="json")


class TeamTest(unittest.TestCase):
    def test_example_team_answers_with_a_tool_call(self) -> None:
        runner = TeamRunner(example_team())
        outcome = asyncio.run(runner.run("Assess ACME", 30))
        kinds = [(m["source"], m["type"]) for m in outcome.messages]
        self.assertEqual(
            kinds,
            [
                ("user", "TextMessage"),
                ("analysis", "ToolCallRequestEvent"),
                ("analysis", "ToolCallExecutionEvent"),
                ("analysis", "TextMessage"),
                ("risk", "TextMessage"),
            ],
        )
        self.assertEqual(outcome.messages[2]["content"][0]["content"], "101.50")
        self.assertIn("Risk: moderate", outcome.messages[-1]["content"])
        self.assertIn("Maximum number of messages", outcome.stop_reason or "")
        self.assertEqual((outcome.prompt_tokens, outcome.completion_tokens), (60, 25))

    def test_each_task_starts_from_the_config(self) -> None:
        runner = TeamRunner(example_team())
        first = asyncio.run(runner.run("one", 30))
        second = asyncio.run(runner.run("two", 30))
        self.assertEqual(first.messages[1:], second.messages[1:])

    def test_a_raising_team_keeps_what_it_said(self) -> None:
        runner = TeamRunner(one_agent_team(["only answer"]))
        with self.assertRaises(TeamRunError) as ctx:
            asyncio.run(runner.run("go", 30))
        self.assertIn("No more mock responses available", str(ctx.exception))
        self.assertNotIn("\n", str(ctx.exception))
        self.assertIn("Traceback", ctx.exception.detail)
        self.assertEqual(ctx.exception.outcome.messages[1]["content"], "only answer")

    def test_timeout(self) -> None:
        runner = TeamRunner(example_team())
        with self.assertRaises(TeamRunError) as ctx:
            asyncio.run(runner.run("go", 0.000001))
        self.assertIn("task_timeout_s", str(ctx.exception))

    def test_bad_configs_are_named(self) -> None:
        agent = AssistantAgent("solo", model_client=ReplayChatCompletionClient(["x"]))
        cases = {
            "no such provider": {"provider": "nowhere.Team", "config": {}},
            "not a component": {"hello": "world"},
            "an agent": agent.dump_component().model_dump(mode="json"),
        }
        for name, config in cases.items():
            with self.subTest(name=name):
                with self.assertRaises(TeamConfigError) as ctx:
                    load_team(config)
                self.assertIn("AUTOGEN_CONFIG", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
