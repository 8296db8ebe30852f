"""Logging, configured once by the entrypoint: quiet by default, text or JSON lines."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


#: Loggers whose warnings repeat while a broker does not answer (the libraries at
#: each reconnect and metadata attempt, the gateway at each request Kafka does not
#: acknowledge): each of their messages is let through once a minute.
_LIBRARIES = ("aiokafka", "kafka", "faust", "mode", "thumbline.producers.gateway")


class RepeatFilter(logging.Filter):
    """Lets a library's message (by logger and template) through at most once every
    ``every`` seconds, saying how many like it were held back since.

    While Kafka does not answer, aiokafka logs every reconnect attempt at ERROR
    and the gateway every request it answers 503; thumbline says once what it
    waits for (:mod:`thumbline.outages`).
    """

    def __init__(self, every: float = 60.0, *, prefixes: tuple[str, ...] = _LIBRARIES) -> None:
        super().__init__()
        self.every = every
        self.prefixes = prefixes
        self._seen: dict[tuple[str, str], list[float]] = {}  # -> [last shown, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes) or record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, str(record.msg)[:200])
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.every:
            seen[1] += 1
            return False
        if len(self._seen) > 1000:  # templates are few; a library formatting its own text is not
            self._seen.clear()
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} [{int(seen[1])} more like this since the last one shown]"
        self._seen[key] = [record.created, 0]
        return True


def configure(level: str = "WARNING", fmt: str = "text") -> None:
    """Send logs to stderr. Chatty libraries stay at WARNING unless DEBUG is asked for,
    and repeat a message at most once a minute (:class:`RepeatFilter`)."""
    handler = logging.StreamHandler(sys.stderr)
    if level != "DEBUG":
        handler.addFilter(RepeatFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for noisy in ("aiokafka", "kafka", "faust", "mode", "clickhouse_connect", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
