"""Reads on a 10M-row store in chDB: the inbox, a trace, the rates chart, the rates job's.

Fills a fresh chDB path (``bench/web_store.py``: ``INSERT ... SELECT ... FROM
numbers(N)``, a week of feedback, its traces, rates and alerts), then stores a
second version of one event in twenty (its label flipped, one version higher), so
``FINAL`` has versions to merge as it does between merges. Each read runs once to
warm up, then ``--runs`` times; where a read has an old and a new form they run
in turn, in the same process, on the same parts. Medians in milliseconds.

Run: ``python bench/store_reads.py`` (10M rows: about 3-9 minutes to fill on 2
cores; ``--keep DIR`` keeps the store and reuses it). The store is in a temporary
folder, removed at the end, unless ``--keep`` names one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from clickhouse_connect.driver.client import Client

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit  # noqa: E402
from web_store import BIG_PROJECT, fill, settle  # noqa: E402

from thumbline.charts import RatesFilter, rates_series_sql  # noqa: E402
from thumbline.inbox import InboxFilter, inbox_sql  # noqa: E402
from thumbline.settings import Settings  # noqa: E402
from thumbline.store import apply_migrations, open_client  # noqa: E402
from thumbline.stream_jobs.rates_store import _WINDOW_COUNTS  # noqa: E402

FILLED = "store_reads.json"


def newest_sql(database: str, columns: str, during: str) -> str:
    """The rates job's reads without FINAL, tried and dropped (BENCHMARKS.md, "Reads on 10M
    rows"): the identities of the events with a stored row ``during`` (a condition on
    ``ts``), then each one's newest version by identity (``LIMIT 1 BY`` on ``version``).
    Exact (an event whose newest version is in the range has that row in it; filter on
    the range again after), faster than FINAL between merges, 2-5x slower once the table
    is merged."""
    found = f"SELECT project, event_id FROM {database}.feedback WHERE {during}"  # noqa: S608
    return (
        f"SELECT {columns}, retracted FROM {database}.feedback "  # noqa: S608
        f"WHERE event_id IN (SELECT event_id FROM ({found})) "
        f"AND (project, event_id) IN ({found}) "
        "ORDER BY version DESC, inserted_at DESC LIMIT 1 BY project, event_id"
    )


def add_versions(client: Client, db: str) -> int:
    """A second version of one event in twenty: the label flipped, the version one higher."""
    client.command(
        f"INSERT INTO {db}.feedback SELECT * REPLACE (if(label = 'bad', 'good', 'bad') AS "  # noqa: S608
        "label, if(label = 'bad', 1., 0.) AS score, version + 1 AS version, now64(3) AS "
        f"inserted_at) FROM {db}.feedback WHERE cityHash64(event_id) % 20 = 0 "
        "SETTINGS insert_deduplicate = 0"
    )
    settle(client, db)
    return int(client.query(f"SELECT count() FROM {db}.feedback").result_rows[0][0])  # noqa: S608


def prepare(data_dir: Path, feedback: int, days: int) -> Settings:
    settings = Settings(data_dir=data_dir)
    wanted = {"feedback": feedback, "days": days, "versions": 20}
    marker = data_dir / FILLED
    if marker.exists() and orjson.loads(marker.read_bytes()) == wanted:
        print(f"reusing the store in {data_dir}")
        return settings
    if data_dir.exists():
        shutil.rmtree(data_dir)
    client = open_client(settings)
    try:
        db = settings.clickhouse_database
        apply_migrations(client, db)
        start = time.perf_counter()
        print(fill(client, db, feedback=feedback, days=days))
        print(f"filled in {time.perf_counter() - start:.0f} s; stored rows of feedback with "
              f"the second versions: {add_versions(client, db):,}")  # fmt: skip
    finally:
        client.close()
    marker.write_bytes(orjson.dumps(wanted))
    return settings


def timed(client: Client, query: tuple[str, dict]) -> tuple[float, int]:
    start = time.perf_counter()
    rows = client.query(query[0], parameters=query[1]).result_rows
    return (time.perf_counter() - start) * 1000, len(rows)


def reads(db: str, client: Client) -> list[tuple[str, dict[str, Callable[[], tuple[str, dict]]]]]:
    """Each read: its name, and its forms (old, new; or one) as queries."""
    now = datetime.now(UTC)

    def inbox(candidates: int | None, **filters: object) -> Callable[[], tuple[str, dict]]:
        def make() -> tuple[str, dict]:
            q = inbox_sql(db, InboxFilter(**filters), now, extra=1, candidates=candidates)  # type: ignore[arg-type]
            return q.text, q.parameters

        return make

    def both(**filters: object) -> dict[str, Callable[[], tuple[str, dict]]]:
        return {"FINAL": inbox(0, **filters), "candidates": inbox(None, **filters)}

    user, trace = client.query(
        f"SELECT user_id, trace_id FROM {db}.feedback WHERE project = '{BIG_PROJECT}' "  # noqa: S608
        "ORDER BY ts DESC LIMIT 1"
    ).result_rows[0]
    chart = RatesFilter(
        project=BIG_PROJECT, window_seconds=60, start=now - timedelta(days=7), end=now,
    )  # fmt: skip
    series = rates_series_sql(db, chart, (60, 300, 3600))
    return [
        (f"inbox {BIG_PROJECT}, 50 rows", both(project=BIG_PROJECT, limit=50)),
        (f"inbox {BIG_PROJECT}, 1,000 rows", both(project=BIG_PROJECT, limit=1000)),
        (f"inbox {BIG_PROJECT}, label bad + comment, 1,000 rows",
         both(project=BIG_PROJECT, labels=("bad",), has_comment=True, limit=1000)),
        (f"inbox {BIG_PROJECT}, one user, 50 rows",
         both(project=BIG_PROJECT, user_id=user, limit=50)),
        ("inbox all projects (admin), 50 rows", both(limit=50)),
        ("trace: its feedback (inbox by trace_id)",
         both(project=BIG_PROJECT, trace_id=trace, limit=10_000)),
        ("trace: its spans (traces FINAL on the key)", {"": lambda: (
            f"SELECT * FROM {db}.traces FINAL WHERE trace_id = {{t:String}} "  # noqa: S608
            "AND project = {p:String} ORDER BY start_time", {"t": trace, "p": BIG_PROJECT})}),
        ("/v1/rates chart, 7 days of 60 s windows", {"": lambda: (series.text, series.parameters)}),
    ]  # fmt: skip


def rates_job_reads(db: str, client: Client) -> list[tuple[str, dict[str, Callable[[], None]]]]:
    """The rates job's reads of feedback, at the end of the stored data: a recompute, and
    the restart's replay; each with FINAL (as the job reads) and by identity (newest_sql)."""
    end = float(
        client.query(f"SELECT toUnixTimestamp(max(ts)) FROM {db}.feedback").result_rows[0][0]
    )  # noqa: S608, E501
    due = [end // 60 * 60 - 600]
    reach = 3600
    window = {"window": 60, "since": int((due[0] - reach + 60) * 1000),
              "until": int((due[0] + reach) * 1000), "annotators": ["end_user"]}  # fmt: skip
    old_counts = _WINDOW_COUNTS.replace("{db}", db)
    during = (
        "ts >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({until:Int64})"
    )
    counted = (
        "ts, project, environment, model, capability, label, source, comment, score, annotator, "
        "join_status"
    )
    new_counts = old_counts.replace(
        f"FROM {db}.feedback FINAL", f"FROM ({newest_sql(db, counted, during)})"
    )
    since = {"since": int((end - 600) * 1000)}
    old_replay = (
        "SELECT event_id, trace_id, version, ts, label, source, annotator, comment, score, "  # noqa: S608
        f"retracted, project, environment, model, capability FROM {db}.feedback FINAL "
        "WHERE ts >= fromUnixTimestamp64Milli({since:Int64}) AND join_status != 'pending'"
    )
    columns = "event_id, trace_id, version, ts, label, source, annotator, comment, score, " + (
        "project, environment, model, capability, join_status"
    )
    since_cut = "ts >= fromUnixTimestamp64Milli({since:Int64})"
    new_replay = (
        f"SELECT * EXCEPT join_status FROM ({newest_sql(db, columns, since_cut)}) "  # noqa: S608
        f"WHERE {since_cut} AND join_status != 'pending'"
    )
    return [
        ("rates recompute of one 60 s window (its 3600 s reach)", {
            "FINAL": lambda: client.query(old_counts, parameters=window) and None,
            "new": lambda: client.query(new_counts, parameters=window) and None,
        }),
        ("rates restart: replay of the last 10 minutes", {
            "FINAL": lambda: client.query(old_replay, parameters=since) and None,
            "new": lambda: client.query(new_replay, parameters=since) and None,
        }),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep the store in this folder (and reuse it)")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="thumbline-reads-")) / "data"
    try:
        settings = prepare(data_dir, args.feedback, args.days)
        client = open_client(settings)
        db = settings.clickhouse_database
        settle(client, db)
        parts = client.query(
            "SELECT count() FROM system.parts WHERE database = {db:String} "
            "AND table = 'feedback' AND active", parameters={"db": db},
        ).result_rows[0][0]  # fmt: skip
        print(f"commit {git_commit()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              f"{args.feedback:,} feedback rows, {parts} active parts")  # fmt: skip
        print("| read | FINAL ms | without FINAL ms | rows |\n|---|---|---|---|")
        for name, forms in reads(db, client):
            times: dict[str, list[float]] = {form: [] for form in forms}
            found: dict[str, int] = {}
            for form, make in forms.items():
                found[form] = timed(client, make())[1]  # warm up
            for _ in range(args.runs):
                for form, make in forms.items():
                    times[form].append(timed(client, make())[0])
            if len(set(found.values())) != 1:
                raise SystemExit(f"{name}: the forms found {found} rows")
            med = {form: statistics.median(t) for form, t in times.items()}
            cells = [f"{med[f]:,.0f}" for f in forms] + ([""] if len(forms) == 1 else [])
            print(f"| {name} | {' | '.join(cells)} | {next(iter(found.values())):,} |")
        for name, runs in rates_job_reads(db, client):
            ms: dict[str, list[float]] = {form: [] for form in runs}
            for run in runs.values():
                run()  # warm up
            for _ in range(args.runs):
                for form, run in runs.items():
                    start = time.perf_counter()
                    run()
                    ms[form].append((time.perf_counter() - start) * 1000)
            cells = " | ".join(f"{statistics.median(m):,.0f}" for m in ms.values())
            print(f"| {name} | {cells} | |")
        client.close()
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
