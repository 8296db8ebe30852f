"""API keys of the HTTP gateway: created, listed and revoked by ``thumbline keys``.

A key reads ``tl_<key_id>_<secret>``. The ``api_keys`` table keeps the key id,
a SHA-256 of the secret (the secret is 32 random bytes: a slow hash adds
nothing), the scope and the one project it is bound to. The full key is shown
once, when it is created.

Scopes:

- ``ingest``: write feedback and traces, read nothing. Safe to ship in a
  browser bundle.
- ``read``: the read endpoints (for dashboards and the CLI), write nothing.
- ``admin``: everything, every project.

A key bound to a project writes only events of that project (the gateway
stamps it on every event) and reads only its rows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from clickhouse_connect.driver.client import Client

from thumbline.errors import ConfigError
from thumbline.queries import literal
from thumbline.settings import Settings
from thumbline.sqlclient import run_sql

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
_TOKEN = re.compile(r"^tl_([0-9a-f]{16})_([A-Za-z0-9_\-]{20,100})$")
_PROJECT = re.compile(r"^[^\x00-\x1f']{1,128}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    scope: Scope
    project: str  # empty: every project
    name: str
    created_at: datetime
    revoked: bool = False

    def may(self, scope: Scope) -> bool:
        """Whether this key's scope covers ``scope`` (admin covers all)."""
        return self.scope == scope or self.scope == "admin"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(settings: Settings, *, scope: Scope, project: str, name: str = "") -> str:
    """Store a new key and return it in full (the only time it is shown)."""
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}")
    if scope != "admin" and not project:
        raise ConfigError(f"an {scope} key is bound to one project: give --project")
    if project and not _PROJECT.match(project):
        raise ConfigError("project must be 1-128 printable characters without quotes")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    db = settings.clickhouse_database
    run_sql(
        settings,
        # INSERT ... SELECT: the SQL endpoint appends a FORMAT clause, which VALUES cannot take
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, "  # noqa: S608
        f"created_at, version) SELECT {literal(key_id)}, {literal(_sha256(secret))}, "
        f"{literal(scope)}, {literal(project)}, {literal(name[:200])}, "
        f"fromUnixTimestamp64Milli({int(now.timestamp() * 1000)}), "
        f"{int(now.timestamp() * 1000)}",
        write=True,
    )
    return f"tl_{key_id}_{secret}"


def list_keys(settings: Settings) -> list[ApiKey]:
    db = settings.clickhouse_database
    out = run_sql(
        settings,
        "SELECT key_id, scope, project, name, toString(created_at) AS created_at, revoked "  # noqa: S608
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
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, created_at, "  # noqa: S608
        "revoked, revoked_at, version) SELECT key_id, secret_sha256, scope, project, name, "
        f"created_at, 1, now64(3), {int(now.timestamp() * 1000)} FROM {db}.api_keys FINAL "
        f"WHERE key_id = {literal(key_id)}",
        write=True,
    )
    return True


def _key(row: dict[str, object]) -> ApiKey:
    created = str(row["created_at"])
    return ApiKey(
        key_id=str(row["key_id"]),
        scope=row["scope"],  # type: ignore[arg-type]
        project=str(row["project"]),
        name=str(row["name"]),
        created_at=datetime.fromisoformat(created).replace(tzinfo=UTC),
        revoked=bool(row["revoked"]),
    )


class KeyRing:
    """The gateway's view of the keys: looked up in ClickHouse, cached briefly.

    A key's row is cached for ``ttl`` seconds, so a revocation takes effect
    within ``ttl`` (0: checked on every request). The owner of an embedded
    store calls :meth:`invalidate` after every write through its SQL
    endpoint, so there a revocation takes effect at once.
    """

    def __init__(self, client: Client, database: str, *, ttl: float = 1.0) -> None:
        self._client = client
        self._database = database
        self._ttl = ttl
        self._lock = threading.Lock()  # one clickhouse-connect client: one query at a time
        self._cache: dict[str, tuple[float, tuple[str, ApiKey] | None]] = {}
        self._any: tuple[float, bool] | None = None

    def invalidate(self) -> None:
        self._cache.clear()
        self._any = None

    def any_keys(self) -> bool:
        """Whether a key was ever created: from then on every request needs one.

        (Revoked keys count: revoking the last key does not open the gateway again.)
        """
        now = time.monotonic()
        if self._any is None or now - self._any[0] >= self._ttl:
            with self._lock:
                rows = self._client.query(
                    f"SELECT count() FROM {self._database}.api_keys"  # noqa: S608
                ).result_rows
            self._any = (now, bool(rows[0][0]))
        return self._any[1]

    def needs_lookup(self, token: str) -> bool:
        """Whether :meth:`check` would query the store (else it answers from memory,
        and the caller can skip the thread hop)."""
        match = _TOKEN.match(token.strip())
        if match is None:
            return False
        cached = self._cache.get(match.group(1))
        return cached is None or time.monotonic() - cached[0] >= self._ttl

    def check(self, token: str) -> ApiKey | None:
        """The key a presented token belongs to, or None (unknown, wrong or revoked)."""
        match = _TOKEN.match(token.strip())
        if match is None:
            return None
        key_id, secret = match.groups()
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] >= self._ttl:
            with self._lock:
                result = self._client.query(
                    "SELECT key_id, secret_sha256, scope, project, name, "  # noqa: S608
                    f"toString(created_at) AS created_at, revoked FROM {self._database}.api_keys "
                    "FINAL WHERE key_id = {key_id:String}",
                    parameters={"key_id": key_id},
                )
            found = None
            for values in result.result_rows:
                row = dict(zip(result.column_names, values, strict=True))
                found = (str(row.pop("secret_sha256")), _key(row))
            if len(self._cache) > 10_000:
                self._cache.clear()
            cached = self._cache[key_id] = (now, found)
        entry = cached[1]
        if entry is None or entry[1].revoked:
            return None
        if not hmac.compare_digest(entry[0], _sha256(secret)):
            return None
        return entry[1]
