"""Forgetting a user: what a privacy request deletes, table by table.

A user's rows are found by the ``user_id`` their application sent: the feedback
they gave (pending and voted rows included: they are feedback rows) and the
traces of their conversations, with the question and the answer. Beyond those:
the alerts keep up to a few comments of the feedback behind them as samples,
so the user's comments are taken out of them; dead letters keep messages as
they came, so those with a ``"user_id"`` field of theirs go too (the whole
message: a batch of several users' events included). Rate windows
hold counts only and are kept.

Rows go by ClickHouse's lightweight ``DELETE`` (hidden from every read at once,
removed from disk at the parts' next merges) and the alerts' comments by a
mutation that the call waits for. What this cannot reach: the Kafka topics
(their retention does), events the stream still holds in memory (a feedback
waiting for its trace, up to ``THUMBLINE_JOIN_GRACE_SECONDS``), and a message of
the user that a producer sends, or Kafka re-delivers, afterwards: it is stored
again. Stop the user's events at their source first, and forget again after
the grace period to catch what was in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from thumbline.cluster import LOCAL, ClusterDDL
from thumbline.errors import ConfigError
from thumbline.queries import literal
from thumbline.schemas._base import MAX_ID_LEN
from thumbline.store import store_error

logger = logging.getLogger(__name__)

#: Characters of comments per query that looks for them in the alerts: a query is
#: refused past ClickHouse's max_query_size (256 KiB by default), and a comment may
#: be 10,000 characters (written as up to 4 bytes each).
_COMMENT_CHARS_PER_QUERY = 40_000


@dataclass(frozen=True, slots=True)
class Found:
    """Rows of one table that hold the user's data (``what`` says which)."""

    table: str
    rows: int
    what: str


def _check(user_id: str, project: str | None) -> None:
    if not user_id or not user_id.strip() or len(user_id) > MAX_ID_LEN:
        raise ConfigError(f"--user takes the user_id as sent: 1 to {MAX_ID_LEN} characters")
    if project is not None and (not project.strip() or len(project) > 128):
        raise ConfigError("--project takes a project name: 1 to 128 characters")


def _field_pattern(name: str, value: str) -> str:
    """An RE2 pattern of ``"name": "value"`` in JSON text, ``value`` as orjson writes it."""
    return f'"{_re2_literal(name)}"\\s*:\\s*{_re2_literal(orjson.dumps(value).decode())}'


def _re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern that matches it and nothing else."""
    out = []
    for char in text:
        if char.isascii() and not char.isalnum():
            out.append(f"\\x{{{ord(char):02x}}}")  # punctuation, spaces and controls alike
        else:
            out.append(char)
    return "".join(out)


class Forget:
    """The deletion of one user's data, counted first (for a confirmation), then done.

    Args:
        client: a writer client on the store (not the SQL sandbox: it deletes).
        database: thumbline's database.
        user_id: the user's id, exactly as their application sent it.
        project: only this project's rows; None: every project's.
        cluster: ``THUMBLINE_CLICKHOUSE_CLUSTER``: the deletions run on every shard.

    Raises:
        ConfigError: the user id or project is empty or too long.
    """

    def __init__(
        self, client: Client, *, database: str, user_id: str, project: str | None = None,
        cluster: str | None = None,
    ) -> None:  # fmt: skip
        _check(user_id, project)
        self._client, self._db, self._cluster = client, database, cluster
        self.user_id, self.project = user_id, project
        in_project = f" AND project = {literal(project)}" if project is not None else ""
        self._by_user = f"user_id = {literal(user_id)}{in_project}"
        # a dead letter is raw text, maybe not JSON: the id as the JSON string value of a
        # "user_id" field in it (and the project's of "project"), not anywhere: the user
        # chooses their id, and another user's comment or locale may read the same
        fields = [("user_id", user_id)] + ([("project", project)] if project is not None else [])
        self._dead = " AND ".join(
            f"match(raw, {literal(_field_pattern(name, value))})" for name, value in fields
        )

    def _scalar(self, sql: str) -> int:
        return int(self._client.query(sql).result_rows[0][0])

    def _target(self, table: str) -> str:
        """Where a mutation of ``table`` runs: its local tables on every host of a cluster."""
        if self._cluster is None:
            return f"{self._db}.{table}"
        return f"{self._db}.{table}{LOCAL} {ClusterDDL(self._cluster, self._db).on}"

    def _comments(self) -> Iterator[list[str]]:
        """The user's distinct comments, in chunks."""
        rows = self._client.query(
            f"SELECT DISTINCT comment FROM {self._db}.feedback "  # noqa: S608 (literals)
            f"WHERE {self._by_user} AND comment != ''"
        ).result_rows
        chunk: list[str] = []
        size = 0
        for comment in (str(r[0]) for r in rows):
            if chunk and size + len(comment) > _COMMENT_CHARS_PER_QUERY:
                yield chunk
                chunk, size = [], 0
            chunk.append(comment)
            size += len(comment)
        if chunk:
            yield chunk

    def _alerts_where(self, comments: list[str]) -> tuple[str, str]:
        """The alerts that quote any of ``comments``, and ``comments`` as an SQL array."""
        array = "[" + ", ".join(literal(c) for c in comments) + "]"
        in_project = f" AND project = {literal(self.project)}" if self.project else ""
        return f"hasAny(sample_comments, {array}){in_project}", array

    def count(self) -> list[Found]:
        """What :meth:`run` would delete, per table: feedback events and spans (however
        many versions of each are stored), dead letters, alerts.

        Raises:
            StoreError: the store failed.
        """
        db = self._db
        try:
            found = [
                Found("feedback", self._scalar(
                    f"SELECT uniqExact(project, event_id) FROM {db}.feedback "  # noqa: S608
                    f"WHERE {self._by_user}"
                ), "their feedback events"),
                Found("traces", self._scalar(
                    f"SELECT uniqExact(project, trace_id, span_id) FROM {db}.traces "  # noqa: S608
                    f"WHERE {self._by_user}"
                ), "spans of their traces, with questions and answers"),
                Found("dead_letters", self._scalar(
                    f"SELECT count() FROM {db}.dead_letters WHERE {self._dead}"  # noqa: S608
                ), "refused messages that name them"),
            ]  # fmt: skip
            alerts: set[tuple[str, str]] = set()  # an alert may quote comments of two chunks
            for chunk in self._comments():
                where, _ = self._alerts_where(chunk)
                alerts.update(
                    (str(r[0]), str(r[1]))
                    for r in self._client.query(
                        f"SELECT DISTINCT alert_id, state FROM {db}.alerts WHERE {where}"  # noqa: S608
                    ).result_rows
                )
            found.append(
                Found("alerts", len(alerts), "alerts quoting their comments (comments removed)")
            )
        except ClickHouseError as exc:
            raise store_error(exc) from None
        return found

    def run(self) -> list[Found]:
        """Delete the user's data; what was deleted, per table (counted just before).

        The alerts' samples go first (they are found by the feedback's comments),
        the feedback last. Every statement is idempotent: after a failure, run it again.

        Raises:
            StoreError: the store failed (what was deleted before stays deleted).
        """
        found = self.count()
        wait = {"mutations_sync": 2, "lightweight_deletes_sync": 2}
        try:
            for chunk in self._comments():
                where, array = self._alerts_where(chunk)
                self._client.command(
                    f"ALTER TABLE {self._target('alerts')} UPDATE sample_comments = "
                    f"arrayFilter(c -> NOT has({array}, c), sample_comments) WHERE {where}",
                    settings=wait,
                )
            self._client.command(
                f"DELETE FROM {self._target('dead_letters')} WHERE {self._dead}",  # noqa: S608
                settings=wait,
            )
            for table in ("traces", "feedback"):
                self._client.command(
                    f"DELETE FROM {self._target(table)} WHERE {self._by_user}",  # noqa: S608
                    settings=wait,
                )
        except ClickHouseError as exc:
            raise store_error(exc) from None
        logger.info(
            "forgot a user%s: %s",
            f" of project {self.project}" if self.project else "",
            ", ".join(f"{f.table} {f.rows}" for f in found),
        )
        return found
