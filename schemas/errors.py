"""The root of thumbline's errors.

Every error thumbline raises derives from :class:`ThumblineError` and says
whether trying again can help (``retriable``), so callers check one flag
instead of keeping lists of exception types. It lives here because ``schemas``
imports nothing else from the project and every other package imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ThumblineError(Exception):
    """Base class of every thumbline error."""

    retriable: ClassVar[bool] = False


class InvalidEvent(ThumblineError, ValueError):
    """An event does not match its contract; sending it again cannot help.

    ``problems`` lists one entry per offending field: ``(field, value, message)``,
    and ``str()`` renders them one per line, e.g.
    ``label: 'meh' is not allowed: use good, bad, neutral or a custom label``.
    """

    retriable = False

    def __init__(self, model: str, problems: list[tuple[str, Any, str]]) -> None:
        self.model = model
        self.problems = problems
        lines = [f"invalid {model}:"]
        for field, value, message in problems:
            shown = _short_repr(value)
            lines.append(f"  {field}: {message}" + (f" (got {shown})" if shown else ""))
        super().__init__("\n".join(lines))

    @property
    def reason(self) -> str:
        """A one-line reason, used in dead letters and HTTP errors."""
        return "; ".join(f"{f}: {m}" for f, _, m in self.problems)


class WireError(ThumblineError, ValueError):
    """A Kafka message cannot be decoded into events (bad JSON, wrong shape, too big).

    ``reason`` is a short, bounded code (``bad_json``, ``not_an_object``,
    ``oversize``, ``empty_batch``, ``batch_too_large``) fit for a metric label.
    """

    retriable = False

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def _short_repr(value: Any, limit: int = 80) -> str:
    if value is _MISSING:
        return ""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
