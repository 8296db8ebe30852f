"""The web pages' speed, measured in the browser, on a store of a week of feedback.

Issue 17's target: the inbox renders 1,000 rows and the rates page 7 days of
1-minute windows in well under a second with a store of 1M feedback rows.

One invocation:

1. a fresh data dir: ``thumbline migrate``, then the store is filled in this
   process with chDB (``bench/web_store.py``: ``INSERT ... SELECT ... FROM
   numbers(N)``), its counts printed, and the client closed (one process owns
   a chDB path);
2. a read key of the big project, ``thumbline gateway`` on that data dir with
   the embedded broker, ready (``/readyz``);
3. Debian's Chromium (headless, ``tests/browser.py``) opens each page with the
   key in the tab's sessionStorage; the first load is cold (a new browser, a
   gateway that never ran the query), then ``--runs`` warm loads. A load is
   timed by the browser itself: navigation start to the page's
   ``performance.mark('thumbline:ready:<page>')`` (set when drawn), split into
   *before* (the document, the scripts and ``/v1/whoami`` until the page's API
   request starts), *api* (that request's Resource Timing, requestStart to
   responseEnd: the gateway, chDB and the transfer) and *after* (parsing the
   JSON and drawing). The rows drawn (``data-rows``) are checked.
4. the same API requests alone, from aiohttp with the same key (``--runs``
   times), and their sizes raw and gzipped.

    python bench/web.py                                # 1M feedback, 7 runs
    python bench/web.py --feedback 20000 --runs 2      # a quick look
    python bench/web.py --keep /tmp/webstore           # keep the data dir; reuse it next time
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import embedded_broker, git_commit, wait_ready  # noqa: E402
from web_store import BIG_PROJECT, counts, fill  # noqa: E402

from tests.browser import Page, open_page  # noqa: E402
from thumbline.broker import free_port  # noqa: E402
from thumbline.kafka import ensure_topics  # noqa: E402
from thumbline.schemas import Topics  # noqa: E402
from thumbline.settings import Settings  # noqa: E402
from thumbline.store import open_client  # noqa: E402

#: A data dir ``--keep`` may reuse: filled with these sizes.
FILLED = "bench-web-filled.json"


@dataclass(frozen=True, slots=True)
class Load:
    """One page load as the browser timed it, in milliseconds from navigation start."""

    ready: float  # the page's ready mark
    whoami: float  # the /v1/whoami request the page makes first (in ``before``)
    api_start: float  # its API request's requestStart
    api_end: float  # ... and responseEnd
    rows: int  # what the page says it drew (data-rows)
    api_url: str  # the request, to replay it alone
    transfer: int  # bytes on the wire (headers included)
    body: int  # the body as it came (gzip or not)
    decoded: int  # the body decoded

    @property
    def before(self) -> float:
        return self.api_start

    @property
    def api(self) -> float:
        return self.api_end - self.api_start

    @property
    def after(self) -> float:
        return self.ready - self.api_end


@dataclass(slots=True)
class Measured:
    """A page's loads: the cold one and the warm ones."""

    name: str
    path: str
    cold: Load | None = None
    warm: list[Load] = field(default_factory=list)
    api_alone: list[float] = field(default_factory=list)  # ms, aiohttp
    raw_bytes: int = 0
    gzip_bytes: int = 0
    sent_gzip: bool = False


def summary(values: list[float]) -> tuple[float, float]:
    """(median, worst) of ``values``."""
    return statistics.median(values), max(values)


# The timings of the page's load, read in the page once it is drawn.
_TIMINGS = """(() => {
  const page = document.documentElement.dataset.ready;
  const mark = performance.getEntriesByName(`thumbline:ready:${page}`)[0];
  const api = performance.getEntriesByType('resource')
    .filter((r) => r.name.includes(%s)).pop();
  const who = performance.getEntriesByType('resource')
    .filter((r) => r.name.includes('/v1/whoami')).pop();
  return { page, rows: Number(document.documentElement.dataset.rows || 0),
           ready: mark ? mark.startTime : null,
           whoami: who ? who.responseEnd - who.requestStart : null,
           api: api ? { name: api.name, requestStart: api.requestStart,
                        responseEnd: api.responseEnd, transfer: api.transferSize,
                        body: api.encodedBodySize, decoded: api.decodedBodySize } : null };
})()"""


# Every request of the page's last load, and its ready mark: (path, start, end) in ms.
_WATERFALL = """(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const out = [['(document) ' + new URL(nav.name).pathname, nav.requestStart, nav.responseEnd],
               ['(DOMContentLoaded)', nav.domContentLoadedEventEnd, nav.domContentLoadedEventEnd]];
  for (const r of performance.getEntriesByType('resource'))
    out.push([new URL(r.name).pathname, r.startTime, r.responseEnd]);
  for (const m of performance.getEntriesByType('mark'))
    out.push([m.name, m.startTime, m.startTime]);
  return out.sort((a, b) => a[1] - b[1]);
})()"""


async def load(page: Page, base: str, path: str, name: str, api: str) -> Load:
    """Open ``path`` and wait until the page ``name`` is drawn; its timings.

    Raises:
        SystemExit: the page drew something else (the key form, an error) or never finished.
    """
    await page.goto(f"{base}{path}", timeout=60)
    await page.wait_for("document.documentElement.dataset.ready", timeout=60)
    got = await page.eval(_TIMINGS % orjson.dumps(api).decode())
    if got["page"] != name or got["ready"] is None or got["api"] is None:
        raise SystemExit(f"{path}: the page drew {got['page']!r}, not {name!r}: {got}; "
                         f"problems in the page: {page.problems[-3:]}")  # fmt: skip
    a = got["api"]
    return Load(
        ready=got["ready"], whoami=got["whoami"] or 0.0, api_start=a["requestStart"],
        api_end=a["responseEnd"], rows=got["rows"], api_url=a["name"], transfer=a["transfer"],
        body=a["body"], decoded=a["decoded"],
    )  # fmt: skip


async def api_alone(http: aiohttp.ClientSession, url: str, key: str, runs: int) -> list[float]:
    """``url`` fetched ``runs`` times with the key, as the page asks it (gzip accepted); ms."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json",
               "Accept-Encoding": "gzip, deflate"}  # fmt: skip
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        async with http.get(url, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise SystemExit(f"{url}: {r.status} {await r.text()}")
        out.append((time.perf_counter() - start) * 1000)
    return out


async def sizes(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, int, bool]:
    """(the body's bytes, gzipped at level 6, whether the gateway sent it gzipped)."""
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"}
    async with http.get(url, headers=headers, auto_decompress=False) as r:
        sent = await r.read()
        gzipped = r.headers.get("Content-Encoding") == "gzip"
    raw = gzip.decompress(sent) if gzipped else sent
    return len(raw), len(gzip.compress(raw, compresslevel=6)), gzipped


def prepare(data_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, int]:
    """Migrate and fill the store in ``data_dir`` (or reuse one ``--keep`` filled alike)."""
    settings = Settings(data_dir=data_dir)
    marker = data_dir / FILLED
    wanted = {"feedback": args.feedback, "days": args.days}
    thumbline = str(Path(sys.executable).parent / "thumbline")
    if marker.exists() and orjson.loads(marker.read_bytes()) == wanted:
        print(f"reusing the store in {data_dir} ({args.feedback:,} feedback, {args.days} days)")
        client = open_client(settings)
        try:
            return counts(client, settings.clickhouse_database)
        finally:
            client.close()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    subprocess.run([thumbline, "migrate"], env=env, check=True, capture_output=True)  # noqa: S603
    client = open_client(settings)
    try:
        start = time.perf_counter()
        found = fill(client, settings.clickhouse_database, feedback=args.feedback, days=args.days)
        print(f"filled the store in {time.perf_counter() - start:.1f} s")
    finally:
        client.close()  # the gateway opens the path next: one process at a time
    marker.write_bytes(orjson.dumps(wanted))
    return found


def new_key(env: dict[str, str], *args: str) -> str:
    thumbline = str(Path(sys.executable).parent / "thumbline")
    return subprocess.run(  # noqa: S603
        [thumbline, "keys", "create", *args], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[0]


async def measure(args: argparse.Namespace, folder: Path) -> tuple[dict[str, int], list[Measured]]:
    data_dir = args.keep or folder / "data"
    with embedded_broker("memory", folder) as broker:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("THUMBLINE_")},
            "THUMBLINE_DATA_DIR": str(data_dir), "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "THUMBLINE_GATEWAY_PORT": str(port),
        }  # fmt: skip
        found = prepare(data_dir, args, env)
        for name, value in found.items():
            print(f"  {name}: {value:,}")
        key = new_key(env, "--scope", "read", "--project", BIG_PROJECT, "--name", "bench")
        new_key(env, "--scope", "admin", "--name", "bench admin")
        await ensure_topics(broker.bootstrap, Topics.build("thumbline.", 8).all())
        log = (folder / "gateway.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603, ASYNC220
            [str(Path(sys.executable).parent / "thumbline"), "gateway"], env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, 60)
            pages = await browse(args, base, key, folder)
        finally:
            proc.terminate()
            proc.wait(30)  # noqa: ASYNC221
            log.close()
    return found, pages


async def browse(args: argparse.Namespace, base: str, key: str, folder: Path) -> list[Measured]:
    async with aiohttp.ClientSession() as http:
        async with http.get(  # a trace of the big project, for the trace page
            f"{base}/v1/feedback?limit=1&has_comment=true",
            headers={"Authorization": f"Bearer {key}"},
        ) as r:  # fmt: skip
            trace = (await r.json())[0]["trace_id"]
    pages = [
        Measured("inbox", "/?limit=1000"),
        Measured("inbox", "/?limit=1000&label=bad&has_comment=true"),
        Measured("rates", f"/rates?since={args.days}d&window=60"),
        Measured("trace", f"/trace/{trace}"),
        Measured("alerts", "/alerts"),
    ]
    api_of = {"inbox": "/v1/feedback", "rates": "/v1/rates", "trace": "/v1/traces/",
              "alerts": "/v1/alerts"}  # fmt: skip
    async with open_page(args.chromium, folder / "chromium") as page:
        await page.viewport(1440, 900)
        await page.goto(f"{base}/assets/icon.svg")  # the origin, to reach its sessionStorage
        await page.eval(f"sessionStorage.setItem('thumbline.key', {orjson.dumps(key).decode()})")
        for one in pages:
            runs = args.runs if one.name in ("inbox", "rates") else 1
            one.cold = await load(page, base, one.path, one.name, api_of[one.name])
            for _ in range(runs):
                one.warm.append(await load(page, base, one.path, one.name, api_of[one.name]))
            if one is pages[0]:
                waterfall = await page.eval(_WATERFALL)
            print(f"  {one.path}: cold {one.cold.ready:.0f} ms, warm "
                  f"{statistics.median(w.ready for w in one.warm):.0f} ms, "
                  f"{one.cold.rows:,} rows")  # fmt: skip
        if page.problems:
            print(f"problems in the pages: {page.problems}")
    print(f"\nWhere a warm load of {pages[0].path} spends its time (ms from navigation start):\n")
    print("| request | start | end |")
    print("|---|---|---|")
    for name, begin, end in waterfall:
        print(f"| `{name}` | {begin:.0f} | {end:.0f} |")
    async with aiohttp.ClientSession() as http:
        for one in pages:
            assert one.cold is not None  # noqa: S101
            url = one.cold.api_url
            one.raw_bytes, one.gzip_bytes, one.sent_gzip = await sizes(http, url, key)
            one.api_alone = await api_alone(http, url, key, max(args.runs, 1))
    return pages


def check(pages: list[Measured], args: argparse.Namespace, found: dict[str, int]) -> None:
    """The rows drawn are the rows asked for: else the measure is of something else."""
    inbox = pages[0]
    assert inbox.cold is not None  # noqa: S101
    if inbox.cold.rows != min(1000, found[f"feedback of {BIG_PROJECT}"]):
        raise SystemExit(f"the inbox drew {inbox.cold.rows} rows, not 1,000")
    rates = pages[2]
    assert rates.cold is not None  # noqa: S101
    print(f"  the rates page drew {rates.cold.rows:,} points "
          f"({args.days} days of minutes: {args.days * 1440:,} per series)")  # fmt: skip


def table(pages: list[Measured]) -> None:
    print(
        "\n| page | median ms | worst ms | cold ms | before api (whoami) | api | after api | rows |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for one in pages:
        assert one.cold is not None  # noqa: S101
        med, worst = summary([w.ready for w in one.warm])
        parts = " | ".join(
            f"{statistics.median(getattr(w, part) for w in one.warm):.0f}"
            for part in ("before", "api", "after")
        ).replace(" | ", f" ({statistics.median(w.whoami for w in one.warm):.0f}) | ", 1)
        print(
            f"| {one.name} `{one.path}` | {med:.0f} | {worst:.0f} | "
            f"{one.cold.ready:.0f} (api {one.cold.api:.0f}) | "
            f"{parts} | {one.cold.rows:,} |"
        )
    print("\nThe API alone (aiohttp, same key and query, after the browser runs):\n")
    print("| request | median ms | worst ms | body raw | gzip -6 | sent gzipped |")
    print("|---|---|---|---|---|---|")
    for one in pages:
        assert one.cold is not None  # noqa: S101
        med, worst = summary(one.api_alone)
        path = one.cold.api_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
        print(
            f"| `/{path[:90]}` | {med:.0f} | {worst:.0f} | {one.raw_bytes / 1024:,.0f} KiB | "
            f"{one.gzip_bytes / 1024:,.0f} KiB | {'yes' if one.sent_gzip else 'no'} |"
        )


def chromium_version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True,  # noqa: S603
                          check=False).stdout.strip()  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog="The full run (1M feedback, 7 runs) takes about "
        "a minute on 2 cores: 12 s to fill the store, the rest in the browser; --keep reuses it.",
    )  # fmt: skip
    parser.add_argument("--feedback", type=int, default=1_000_000,
                        help="feedback rows in the store (default 1,000,000)")  # fmt: skip
    parser.add_argument("--days", type=int, default=7, help="the days they span (default 7)")
    parser.add_argument("--runs", type=int, default=7,
                        help="warm loads of the inbox and rates pages after the cold one "
                        "(default 7); the trace and alerts pages load once warm")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="the data dir to fill and keep; a DIR filled alike by an earlier "
                        "run is reused as it is (default: a temporary one, removed)")  # fmt: skip
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    args = parser.parse_args()
    if shutil.which(args.chromium) is None:
        raise SystemExit(f"{args.chromium} is missing: apt-get install chromium, or pass "
                         "--chromium PATH")  # fmt: skip
    if args.keep is not None:
        args.keep = args.keep.resolve()

    start, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        found, pages = await measure(args, Path(tmp))
    check(pages, args, found)
    today = f"{datetime.now(UTC):%Y-%m-%d}"
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, {today}, commit {git_commit()}, "
          f"{chromium_version(args.chromium)}, {args.feedback:,} feedback over {args.days} days, "
          f"{args.runs} warm runs; load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end (a shared machine: the neighbours' load is "
          "in the figures)")  # fmt: skip
    table(pages)
    print(f"\nthe whole run took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
