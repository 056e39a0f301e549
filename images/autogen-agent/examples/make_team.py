"""Writes the example AUTOGEN_CONFIGs, for tests and offline runs.

analysis-risk-team.json (the default):
A two-agent team (RoundRobinGroupChat: analysis, then risk) whose model answers are
replayed (`ReplayChatCompletionClient`), so it runs without a network model. The
analysis agent first asks for its tool `get_price`, then answers; the risk agent
answers once. Regenerate after changing it:

    python examples/make_team.py > examples/analysis-risk-team.json

Any team made in Python becomes an AUTOGEN_CONFIG the same way:
`team.dump_component().model_dump_json()`.
"""

import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient


def get_price(symbol: str) -> str:
    """The last price of `symbol` (a fixed table: this is an example)."""
    prices = {"ACME": "101.50", "INIT": "42.00"}
    return prices.get(symbol.upper(), "unknown")


#: What the replayed "model" can do: tool calls, for the analysis agent.
MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def answer(content: str | list[FunctionCall], prompt_tokens: int, completion_tokens: int) -> CreateResult:
    """One replayed model answer: text, or tool calls."""
    return CreateResult(
        finish_reason="stop" if isinstance(content, str) else "function_calls",
        content=content,
        usage=RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        cached=False,
    )


def team() -> RoundRobinGroupChat:
    price_call = FunctionCall(id="call-1", name="get_price", arguments='{"symbol": "ACME"}')
    analysis_model = ReplayChatCompletionClient(
        [answer([price_call], 10, 5), answer("ACME trades at 101.50: fairly valued.", 20, 8)],
        model_info=MODEL_INFO,
    )
    risk_model = ReplayChatCompletionClient(
        [answer("Risk: moderate. Position limit 2% of the portfolio.", 30, 12)],
        model_info=MODEL_INFO,
    )
    analysis = AssistantAgent(
        "analysis",
        model_client=analysis_model,
        tools=[FunctionTool(get_price, description="The last price of a symbol.")],
        reflect_on_tool_use=True,
        system_message="You analyse instruments.",
    )
    risk = AssistantAgent("risk", model_client=risk_model, system_message="You assess risk.")
    # Three chat messages: the task, analysis' answer (after its tool call), risk's answer.
    return RoundRobinGroupChat([analysis, risk], termination_condition=MaxMessageTermination(3))


async def wait_seconds(seconds: float) -> str:
    """Waits `seconds`, then says so."""
    import asyncio

    await asyncio.sleep(seconds)
    return f"waited {seconds} s"


def slow_team() -> RoundRobinGroupChat:
    wait_call = FunctionCall(id="call-1", name="wait_seconds", arguments='{"seconds": 8}')
    model = ReplayChatCompletionClient(
        [answer([wait_call], 10, 5), answer("Done waiting.", 20, 8)], model_info=MODEL_INFO
    )
    slow = AssistantAgent(
        "slow",
        model_client=model,
        tools=[FunctionTool(wait_seconds, description="Waits some seconds.")],
        reflect_on_tool_use=True,
    )
    return RoundRobinGroupChat([slow], termination_condition=MaxMessageTermination(2))


if __name__ == "__main__":
    made = slow_team() if sys.argv[1:] == ["slow"] else team()
    sys.stdout.write(made.dump_component().model_dump_json(indent=2) + "\n")
