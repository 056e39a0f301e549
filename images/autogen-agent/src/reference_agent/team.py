"""The team: loaded from AUTOGEN_CONFIG, run once per task.

Each task runs on a team loaded afresh from the component JSON, so no state (chat
history, a replay client's position) carries from one task to the next and every
task sees the team as configured. The config is loaded once at start to fail early.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from autogen_agentchat.base import TaskResult, Team


class TeamConfigError(Exception):
    """AUTOGEN_CONFIG does not describe a team AutoGen can load."""


class TeamRunError(Exception):
    """The team raised; `messages` and the usage are what it produced until then."""

    def __init__(self, message: str, outcome: "TeamOutcome", detail: str = "") -> None:
        super().__init__(message)
        self.outcome = outcome
        #: The whole text (AutoGen puts the agent's traceback in it), for the log.
        self.detail = detail or message


#: The longest `error` a result carries; the whole text goes to the log.
ERROR_MAX_CHARS = 500


def error_summary(e: BaseException) -> str:
    """`Type: first line` of an exception, at most ERROR_MAX_CHARS long."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


@dataclass
class TeamOutcome:
    messages: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def load_team(config: dict[str, Any]) -> Team:
    """The team `config` describes, or `TeamConfigError` saying why not."""
    try:
        team = Team.load_component(config)
    except Exception as e:  # AutoGen raises many kinds (ValueError, TypeError, pydantic's)
        raise TeamConfigError(
            f"AUTOGEN_CONFIG is not a team AutoGen can load "
            f"(provider {config.get('provider')!r}): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(team, Team):
        raise TeamConfigError(
            f"AUTOGEN_CONFIG describes a {type(team).__name__}, not a team "
            f"(provider {config.get('provider')!r})"
        )
    return team


def message_dict(message: Any) -> dict[str, Any]:
    """`{"source", "type", "content"}` of an AutoGen message or event.

    Text content stays a string; other content (tool calls, their results) is its
    JSON form.
    """
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        try:
            content = message.model_dump(mode="json").get("content")
        except Exception:
            content = message.to_text() if hasattr(message, "to_text") else str(content)
    return {
        "source": getattr(message, "source", None),
        "type": getattr(message, "type", type(message).__name__),
        "content": content,
    }


def _count(outcome: TeamOutcome, message: Any) -> None:
    outcome.messages.append(message_dict(message))
    usage = getattr(message, "models_usage", None)
    if usage is not None:
        outcome.prompt_tokens += usage.prompt_tokens
        outcome.completion_tokens += usage.completion_tokens


class TeamRunner:
    """Runs tasks on the team of one AUTOGEN_CONFIG."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        load_team(config)  # fails here, at start, when the config is bad
        # For logs: which team this is (never the whole config: it may hold API keys).
        self.description = f"{config.get('provider')} ({config.get('label', 'no label')})"

    async def run(self, task: str, timeout_s: float) -> TeamOutcome:
        """Runs `task`; `TeamRunError` when the team raises or runs past `timeout_s`."""
        team = load_team(self._config)
        outcome = TeamOutcome()

        async def consume() -> None:
            async for item in team.run_stream(task=task):
                if isinstance(item, TaskResult):
                    outcome.stop_reason = item.stop_reason
                else:
                    _count(outcome, item)

        try:
            await asyncio.wait_for(consume(), timeout_s)
        except asyncio.TimeoutError:
            raise TeamRunError(f"the task ran past task_timeout_s ({timeout_s:g} s)", outcome) from None
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise TeamRunError(error_summary(e), outcome, f"{type(e).__name__}: {e}") from e
        return outcome

