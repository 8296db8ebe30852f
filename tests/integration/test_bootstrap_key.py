"""THUMBLINE_BOOTSTRAP_ADMIN_KEY: a deployment's first admin key comes from a secret.

A gateway published beyond loopback refuses to start while no key exists, and
``thumbline keys create`` needs the store first: a compose file or a Kubernetes
manifest gives the gateway its first admin key from a secret instead. Only its
SHA-256 is stored, it is never printed, and a revocation stands across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess

import pytest
from pydantic import SecretStr

from tests.conftest import unique
from tests.integration.conftest import run, start_up, worker_env
from tests.integration.conftest import stop as stop_up
from tests.integration.test_gateway import get, ready
from thumbline.broker import free_port
from thumbline.kafka import ensure_topics
from thumbline.keys import provision_bootstrap_key
from thumbline.schemas import Topics

KEY_ID = secrets.token_hex(8)
KEY = f"tl_{KEY_ID}_{secrets.token_urlsafe(32)}"


@pytest.fixture
async def env(broker, clean_env, tmp_path) -> dict[str, str]:
    prefix = f"{unique('bootstrap')}."
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    return {
        **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"), "THUMBLINE_TOPIC_PREFIX": prefix,
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "THUMBLINE_GATEWAY_HOST": "0.0.0.0",  # noqa: S104 (beyond loopback: keys required)
        "THUMBLINE_GATEWAY_PORT": str(free_port()), "THUMBLINE_BOOTSTRAP_ADMIN_KEY": KEY,
    }  # fmt: skip


def start(thumbline_bin: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [thumbline_bin, "gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def stop(gateway: subprocess.Popen[str]) -> str:
    """Stop it and return everything it said."""
    gateway.terminate()
    out, err = gateway.communicate(timeout=60)
    return out + err


async def test_a_gateway_beyond_loopback_starts_with_the_bootstrap_key_as_its_admin_key(
    thumbline_bin, env
):
    gateway = start(thumbline_bin, env)
    said = ""
    try:
        base = f"http://127.0.0.1:{env['THUMBLINE_GATEWAY_PORT']}"
        assert await ready(base, gateway), "the gateway did not start"
        status, me = await get(f"{base}/v1/whoami", KEY)
        assert status == 200 and me["scope"] == "admin" and me["project"] is None
        assert (await get(f"{base}/v1/whoami"))[0] == 401  # auth is on for everyone else
        wrong = f"tl_{KEY_ID}_{secrets.token_urlsafe(32)}"  # its id, another secret
        assert (await get(f"{base}/v1/whoami", wrong))[0] == 401
    finally:
        said = await asyncio.to_thread(stop, gateway)
    assert KEY.split("_", 2)[2] not in said
    listed = await asyncio.to_thread(run, thumbline_bin, {**env, "COLUMNS": "300"}, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert KEY_ID in listed.stdout and "admin" in listed.stdout
    assert KEY.split("_", 2)[2] not in listed.stdout


async def test_a_revoked_bootstrap_key_stays_revoked_when_the_gateway_starts_again(
    thumbline_bin, env
):
    first = start(thumbline_bin, env)
    try:
        base = f"http://127.0.0.1:{env['THUMBLINE_GATEWAY_PORT']}"
        assert await ready(base, first), "the gateway did not start"
    finally:
        await asyncio.to_thread(stop, first)
    revoked = await asyncio.to_thread(run, thumbline_bin, env, "keys", "revoke", KEY_ID)
    assert revoked.returncode == 0, revoked.stderr
    again = start(thumbline_bin, env)  # the same secret in its environment
    try:
        assert await ready(base, again), "the gateway did not start"
        assert (await get(f"{base}/v1/whoami", KEY))[0] == 401
    finally:
        await asyncio.to_thread(stop, again)


async def test_thumbline_up_takes_the_bootstrap_key_as_its_admin_key_too(
    broker, thumbline_bin, clean_env, tmp_path
):
    key = f"tl_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    env = await worker_env(broker, clean_env, tmp_path, "bootup", THUMBLINE_BOOTSTRAP_ADMIN_KEY=key)
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        assert up.info.gateway_url
        status, me = await get(f"{up.info.gateway_url}/v1/whoami", key)
        assert status == 200 and me["scope"] == "admin"
        assert (await get(f"{up.info.gateway_url}/v1/whoami"))[0] == 401  # auth is on
    finally:
        await asyncio.to_thread(stop_up, up)


def key_rows(store, settings, key_id: str) -> list[tuple]:
    db = settings.clickhouse_database
    return store.query(
        f"SELECT scope, secret_sha256, version FROM {db}.api_keys WHERE key_id = {{k:String}}",
        parameters={"k": key_id},
    ).result_rows


def test_the_key_is_stored_once_as_a_hash_and_never_over_a_key_with_its_id(store, store_settings):
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    settings = store_settings.model_copy(
        update={"bootstrap_admin_key": SecretStr(f"tl_{key_id}_{secret}")}
    )
    assert provision_bootstrap_key(store, settings) is True
    assert provision_bootstrap_key(store, settings) is False  # every later start
    [(scope, digest, version)] = key_rows(store, settings, key_id)
    assert scope == "admin" and version == 1  # older than any revocation's row
    assert digest == hashlib.sha256(secret.encode()).hexdigest() and secret not in digest

    # A key id that already belongs to another key: nothing is written, the secret in
    # the setting does not become that key's.
    taken, theirs = secrets.token_hex(8), hashlib.sha256(b"their secret").hexdigest()
    db = store_settings.clickhouse_database
    store.command(
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, created_at, "
        f"version) VALUES ('{taken}', '{theirs}', 'ingest', 'shop', 'theirs', now64(3), 5)"
    )
    hijack = store_settings.model_copy(
        update={"bootstrap_admin_key": SecretStr(f"tl_{taken}_{secrets.token_urlsafe(32)}")}
    )
    assert provision_bootstrap_key(store, hijack) is False
    assert key_rows(store, hijack, taken) == [("ingest", theirs, 5)]
    unset = store_settings.model_copy(update={"bootstrap_admin_key": None})
    assert provision_bootstrap_key(store, unset) is False


def test_a_start_warns_while_the_bootstrap_key_is_valid_beside_admin_keys_of_your_own(
    store, store_settings, caplog
):
    # It stays an admin key until revoked: once the operator has keys of their own, every
    # start says so, naming the key id (never the secret) and the command.
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    settings = store_settings.model_copy(
        update={"bootstrap_admin_key": SecretStr(f"tl_{key_id}_{secret}")}
    )
    assert provision_bootstrap_key(store, settings) is True
    db = store_settings.clickhouse_database
    own = secrets.token_hex(8)
    store.command(
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, created_at, "
        f"version) VALUES ('{own}', '{'0' * 64}', 'admin', '', 'mine', now64(3), 1)"
    )
    caplog.set_level("WARNING", logger="thumbline.keys")
    assert provision_bootstrap_key(store, settings) is False
    [warning] = [r.getMessage() for r in caplog.records if key_id in r.getMessage()]
    assert f"thumbline keys revoke {key_id}" in warning and secret not in warning

    caplog.clear()  # revoked: nothing more to say
    store.command(
        f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, created_at, "
        f"revoked, version) SELECT key_id, secret_sha256, scope, project, name, created_at, 1, "
        f"2 FROM {db}.api_keys FINAL WHERE key_id = '{key_id}'"
    )
    assert provision_bootstrap_key(store, settings) is False
    assert not [r for r in caplog.records if key_id in r.getMessage()]
