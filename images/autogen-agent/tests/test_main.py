"""The program as a process: exit statuses, log lines, signals (no services needed)."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Nothing listens on port 1: the broker and Redis are unreachable.
ENV = {
    "AGENT_ID": "a1",
    "RABBITMQ_URL": "amqp://agent-a1:secret@127.0.0.1:1/%2f",
    "REDIS_URL": "redis://agent-a1:secret@127.0.0.1:1/0",
    "HEARTBEAT_INTERVAL_S": "1",
    "PYTHONPATH": SRC,
}


def start(**more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reference_agent"],
        env={**ENV, **more},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


class MainTest(unittest.TestCase):
    def test_invalid_autogen_config_exits_2_naming_it(self) -> None:
        proc = start(AUTOGEN_CONFIG='{"provider": "nowhere.Team", "config": {}}')
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 2, out)
        last = lines(out)[-1]
        self.assertEqual(last["level"], "error")
        self.assertIn("AUTOGEN_CONFIG is not a team", last["msg"])
        self.assertIn("nowhere.Team", last["msg"])

    def test_unparsable_autogen_config_exits_2(self) -> None:
        proc = start(AUTOGEN_CONFIG="{oops")
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 2, out)
        self.assertIn("AUTOGEN_CONFIG is not valid JSON", lines(out)[-1]["msg"])

    def test_sigterm_while_the_broker_is_away_exits_0_without_secrets(self) -> None:
        proc = start()
        deadline = time.monotonic() + 60
        seen = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "broker not reachable" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        out = "".join(seen) + rest
        self.assertEqual(proc.returncode, 0, out)
        msgs = [line["msg"] for line in lines(out)]
        self.assertIn("received SIGTERM: stopping", msgs)
        self.assertEqual(msgs[-1], "exiting")
        self.assertNotIn("secret", out)


if __name__ == "__main__":
    unittest.main()
