"""Structured logs: one JSON object per line on stdout.

The manager shows a container's stdout in `agents logs` and puts its last lines in
crash events, so every line is complete and self-describing. Secrets never go in:
URLs are logged by host only (`settings.redacted_url`).
"""

import json
import logging
import sys
import time
from typing import Any, TextIO


class Logger:
    """Writes `{"ts", "level", "msg", "agent_id", ...fields}` lines."""

    def __init__(self, agent_id: str, out: TextIO | None = None) -> None:
        self.agent_id = agent_id
        self._out = out

    def _write(self, level: str, msg: str, fields: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "level": level,
            "msg": msg,
            "agent_id": self.agent_id,
        }
        line.update(fields)
        out = self._out or sys.stdout
        out.write(json.dumps(line, default=str) + "\n")
        out.flush()

    def info(self, msg: str, **fields: Any) -> None:
        self._write("info", msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._write("warning", msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._write("error", msg, fields)


class _Forward(logging.Handler):
    """Python `logging` records (AutoGen's, the libraries') as our lines."""

    def __init__(self, log: Logger) -> None:
        super().__init__(level=logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            self._log._write(level, record.getMessage(), {"logger": record.name})
        except Exception:
            self.handleError(record)


def capture_library_logs(log: Logger) -> None:
    """Sends warnings and errors of Python's `logging` (and `warnings`) through `log`."""
    root = logging.getLogger()
    root.handlers[:] = [_Forward(log)]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
