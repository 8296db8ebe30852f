"""Administration: ``topics``, ``keys`` and ``schemas``."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from thumbline.cli.common import (
    KAFKA,
    STORE,
    app,
    cli_settings,
    err,
    fail,
    find_bootstrap,
    keys_app,
    locate,
    out,
    schemas_app,
    store_app,
    store_settings,
    topics_app,
)
from thumbline.schemas.topics import Topics


@topics_app.command("list", env=("topic_prefix", "partitions"))
def topics_list() -> None:
    """The topics of this configuration, with partitions, keys and contracts."""
    settings = cli_settings()
    table = Table("topic", "partitions", "key", "contract", "what", box=None, header_style="bold")
    for topic in Topics.build(settings.topic_prefix, settings.partitions).all():
        table.add_row(
            topic.name,
            str(topic.partitions),
            topic.key or "-",
            topic.model.__name__,
            topic.description,
        )
    out.print(table)


@topics_app.command("create", env=(*KAFKA, "partitions", "replication_factor", "otlp_topic"))
def topics_create() -> None:
    """Create the missing topics on THUMBLINE_KAFKA_BOOTSTRAP (or the running embedded broker)."""
    from thumbline.kafka import ensure_topics
    from thumbline.schemas.topics import otlp_topic

    settings = cli_settings()
    topics = Topics.build(settings.topic_prefix, settings.partitions)
    bootstrap = find_bootstrap(settings)
    created = asyncio.run(
        ensure_topics(
            bootstrap,
            topics.all(),
            replication_factor=settings.replication_factor,
            kafka_kwargs=settings.kafka_kwargs(),
        )
    )
    if settings.otlp_topic and settings.key_by_trace:  # the Collector's, as thumbline up does
        created += asyncio.run(
            ensure_topics(
                bootstrap, (otlp_topic(settings.otlp_topic, settings.partitions),),
                replication_factor=settings.replication_factor,
                kafka_kwargs=settings.kafka_kwargs(), check_partitions=False,
            )
        )  # fmt: skip
    out.print(f"created {len(created)} topic(s): {', '.join(created) or 'none needed'}")


# keys and schemas ---------------------------------------------------------------


@keys_app.command("create", env=STORE)
def keys_create(
    scope: Annotated[str, typer.Option(help="ingest (write-only), read or admin.")] = "ingest",
    project: Annotated[
        str, typer.Option(help="The one project the key may use (not for admin keys).")
    ] = "",
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    annotator: Annotated[
        str,
        typer.Option(
            help="Who the feedback of this ingest key comes from: reviewer, evaluator (an LLM "
            "judge) or code. Default: end users (what a browser key sends)."
        ),
    ] = "",
) -> None:
    """Create an API key; the full key is shown this once."""
    from thumbline.keys import create_key

    key = create_key(
        store_settings(), scope=scope, project=project, name=name, annotator=annotator,  # type: ignore[arg-type]
    )  # fmt: skip
    out.print(key, markup=False)
    who = f" ({annotator} feedback)" if annotator and annotator != "end_user" else ""
    err.print(
        f"{scope} key for {project or 'every project'}{who}: store it now, it is not shown again"
    )


@keys_app.command("list", env=STORE)
def keys_list() -> None:
    """The keys: id, scope, project, annotator, name, created, revoked (never the secret)."""
    from thumbline.keys import list_keys

    table = Table(
        "key id", "scope", "project", "annotator", "name", "created", "revoked", box=None,
        header_style="bold", pad_edge=False,
    )  # fmt: skip
    for k in list_keys(store_settings()):
        created = k.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        who = k.writes_as if k.scope == "ingest" else "-"
        table.add_row(k.key_id, k.scope, k.project or "*", who, k.name, created, "yes" * k.revoked)
    out.print(table)


@keys_app.command("revoke", env=STORE)
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (or the full key).")],
) -> None:
    """Revoke a key: the gateway refuses it from now on."""
    from thumbline.keys import revoke_key

    if not revoke_key(store_settings(), key_id):
        fail(f"no key {key_id!r} (thumbline keys list shows them)")
    out.print(f"revoked {key_id}")


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write *.schema.json")] = Path(
        "schemas/json"
    ),
) -> None:
    """Write the JSON Schema of every topic."""
    from thumbline.schemas.jsonschema import write

    for path in write(directory):
        out.print(str(path))


# forgetting a user ----------------------------------------------------------------


@app.command(rich_help_panel="Administer", env=STORE)
def forget(
    user: Annotated[str, typer.Option("--user", help="The user_id, exactly as it was sent.")],
    project: Annotated[
        str | None, typer.Option(help="Only this project's rows (default: every project's).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking.")] = False,
) -> None:
    """Delete what is stored about one user (a privacy request): their feedback, the spans
    of their traces with questions and answers, their comments quoted by alerts, and dead
    letters naming them. Stop their events at the source first: a message of theirs sent
    (or re-delivered by Kafka) afterwards is stored again."""
    from thumbline import runfile
    from thumbline.errors import StoreError
    from thumbline.forget import Forget
    from thumbline.store import open_client

    settings = store_settings()
    held = (
        "forget deletes, so it opens the store itself, and {who} holds the embedded store: "
        "stop it, run forget, and start it again (or point THUMBLINE_CLICKHOUSE_URL at a "
        "ClickHouse server)"
    )
    if settings.store_is_chdb and runfile.read(settings.run_file) is not None:
        fail(held.format(who="`thumbline up`"))
    try:
        client = open_client(settings)
    except StoreError as exc:
        if not settings.store_is_chdb:
            raise
        # chDB says only "Error initializing EmbeddedServer" when another process has it
        fail(f"{held.format(who='another process')} ({exc})")
    try:
        job = Forget(
            client, database=settings.clickhouse_database, user_id=user, project=project,
            cluster=settings.clickhouse_cluster,
        )  # fmt: skip
        found = job.count()
        whose = f"user {user!r}" + (f" in project {project!r}" if project else "")
        if not any(f.rows for f in found):
            out.print(f"nothing stored about {whose}", markup=False)
            return
        table = Table("table", "rows", "what", box=None, header_style="bold", pad_edge=False)
        for f in found:
            table.add_row(f.table, str(f.rows), f.what)
        err.print(f"stored about {whose}:", markup=False)
        err.print(table)
        if not yes and not typer.confirm("delete them?", default=False, err=True):
            fail("nothing deleted")
        done = job.run()
    finally:
        client.close()
    for f in done:
        out.print(f"deleted {f.rows} from {f.table}", markup=False)


# the store endpoint ---------------------------------------------------------------


@store_app.command("url", env=("data_dir",))
def store_url(
    reader: Annotated[
        bool, typer.Option("--reader", help="The reader user's URL (the SQL sandbox).")
    ] = False,
) -> None:
    """Print the URL of the running `thumbline up`'s store, password included, for
    THUMBLINE_CLICKHOUSE_URL (the writer) or a tool such as Grafana (--reader):
    export THUMBLINE_CLICKHOUSE_URL=$(thumbline store url)."""
    from thumbline import runfile

    settings = locate(cli_settings())
    info = runfile.read(settings.run_file) if settings is not None else None
    url = None if info is None else runfile.endpoint_url(info, reader=reader)
    if url is None:
        where = settings.data_dir.resolve() if settings is not None else "any data dir"
        fail(
            f"no running `thumbline up` with an embedded store in {where}: start `thumbline "
            "up`, or set THUMBLINE_DATA_DIR to the data dir of the one you started"
        )
    out.print(url, markup=False, soft_wrap=True)
