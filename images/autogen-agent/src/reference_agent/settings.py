"""The agent's environment, read once and validated.

Variables (contract sections 4, 7 and 8):
- `AGENT_ID` (required): the agent's id; in every queue, key and routing key.
- `RABBITMQ_URL` (required): amqp:// or amqps:// URL with the agent's own user.
- `REDIS_URL` (required): redis:// or rediss:// URL with the agent's own ACL user.
- `REDIS_PREFIX`: in front of every Redis key (default empty).
- `RABBITMQ_EXCHANGE`: the exchange tasks and results go through (default `autogen`).
- `HEARTBEAT_INTERVAL_S`: seconds between heartbeats (default 10).
- `AUTOGEN_CONFIG`: the team, AutoGen's declarative component JSON
  (`team.dump_component()`). Empty or `{}`: no team; tasks are answered `failed`.
- `CONFIG`: a JSON object; the keys this agent reads:
  - `stop_grace_s` (number, default 8): after SIGTERM, how long the task in hand may
    still run before it is given back unacknowledged. Keep it below the stop's
    `timeout_s` (default 10).
  - `task_timeout_s` (number, default 600): a task still running after this long is
    answered `failed`.
  - `result_ttl_s` (int, default 86400): how long a published result is kept in Redis
    (`agent:<id>:data:result:<task_id>`) to answer a redelivered task.
  - `exchange` (string): overrides `RABBITMQ_EXCHANGE`.
  Other keys are the agent's own and are ignored here.
"""

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

AGENT_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


class SettingsError(Exception):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    agent_id: str
    rabbitmq_url: str
    redis_url: str
    redis_prefix: str
    exchange: str
    heartbeat_interval_s: float
    #: The team's component JSON, or None when the agent has no team.
    autogen_config: dict[str, Any] | None
    #: CONFIG as given (the agent's own settings).
    config: dict[str, Any]
    stop_grace_s: float
    task_timeout_s: float
    result_ttl_s: int


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SettingsError(f"{name} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object, not {type(value).__name__}")
    return value


def _number(config: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise SettingsError(f"CONFIG.{key} must be a number >= {minimum}, not {value!r}")
    return float(value)


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    url = env.get(name, "").strip()
    if not url:
        raise SettingsError(f"{name} is not set")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in schemes:
        raise SettingsError(f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL")
    return url


def redacted_url(url: str) -> str:
    """The URL without user and password, for logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Reads the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    agent_id = env.get("AGENT_ID", "")
    if not AGENT_ID_RE.match(agent_id):
        raise SettingsError(f"AGENT_ID {agent_id!r} is missing or not a valid agent id")
    config = _json_object(env, "CONFIG") or {}
    autogen_config = _json_object(env, "AUTOGEN_CONFIG") or None
    interval_raw = env.get("HEARTBEAT_INTERVAL_S", "").strip() or "10"
    try:
        interval = float(interval_raw)
    except ValueError:
        interval = 0
    if interval <= 0:
        raise SettingsError(f"HEARTBEAT_INTERVAL_S must be a positive number, not {interval_raw!r}")
    exchange = config.get("exchange", env.get("RABBITMQ_EXCHANGE", "").strip() or "autogen")
    if not isinstance(exchange, str) or not exchange:
        raise SettingsError(f"CONFIG.exchange must be a non-empty string, not {exchange!r}")
    return Settings(
        agent_id=agent_id,
        rabbitmq_url=_url(env, "RABBITMQ_URL", ("amqp", "amqps")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss")),
        redis_prefix=env.get("REDIS_PREFIX", ""),
        exchange=exchange,
        heartbeat_interval_s=interval,
        autogen_config=autogen_config,
        config=config,
        stop_grace_s=_number(config, "stop_grace_s", 8, 0),
        task_timeout_s=_number(config, "task_timeout_s", 600, 0.001),
        result_ttl_s=int(_number(config, "result_ttl_s", 86400, 1)),
    )
