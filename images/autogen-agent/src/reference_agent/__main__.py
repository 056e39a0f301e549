"""`python -m reference_agent`: exit 0 after SIGTERM, 2 on bad settings, 1 on a crash."""

import asyncio
import os
import sys

from .logs import Logger, capture_library_logs
from .settings import SettingsError, load
from .team import TeamConfigError

#: Exit status for a configuration the agent cannot run with (the manager reports
#: the crash with the last log lines, which name the problem).
EXIT_BAD_CONFIG = 2


def main() -> int:
    log = Logger(os.environ.get("AGENT_ID", "unknown"))
    capture_library_logs(log)
    try:
        settings = load()
        from .service import Agent  # after the settings: imports AutoGen (slow)

        agent = Agent(settings, log)
    except (SettingsError, TeamConfigError) as e:
        log.error(f"cannot start: {e}", fatal=True)
        return EXIT_BAD_CONFIG
    try:
        return asyncio.run(agent.run())
    except Exception as e:
        log.error(f"crashed: {type(e).__name__}: {e}", fatal=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
