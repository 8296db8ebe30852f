"""``thumbline scores``: the score configs (list, set, apply a file, delete)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from thumbline.cli.common import STORE, App, app, err, fail, out, store_settings
from thumbline.schemas import InvalidEvent
from thumbline.schemas.score_configs import ScoreConfig

scores_app = App(
    help="Score configs: what the values of a feedback name mean (label and score), versioned."
)
app.add_typer(scores_app, name="scores", rich_help_panel="Administer")


def _json(config: ScoreConfig | None, **extra: Any) -> dict[str, Any]:
    fields = config.model_dump(mode="json", exclude={"schema_version"}) if config else {}
    return {**fields, **extra}


@scores_app.command("list", env=STORE)
def scores_list(
    history: Annotated[
        bool, typer.Option("--history", help="Every version, deleted ones included.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
) -> None:
    """The score configs in force (the newest version of each name)."""
    from thumbline.score_configs import list_configs, sandbox_sql

    settings = store_settings()
    found = list_configs(
        sandbox_sql(settings), settings.clickhouse_database, history=history, project=project
    )
    if as_json:
        rows = [
            _json(c.config, project=c.project, name=c.name, version=c.version,
                  deleted=c.config is None,
                  created_at=c.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"))
            for c in found
        ]  # fmt: skip
        out.print_json(orjson.dumps(rows).decode()) if rows else out.print("[]")
        return
    table = Table(
        "project", "name", "version", "meaning", "created", box=None, header_style="bold",
        pad_edge=False,
    )  # fmt: skip
    for c in found:
        meaning = c.config.describe() if c.config else "(deleted)"
        if c.config and c.config.description:
            meaning += f": {c.config.description}"
        created = c.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        table.add_row(c.project, c.name, str(c.version), meaning, created)
    if not found:
        err.print("no score configs: thumbline scores set NAME --kind rating --range 1 5")
        return
    out.print(table)


@scores_app.command("set", env=STORE)
def scores_set(
    name: Annotated[str, typer.Argument(help="The feedback name, e.g. stars.")],
    kind: Annotated[str, typer.Option(help="rating, score, thumb, bool or category.")],
    range_: Annotated[
        tuple[float, float] | None,
        typer.Option("--range", help="LOW HIGH of a rating or score (default 1 5 and 0 1)."),
    ] = None,
    bad_at_most: Annotated[
        float | None, typer.Option(help="Values up to this are bad (default: first quarter).")
    ] = None,
    good_at_least: Annotated[
        float | None, typer.Option(help="Values from this are good (default: last quarter).")
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(help="CATEGORY=LABEL for a category kind, e.g. hallucination=bad; repeat."),
    ] = None,
    project: Annotated[str, typer.Option(help="The project.")] = "default",
    description: Annotated[str, typer.Option(help="What the feedback is.")] = "",
    one_vote_per_user: Annotated[
        bool, typer.Option(help="A person's newer vote on a target replaces the earlier one.")
    ] = False,
) -> None:
    """Define a feedback name; a new version only when it says something new."""
    from thumbline.score_configs import put_config, sandbox_sql

    categories: dict[str, str] = {}
    for item in category or []:
        key, sep, label = item.partition("=")
        if not sep or not key.strip() or not label.strip():
            fail(f"--category takes CATEGORY=LABEL, e.g. hallucination=bad (got {item!r})", 2)
        categories[key.strip()] = label.strip()
    fields = {
        "project": project, "name": name, "kind": kind, "range": range_,
        "bad_at_most": bad_at_most, "good_at_least": good_at_least, "categories": categories,
        "description": description, "one_vote_per_user": one_vote_per_user,
    }  # fmt: skip
    try:
        config = ScoreConfig.parse({k: v for k, v in fields.items() if v is not None})
    except InvalidEvent as exc:
        fail(f"{exc.reason}\nnothing was stored.", 2)
    settings = store_settings()
    stored, added = put_config(sandbox_sql(settings), settings.clickhouse_database, config)
    what = "stored as" if added else "unchanged: already"
    out.print(f"{name} ({project}): {what} version {stored.version}: {stored.describe()}")


@scores_app.command("apply", env=STORE)
def scores_apply(
    file: Annotated[Path, typer.Argument(help="A TOML ([[score]] tables) or JSON file.")],
) -> None:
    """Store every config of a file, each as a new version where it changed."""
    from thumbline.score_configs import apply_configs, load_file, sandbox_sql

    configs = load_file(file)  # ConfigError: the file, the config and the field at fault
    settings = store_settings()
    for config, added in apply_configs(
        sandbox_sql(settings), settings.clickhouse_database, configs
    ):
        what = "new version" if added else "unchanged, version"
        out.print(f"{config.name} ({config.project}): {what} {config.version}")


@scores_app.command("delete", env=STORE)
def scores_delete(
    name: Annotated[str, typer.Argument(help="The feedback name.")],
    project: Annotated[str, typer.Option(help="The project.")] = "default",
) -> None:
    """End a config: new feedback of the name gets the default derivation; rows keep theirs."""
    from thumbline.score_configs import delete_config, sandbox_sql

    settings = store_settings()
    version = delete_config(sandbox_sql(settings), settings.clickhouse_database, project, name)
    if version is None:
        fail(f"no score config {name!r} in project {project!r} (thumbline scores list)")
    out.print(f"deleted {name} ({project}) as version {version}")
