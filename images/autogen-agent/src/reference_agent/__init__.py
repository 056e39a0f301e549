"""The reference agent of agent-manager: runs an AutoGen team on tasks.

Layout:
- `settings`: the environment the manager gives the container (contract section 4,
  7, 8), read once and validated; a bad value is a `SettingsError` naming it.
- `logs`: structured log lines (one JSON object per line) on stdout.
- `protocol`: the contract's names and message shapes (heartbeat, task, result) as
  plain functions, no I/O.
- `team`: loads the team from AUTOGEN_CONFIG and runs one task with it.
- `runner`: what happens to one delivered task (stored result, run, store, publish,
  acknowledge), against small store/publisher interfaces the tests fake.
- `service`: the real connections (RabbitMQ through aio-pika, Redis through
  redis.asyncio), the heartbeat loop and signal handling.
- `__main__`: `python -m reference_agent`.
"""
