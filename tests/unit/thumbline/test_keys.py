"""The gateway's key ring against a counting stand-in for the store (no ClickHouse)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from thumbline.errors import ConfigError
from thumbline.keys import KeyRing, create_key
from thumbline.metrics import Metrics
from thumbline.settings import load_settings

COLUMNS = ["key_id", "secret_sha256", "scope", "project", "name", "created_at", "revoked"]


class CountingStore:
    """The ``api_keys`` table in memory; counts every query it answers."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.queries: list[str] = []
        self.during_query = lambda: None

    def add(self, *, scope: str = "ingest", project: str = "a", revoked: bool = False) -> str:
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        self.rows.append({
            "key_id": key_id, "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "scope": scope, "project": project, "name": "", "revoked": int(revoked),
            "created_at": f"2026-11-{len(self.rows) + 1:02d} 10:00:00.000",
        })  # fmt: skip
        return f"tl_{key_id}_{secret}"

    def query(self, sql: str, parameters: dict | None = None) -> SimpleNamespace:
        self.queries.append(sql)
        self.during_query()
        if "cityHash64" in sql:  # the fingerprint: changes with any row
            digest = hash(tuple(tuple(sorted(r.items())) for r in self.rows))
            return SimpleNamespace(column_names=["n", "h"], result_rows=[[len(self.rows), digest]])
        rows = self.rows
        if parameters and "key_id" in parameters:  # a lookup by key id
            rows = [r for r in rows if r["key_id"] == parameters["key_id"]]
        rows = sorted(rows, key=lambda r: r["created_at"], reverse=True)
        if limit := re.search(r"LIMIT (\d+)", sql):
            rows = rows[: int(limit.group(1))]
        return SimpleNamespace(
            column_names=COLUMNS, result_rows=[[r[c] for c in COLUMNS] for r in rows]
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def random_key() -> str:
    return f"tl_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def test_a_flood_of_unknown_key_ids_costs_no_store_query():
    store = CountingStore()
    known = store.add()
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]
    assert ring.check(known) is not None
    loaded = len(store.queries)
    assert all(ring.check(random_key()) is None for _ in range(1_000))
    assert len(store.queries) == loaded  # the table in memory answered every one


def test_unknown_ids_wrong_secrets_and_revoked_keys_take_the_same_path(monkeypatch):
    store = CountingStore()
    known, revoked = store.add(), store.add(revoked=True)
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]
    ring.check(known)  # loaded
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    wrong_secret = known.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32)
    for token, valid in ((random_key(), False), (wrong_secret, False), (revoked, False),
                         (known, True)):  # fmt: skip
        compared.clear()
        assert (ring.check(token) is not None) is valid
        assert len(compared) == 1, token  # one constant-time compare, found or not
        assert len(compared[0][0]) == len(compared[0][1])  # of digests of one length


def test_a_revoked_key_is_refused_at_once_after_invalidate_and_within_ttl_without():
    store, clock = CountingStore(), Clock()
    key = store.add()
    ring = KeyRing(store, "db", ttl=5, clock=clock)  # type: ignore[arg-type]
    assert ring.check(key) is not None
    store.rows[0]["revoked"] = 1
    assert ring.check(key) is not None  # trusted for ttl...
    clock.now += 5
    assert ring.check(key) is None  # ...and no longer
    store.rows[0]["revoked"] = 0
    ring.invalidate()  # thumbline up: after every write through its SQL endpoint
    assert ring.check(key) is not None


def test_a_revocation_during_a_refresh_is_not_lost():
    store = CountingStore()
    key = store.add()
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]

    def revoke_meanwhile() -> None:
        store.during_query = lambda: None
        store.rows[0]["revoked"] = 1
        ring.invalidate()

    store.during_query = revoke_meanwhile  # the refresh read the table before the write
    ring.check(key)
    assert ring.check(key) is None  # invalidated during the refresh: read again


def test_the_refresh_is_off_the_event_loop_and_shared_by_concurrent_requests():
    store = CountingStore()
    key = store.add()
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]

    async def requests() -> list[bool]:
        assert ring.stale
        await asyncio.gather(*(ring.refreshed() for _ in range(50)))
        return [ring.lookup(key) is not None for _ in range(50)]

    assert asyncio.run(requests()) == [True] * 50
    assert not ring.stale and len(store.queries) == 2  # one refresh: fingerprint, keys


def test_no_key_yet_means_none_needed_and_a_revoked_last_key_still_counts():
    store = CountingStore()
    ring = KeyRing(store, "db", ttl=0)  # type: ignore[arg-type]
    assert ring.any_keys() is False
    store.add(revoked=True)
    assert ring.any_keys() is True


def test_the_ring_holds_at_most_max_keys_the_newest_and_counts_when_it_is_full():
    store = CountingStore()
    oldest, *newest = (store.add() for _ in range(3))
    metrics = Metrics(CollectorRegistry())
    ring = KeyRing(store, "db", ttl=60, max_keys=2, metrics=metrics)  # type: ignore[arg-type]
    assert ring.check(oldest) is None  # beyond the cap: refused, and said so
    assert all(ring.check(key) is not None for key in newest)
    assert (
        metrics.registry.get_sample_value("thumbline_bound_hits_total", {"structure": "api_keys"})
        == 1
    )


def test_a_malformed_token_is_refused_without_a_store_query():
    store = CountingStore()
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]
    ring.check(store.add())
    loaded = len(store.queries)
    for token in ("", "tl_", "Bearer x", "tl_XYZ_secret", "x" * 10_000):
        assert ring.check(token) is None
    assert len(store.queries) == loaded


@pytest.mark.parametrize("ttl", [0.0, 1.0])
def test_a_ttl_of_zero_checks_the_table_on_every_check(ttl):
    store, clock = CountingStore(), Clock()
    key = store.add()
    ring = KeyRing(store, "db", ttl=ttl, clock=clock)  # type: ignore[arg-type]
    ring.check(key)
    ring.check(key)
    assert len(store.queries) == (3 if ttl == 0 else 2)  # the fingerprint again, unchanged


def test_the_whole_table_is_read_again_only_when_it_changed():
    store, clock = CountingStore(), Clock()
    key = store.add()
    ring = KeyRing(store, "db", ttl=1, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert ring.check(key) is not None
        clock.now += 1
    reads = [q for q in store.queries if "cityHash64" not in q]
    assert len(reads) == 1  # five fingerprints, one read
    fresh = store.add()
    clock.now += 1
    assert ring.check(fresh) is not None
    assert len([q for q in store.queries if "cityHash64" not in q]) == 2


def test_an_admin_key_bound_to_a_project_is_refused_before_anything_is_stored(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="admin key covers every project") as refused:
        create_key(settings, scope="admin", project="shop")
    assert "--scope read --project shop" in str(refused.value)
    assert not (tmp_path / "chdb").exists()


@pytest.mark.parametrize(("scope", "article"), [("read", "a"), ("ingest", "an")])
def test_a_key_without_its_project_is_refused_in_plain_english(tmp_path, scope, article):
    with pytest.raises(ConfigError, match=f"^{article} {scope} key is bound to one project"):
        create_key(load_settings(data_dir=tmp_path), scope=scope, project="")  # type: ignore[arg-type]


def test_a_row_with_a_malformed_hash_is_skipped_and_every_other_key_still_works(caplog):
    store = CountingStore()
    good = store.add()
    bad = store.add()
    store.rows[-1]["secret_sha256"] = "x"  # written by hand with `thumbline sql --write`
    ring = KeyRing(store, "db", ttl=60)  # type: ignore[arg-type]
    assert ring.check(good) is not None
    assert ring.check(bad) is None
    # the whole secret (token_urlsafe: it may hold "_" itself, so split once per field)
    assert "not a SHA-256" in caplog.text and bad.split("_", 2)[2] not in caplog.text
