"""Errors of the runtime and the CLI; all derive from :class:`thumbline.schemas.ThumblineError`."""

from __future__ import annotations

from thumbline.schemas.errors import InvalidEvent, ThumblineError, WireError

__all__ = [
    "BrokerFailed",
    "ConfigError",
    "InvalidEvent",
    "SqlRefused",
    "StoreError",
    "StreamFailed",
    "StoreLocked",
    "StoreMissing",
    "StoreStarting",
    "StoreUnavailable",
    "ThumblineError",
    "TopicsMismatch",
    "WireError",
]


class ConfigError(ThumblineError):
    """A setting is missing or wrong; the message names the variable to set."""


class BrokerFailed(ThumblineError):
    """The embedded broker did not start or died."""

    retriable = True


class TopicsMismatch(ThumblineError):
    """A topic exists with another partition count than the registry asks for."""


class StoreError(ThumblineError):
    """ClickHouse refused a statement; carries the server's code when it gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class StoreUnavailable(StoreError):
    """The store did not answer, or refused for a reason waiting can cure; try again later."""

    retriable = True


class StoreLocked(StoreError):
    """The chDB path is owned by another process, and that process serves no SQL."""

    retriable = True


class StoreStarting(StoreUnavailable):
    """``thumbline up`` holds the chDB path's data dir and does not serve SQL yet."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        super().__init__(f"thumbline up (pid {pid}) is starting, try again in a moment")


class StoreMissing(StoreError):
    """No store where the settings point (nothing is created to read from)."""


class StreamFailed(ThumblineError):
    """The stream app crashed; starting again replays what it held."""

    retriable = True


class SqlRefused(StoreError):
    """The SQL sandbox refused a statement, or stopped it at one of its limits.

    ``reason`` names the rule in a word (``table_function``, ``table``,
    ``function``, ``settings``, ``output``, ``statement``, ``construct``,
    ``syntax``, ``characters``, ``parameters``, ``write``, ``limit``); the
    message says what was refused and what the sandbox runs. Sending the same
    SQL again cannot help.
    """

    retriable = False

    def __init__(self, message: str, *, reason: str, code: int | None = None) -> None:
        self.reason = reason
        super().__init__(message, code=code)
