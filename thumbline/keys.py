"""API keys of the HTTP gateway: created, listed and revoked by ``thumbline keys``.

A key reads ``tl_<key_id>_<secret>``. The ``api_keys`` table keeps the key id,
a SHA-256 of the secret (the secret is 32 random bytes: a slow hash adds
nothing), the scope and the one project it is bound to. The full key is shown
once, when it is created.

Scopes:

- ``ingest``: write feedback and traces, read nothing. Safe to ship in a
  browser bundle.
- ``read``: the read endpoints (for dashboards and the CLI), write nothing.
- ``admin``: everything, every project; it takes no project. Admin keys
  bound to a project, which older versions created, keep that binding
  where a request names its project (they write and read only that one)
  and are refused by ``POST /v1/sql``, which reads every project.

A key bound to a project writes only events of that project (the gateway
stamps it on every event) and reads only its rows.

Who gave the feedback comes from the key too: an ingest key has an
``annotator`` (``--annotator reviewer``, ``evaluator`` or ``code``), and the
gateway stamps it on every feedback event the key sends. A key without one is
an end users' key (the one a browser holds): it writes ``end_user`` feedback
only, and feedback that says it is someone else's is refused. Admin keys (and a
loopback gateway before any key exists) may say ``annotator`` in the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from clickhouse_connect.driver.client import Client

from thumbline.errors import ConfigError
from thumbline.metrics import Metrics
from thumbline.queries import literal
from thumbline.settings import Settings
from thumbline.sqlclient import run_sql

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
#: What ``--annotator`` takes for a key (empty, or end_user: an end users' key).
KEY_ANNOTATORS = ("end_user", "reviewer", "evaluator", "code")
_TOKEN = re.compile(r"^tl_([0-9a-f]{16})_([A-Za-z0-9_\-]{20,100})$")
_PROJECT = re.compile(r"^[^\x00-\x1f']{1,128}$")
#: What a secret is compared with when its key id is unknown: the same work as a wrong secret.
_DUMMY_DIGEST = hashlib.sha256(secrets.token_bytes(32)).digest()

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    scope: Scope
    project: str  # empty: every project
    name: str
    created_at: datetime
    revoked: bool = False
    annotator: str = ""  # who its feedback comes from; empty: end users

    @property
    def writes_as(self) -> str:
        """The annotator of the feedback this key sends: ``end_user`` unless it has one."""
        return self.annotator or "end_user"

    def may(self, scope: Scope) -> bool:
        """Whether this key's scope covers ``scope`` (admin covers all)."""
        return self.scope == scope or self.scope == "admin"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    settings: Settings, *, scope: Scope, project: str, name: str = "", annotator: str = ""
) -> str:
    """Store a new key and return it in full (the only time it is shown).

    ``annotator``: who the feedback of an ingest key comes from (reviewer,
    evaluator, code); empty or end_user: end users.
    """
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}")
    if annotator not in ("", *KEY_ANNOTATORS):
        raise ConfigError(f"--annotator takes {', '.join(KEY_ANNOTATORS)}, not {annotator!r}")
    annotator = "" if annotator == "end_user" else annotator
    if annotator and scope != "ingest":
        why = {"admin": "an admin key may say annotator in each event"}.get(
            scope, "a read key writes nothing"
        )
        raise ConfigError(
            f"--annotator is for ingest keys ({why}): use --scope ingest --annotator {annotator}"
        )
    if scope == "admin" and project:
        raise ConfigError(
            f"an admin key covers every project, so it takes no project: drop --project, or "
            f"create a key for {project!r} alone (--scope read --project {project}, or "
            f"--scope ingest --project {project})"
        )
    if scope != "admin" and not project:
        article = "an" if scope[0] in "aeiou" else "a"
        raise ConfigError(f"{article} {scope} key is bound to one project: give --project")
    if project and not _PROJECT.match(project):
        raise ConfigError("project must be 1-128 printable characters without quotes")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    db = settings.clickhouse_database
    run_sql(
        settings,
        # INSERT ... SELECT: the SQL endpoint appends a FORMAT clause, which VALUES cannot take
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, annotator, "  # noqa: S608
        f"name, created_at, version) SELECT {literal(key_id)}, {literal(_sha256(secret))}, "
        f"{literal(scope)}, {literal(project)}, {literal(annotator)}, {literal(name[:200])}, "
        f"fromUnixTimestamp64Milli({int(now.timestamp() * 1000)}), "
        f"{int(now.timestamp() * 1000)}",
        write=True,
    )
    return f"tl_{key_id}_{secret}"


def list_keys(settings: Settings) -> list[ApiKey]:
    db = settings.clickhouse_database
    out = run_sql(
        settings,
        "SELECT key_id, scope, project, annotator, name, toString(created_at) AS created_at, "  # noqa: S608
        "revoked "
        f"FROM {db}.api_keys FINAL ORDER BY created_at",
        fmt="JSONEachRow",
    )
    return [_key(orjson.loads(line)) for line in out.splitlines() if line.strip()]


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke a key by its id (or the full key); False if there is no such key."""
    match = _TOKEN.match(key_id)
    key_id = match.group(1) if match else key_id
    if not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise ConfigError("a key id is 16 hex characters (thumbline keys list shows them)")
    db = settings.clickhouse_database
    found = run_sql(
        settings,
        f"SELECT count() FROM {db}.api_keys WHERE key_id = {literal(key_id)}",  # noqa: S608
        fmt="JSONEachRow",
    )
    if not orjson.loads(found.splitlines()[0])["count()"]:
        return False
    now = datetime.now(UTC)
    run_sql(
        settings,
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, annotator, name, "  # noqa: S608
        "created_at, revoked, revoked_at, version) SELECT key_id, secret_sha256, scope, project, "
        "annotator, name, "
        f"created_at, 1, now64(3), {int(now.timestamp() * 1000)} FROM {db}.api_keys FINAL "
        f"WHERE key_id = {literal(key_id)}",
        write=True,
    )
    return True


def provision_bootstrap_key(client: Client, settings: Settings) -> bool:
    """Store ``THUMBLINE_BOOTSTRAP_ADMIN_KEY`` as an admin key, unless its key id is in the table.

    A deployment's first key, from a secret (the gateway refuses to listen beyond
    loopback while no key exists). Once its key id is stored nothing is written
    again, so a revocation stands however often the gateway restarts with the
    same secret; the row's version is 1, older than any revocation's, so even
    two gateways starting at once cannot undo one. Only the SHA-256 of the
    secret is stored; the key itself is never logged.

    Returns:
        True when the key was stored now; False when none is set or it was there.
    """
    if settings.bootstrap_admin_key is None:
        return False
    match = _TOKEN.match(settings.bootstrap_admin_key.get_secret_value())
    if match is None:  # the setting's validator checks the format
        raise ConfigError("THUMBLINE_BOOTSTRAP_ADMIN_KEY is not a key: tl_<key_id>_<secret>")
    key_id, secret = match.groups()
    db = settings.clickhouse_database
    found = client.query(
        f"SELECT count() FROM {db}.api_keys WHERE key_id = {literal(key_id)}"  # noqa: S608
    ).result_rows[0][0]
    if found:
        _warn_while_valid(client, db, key_id)
        return False
    client.command(
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, annotator, name, "  # noqa: S608
        f"created_at, version) SELECT {literal(key_id)}, {literal(_sha256(secret))}, 'admin', "
        "'', '', 'bootstrap (THUMBLINE_BOOTSTRAP_ADMIN_KEY)', now64(3), 1"
    )
    logger.info("stored the bootstrap admin key %s (THUMBLINE_BOOTSTRAP_ADMIN_KEY)", key_id)
    return True


def _warn_while_valid(client: Client, db: str, key_id: str) -> None:
    """Say so while the bootstrap key is valid beside admin keys of the operator's own."""
    valid, others = client.query(
        f"SELECT countIf(key_id = {literal(key_id)}), countIf(key_id != {literal(key_id)}) "  # noqa: S608
        f"FROM {db}.api_keys FINAL WHERE scope = 'admin' AND NOT revoked"
    ).result_rows[0]
    if valid and others:
        logger.warning(
            "the bootstrap admin key %s (THUMBLINE_BOOTSTRAP_ADMIN_KEY) is still an admin key "
            "beside %d of your own: revoke it with `thumbline keys revoke %s`",
            key_id, others, key_id,
        )  # fmt: skip


def _key(row: dict[str, object]) -> ApiKey:
    created = str(row["created_at"])
    return ApiKey(
        key_id=str(row["key_id"]),
        scope=row["scope"],  # type: ignore[arg-type]
        project=str(row["project"]),
        name=str(row["name"]),
        created_at=datetime.fromisoformat(created).replace(tzinfo=UTC),
        revoked=bool(row["revoked"]),
        annotator=str(row.get("annotator") or ""),
    )


class KeyRing:
    """The gateway's view of the keys: the whole ``api_keys`` table, held in memory.

    The table is small (a row a key) and read as a whole when it changed,
    which is checked at most every ``ttl`` seconds and at once after
    :meth:`invalidate`; a presented key is then checked in memory. So a flood
    of made-up key ids costs no store query, and an unknown id, a wrong secret
    and a revoked key take one path: a SHA-256 of the secret and one
    constant-time compare (against a dummy digest when the id is not held), so
    the answer time does not tell whether a key id exists.

    A revocation takes effect within ``ttl`` (0: the table is checked for every
    request); the owner of an embedded store calls :meth:`invalidate` after every
    write through its SQL endpoint, so there it takes effect at once. At most
    ``max_keys`` active keys are held, the newest; older ones are refused, and
    each read that finds more counts in ``thumbline_bound_hits_total{structure="api_keys"}``.

    Async code awaits :meth:`refreshed` (the read runs in a thread, one for all
    concurrent callers; a fresh table costs no thread hop) and then calls
    :meth:`lookup` and :attr:`has_keys`, which never query. :meth:`check` and
    :meth:`any_keys` do both, blocking, for threads.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        *,
        ttl: float = 1.0,
        max_keys: int = 100_000,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._database = database
        self._ttl = ttl
        self._max_keys = max_keys
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()  # one clickhouse-connect client: one query at a time
        self._keys: dict[str, tuple[bytes, ApiKey]] = {}
        self._any = False
        self._loaded_at: float | None = None
        # Bumped by invalidate(): a read that overlaps it leaves the table stale, and a
        # request after it does not wait on a read that began before it.
        self._generation = 0
        self._pending: tuple[int, asyncio.Future[None]] | None = None
        self._fingerprint: tuple[int, ...] | None = None  # of the rows last read whole
        self._warned_full = False

    @property
    def stale(self) -> bool:
        """Whether the table must be read before the next check."""
        loaded = self._loaded_at
        return loaded is None or self._clock() - loaded >= self._ttl

    @property
    def has_keys(self) -> bool:
        """Whether a key was ever created, as last read: from then on every request needs one.

        (Revoked keys count: revoking the last key does not open the gateway again.)
        """
        return self._any

    def invalidate(self) -> None:
        """Read the table again before the next check; safe to call from any thread."""
        self._generation += 1
        self._loaded_at = None

    def refresh(self) -> None:
        """Bring the table up to date now (blocking: from async code, await :meth:`refreshed`).

        First a fingerprint of every row (a few ms whatever the size); the whole
        table is read only when it changed (a read of 100,000 keys takes about a
        second, mostly in Python, holding the GIL the event loop needs). Any
        insert (a new key, a revocation) or merge changes the fingerprint.
        """
        db = self._database
        with self._lock:
            generation, started = self._generation, self._clock()
            fingerprint = tuple(
                self._client.query(
                    "SELECT count(), sum(cityHash64(key_id, secret_sha256, scope, project, "  # noqa: S608
                    f"annotator, revoked, version)) FROM {db}.api_keys"
                ).result_rows[0]
            )
            if fingerprint != self._fingerprint:
                self._keys = self._read_all()
                self._fingerprint = fingerprint
            self._any = bool(fingerprint[0])
            if generation == self._generation:
                self._loaded_at = started

    def _read_all(self) -> dict[str, tuple[bytes, ApiKey]]:
        result = self._client.query(
            # FINAL in the subquery: the newest row of each key, before the filter
            "SELECT key_id, secret_sha256, scope, project, annotator, name, created_at, revoked "  # noqa: S608
            "FROM (SELECT key_id, secret_sha256, scope, project, annotator, name, revoked, "
            f"toString(created_at) AS created_at FROM {self._database}.api_keys FINAL) "
            f"WHERE revoked = 0 ORDER BY created_at DESC LIMIT {self._max_keys + 1}"
        )
        keys: dict[str, tuple[bytes, ApiKey]] = {}
        for values in result.result_rows[: self._max_keys]:
            row = dict(zip(result.column_names, values, strict=True))
            try:
                digest = bytes.fromhex(str(row.pop("secret_sha256")))
            except ValueError:  # a row written by hand: that key fails, the others work
                logger.warning("api key %s is skipped: its secret_sha256 is not a SHA-256 in "
                               "hex; revoke it and create it again", row["key_id"])  # fmt: skip
                continue
            key = _key(row)
            if not key.revoked:
                keys[key.key_id] = (digest, key)
        if len(result.result_rows) > self._max_keys:
            self._full()
        return keys

    def _full(self) -> None:
        if self._metrics is not None:
            self._metrics.bound_hits.labels("api_keys").inc()
        if not self._warned_full:
            self._warned_full = True
            logger.warning(
                "more than %d active API keys: the gateway holds the newest %d and refuses "
                "older ones; revoke unused keys or raise THUMBLINE_GATEWAY_MAX_KEYS",
                self._max_keys, self._max_keys,
            )  # fmt: skip

    async def refreshed(self) -> None:
        """Make the table fresh: read in a thread if stale, one read for concurrent callers."""
        if not self.stale:
            return
        pending = self._pending
        if pending is None or pending[1].done() or pending[0] != self._generation:
            future = asyncio.ensure_future(asyncio.to_thread(self.refresh))
            future.add_done_callback(_retrieved)
            pending = self._pending = (self._generation, future)
        await asyncio.shield(pending[1])  # a caller that goes away leaves it to the others

    def lookup(self, token: str) -> ApiKey | None:
        """The key a presented token belongs to, or None, from the table as last read."""
        match = _TOKEN.match(token.strip())
        if match is None:
            return None  # not a key's shape: no key id to learn anything about
        key_id, secret = match.groups()
        digest, key = self._keys.get(key_id, (_DUMMY_DIGEST, None))
        same = hmac.compare_digest(digest, hashlib.sha256(secret.encode()).digest())
        return key if same else None

    def check(self, token: str) -> ApiKey | None:
        """:meth:`lookup`, after reading the table if it is stale (blocking)."""
        if self.stale:
            self.refresh()
        return self.lookup(token)

    def any_keys(self) -> bool:
        """:attr:`has_keys`, after reading the table if it is stale (blocking)."""
        if self.stale:
            self.refresh()
        return self._any


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a read's error as seen: the requests that waited for it have their own copy."""
    if not future.cancelled():
        future.exception()
