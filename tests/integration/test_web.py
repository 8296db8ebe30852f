"""The web pages in a real headless Chromium, against a running `thumbline up`.

One `thumbline up` for the module, fed through Kafka with half an hour of
feedback on two projects: steady models, one spike of bad feedback on one
model (its alert fires through the real rates and rules), a comment that holds
markup. Chromium reaches nothing but loopback. Each test saves screenshots of
the pages it saw under build/test-artifacts/ (tests.browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from tests.browser import Page
from tests.integration.conftest import run, sql_rows, start_up, stop, until, worker_env
from thumbline.producers.kafka import FeedbackProducer
from thumbline.schemas import FeedbackEvent, TraceEvent

pytestmark = pytest.mark.integration

#: The spike: 9 of 10 bad on web-a's m-spike in the minute the module starts (0 minutes ago),
#: so that its window completes live, as a real spike's does, and its alert fires; half an
#: hour of steady feedback before it is sent at once (a backfill, whose windows the stream
#: may complete before their rows arrive: it corrects their rates, but judges no alert).
SPIKE_MINUTES_AGO = 0
#: What a comment that holds markup must stay: text on the page, never markup.
MARKUP = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
RULES = """
[[rule]]
name = "web-spike"
dimensions = "model"
window = 60
baseline = 900
min_total = 5
min_bad = 5
threshold = 0.5
resolve_after = 2
cooldown = 600
"""


@dataclass
class Site:
    url: str
    env: dict[str, str]
    bin: str
    keys: dict[str, str]  # "a", "b": read keys of web-a, web-b; "all": an admin key
    spike_start: float  # unix seconds of the spike's window

    def sql(self, query: str) -> list[dict]:
        return sql_rows(self.bin, self.env, query)


def _events(now: float) -> tuple[list[TraceEvent], list[FeedbackEvent]]:
    """Half an hour of one-minute windows until two minutes ago: 6 feedback a minute per
    model, 1 of them bad; and the spike, 9 bad of 10 in the current minute, all before
    ``now``."""
    traces, feedback = [], []
    minute0 = int(now // 60) * 60
    for project, models in (("web-a", ("m-steady", "m-spike")), ("web-b", ("m-b",))):
        for ago in (*range(30, 1, -1), SPIKE_MINUTES_AGO):
            start = minute0 - ago * 60
            for model in models:
                spike = project == "web-a" and model == "m-spike" and ago == SPIKE_MINUTES_AGO
                if ago == SPIKE_MINUTES_AGO and not spike:
                    continue
                for i in range(10 if spike else 6):
                    at = start + (now - start) * i / 10 if spike else start + 3 + i * 5
                    ts = datetime.fromtimestamp(at, UTC)
                    trace_id = f"{project}-{model}-{ago}-{i}"
                    traces.append(TraceEvent(
                        trace_id=trace_id, project=project, environment="prod", model=model,
                        capability="answer", name="answer", user_id=f"user-{i % 3}",
                        session_id=f"session-{ago}", start_time=ts,
                        end_time=datetime.fromtimestamp(at + 1.2, UTC),
                        input=f"Where is my order {ago}-{i}?",
                        output=f"Your order {ago}-{i} ships tomorrow.",
                    ))  # fmt: skip
                    bad = i < 9 if spike else i == 0
                    comment = (
                        f"secret of b {ago}" if project == "web-b" and bad
                        else f"spike comment {i}" if spike and bad
                        else f"wrong answer {ago}" if bad
                        else None
                    )  # fmt: skip
                    feedback.append(FeedbackEvent(
                        event_id=f"fb-{trace_id}", trace_id=trace_id, project=project,
                        kind="thumb", value="down" if bad else "up", comment=comment,
                        user_id=f"user-{i % 3}", session_id=f"session-{ago}",
                        ts=datetime.fromtimestamp(at + (0.001 if spike else 2), UTC),
                    ))  # fmt: skip
    traces.append(TraceEvent(trace_id="web-a-markup", project="web-a", environment="prod",
                             model="m-steady", capability="answer", name="answer",
                             start_time=datetime.fromtimestamp(minute0 - 95, UTC)))  # fmt: skip
    feedback.append(FeedbackEvent(
        event_id="fb-markup", trace_id="web-a-markup", project="web-a", kind="thumb",
        value="down", comment=MARKUP, ts=datetime.fromtimestamp(minute0 - 90, UTC),
    ))  # fmt: skip
    return traces, feedback


@contextlib.asynccontextmanager
async def running_site(
    broker, thumbline_bin: str, clean_env: dict[str, str], tmp: Path, *,
    events: Callable[[float], tuple[list[TraceEvent], list[FeedbackEvent]]],
    last: FeedbackEvent, keys: dict[str, tuple[str, ...]],
    stored: Callable[[Site, int], bool], in_time_order: bool = True,
) -> AsyncIterator[Site]:  # fmt: skip
    """`thumbline up` with :data:`RULES`, fed ``events(now)`` through Kafka and then ``last``
    (an event now moves the watermark past every window above), with read keys made by
    ``keys`` (name: `keys create` options); yielded once ``stored(site, feedback count)``,
    stopped on the way out."""
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    env = await worker_env(broker, clean_env, tmp, tmp.name, THUMBLINE_ALERT_RULES=str(rules),
                           THUMBLINE_RATE_LATENESS_SECONDS="1")  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data", log=tmp / "up.log")
    try:
        now = time.time()
        traces, feedback = events(now)
        sent: list[TraceEvent | FeedbackEvent] = [*traces, *feedback]
        if in_time_order:  # each trace just before its feedback, as an application sends them
            sent.sort(key=lambda e: (e.ts if isinstance(e, FeedbackEvent) else e.start_time,
                                     isinstance(e, FeedbackEvent)))  # fmt: skip
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
        ) as kafka:
            await kafka.send_many(sent)
            await kafka.send(last)
        made = {}
        for name, options in keys.items():
            key = run(thumbline_bin, env, "keys", "create", *options)
            assert key.returncode == 0, key.stderr
            made[name] = key.stdout.strip()
        spike_start = (int(now // 60) - SPIKE_MINUTES_AGO) * 60
        site = Site(up.info.gateway_url, env, thumbline_bin, made, spike_start)

        async def ready() -> bool:
            return stored(site, len(feedback))

        if not await until(ready, timeout=120):
            counts = site.sql("SELECT join_status, count() AS n FROM thumbline.feedback FINAL "
                              "GROUP BY join_status")  # fmt: skip
            raise AssertionError(f"stored {counts} of {len(feedback)}, or not what it waits for")
        yield site
    finally:
        stop(up)


def joined(site: Site) -> int:
    return site.sql("SELECT count() AS n FROM thumbline.feedback FINAL "
                    "WHERE join_status = 'joined'")[0]["n"]  # fmt: skip


@pytest.fixture(scope="module")
async def site(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Site]:
    def stored(site: Site, feedback: int) -> bool:  # every row, and the half hour's rates
        before = site.sql(  # the last window of the half hour: 1 bad of 6
            "SELECT bad FROM thumbline.feedback_rates FINAL WHERE model = 'm-spike' AND "
            f"window_seconds = 60 AND toUnixTimestamp(window_start) = {site.spike_start - 120}"
        )
        return joined(site) >= feedback and [r["bad"] for r in before] == [1]

    async with running_site(
        broker, thumbline_bin, clean_env, tmp_path_factory.mktemp("web"), events=_events,
        last=FeedbackEvent(event_id="fb-now", trace_id="web-a-m-steady-2-1", project="web-a",
                           kind="thumb", value="up"),
        keys={"a": ("--scope", "read", "--project", "web-a"),  # read keys have a project
              "b": ("--scope", "read", "--project", "web-b"), "all": ("--scope", "admin")},
        stored=stored,
    ) as site:  # fmt: skip
        yield site


@pytest.fixture
def page(browser: Page) -> Page:
    """A headless Chromium tab that reaches loopback only (tests.browser)."""
    return browser


async def click_at(page: Page, x: float, y: float) -> None:
    """A left click at a point of the viewport, as a mouse would (over a chart's canvas)."""
    await page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    for kind in ("mousePressed", "mouseReleased"):
        await page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                        clickCount=1)  # fmt: skip


async def open_as(page: Page, site: Site, key: str, path: str) -> None:
    """Open ``path`` as a person who entered ``key`` in this tab."""
    await page.goto(f"{site.url}/assets/icon.svg")  # the origin, to reach its sessionStorage
    await page.eval(f"sessionStorage.setItem('thumbline.key', {orjson.dumps(key).decode()})")
    await page.goto(f"{site.url}{path}")


async def rows_shown(page: Page) -> list[str]:
    return await page.eval("[...document.querySelectorAll('tr.row')].map(r => r.dataset.event)")


async def ready(page: Page, name: str) -> None:
    await page.wait_for(f"document.documentElement.dataset.ready === {orjson.dumps(name).decode()}")


async def test_the_key_is_asked_once_kept_in_the_tab_and_never_put_in_a_url(site, page, artifacts):
    await page.goto(f"{site.url}/")
    await ready(page, "key")
    await page.screenshot(artifacts / "key.png")
    await page.type("#key-input", site.keys["a"])
    await page.press("Enter")
    await ready(page, "inbox")
    assert await page.eval("sessionStorage.getItem('thumbline.key')") == site.keys["a"]
    assert await page.eval("document.getElementById('who').textContent") == "project web-a"
    await page.goto(f"{site.url}/rates")  # a new page load keeps the key of the tab
    await ready(page, "rates")
    assert site.keys["a"] not in " ".join(page.requests)
    # the one error: the first visit's question without a key, answered 401
    assert [p for p in page.problems if "401" not in p or "/v1/whoami" not in p] == []


async def test_a_wrong_key_is_refused_with_what_to_do(site, page):
    await open_as(page, site, "tl_not_a_key", "/")
    await ready(page, "key")
    message = await page.eval("document.querySelector('.keyform .error').textContent")
    assert "refused" in message and "read key" in message


async def test_the_inbox_filtered_to_bad_with_a_comment_shows_exactly_what_sql_finds(
    site, page, artifacts
):
    await open_as(page, site, site.keys["all"], "/")
    await ready(page, "inbox")
    await page.screenshot(artifacts / "inbox.png")
    await page.eval("document.querySelector('select[name=label]').value = 'bad'")
    await page.click("input[name=has_comment]")
    await page.click(".filters button[type=submit]")
    await page.wait_for("location.search.includes('label=bad')")
    await ready(page, "inbox")
    assert parse_qs(urlsplit(await page.eval("location.href")).query) == {
        "label": ["bad"],
        "has_comment": ["true"],
    }
    expected = site.sql(
        "SELECT event_id FROM thumbline.feedback FINAL WHERE label = 'bad' AND comment != '' "
        "AND retracted = 0 ORDER BY ts DESC, project DESC, event_id DESC LIMIT 100"
    )
    assert await rows_shown(page) == [r["event_id"] for r in expected]
    assert len(expected) > 30
    await page.screenshot(artifacts / "inbox-bad-with-comment.png", full_page=True)


async def test_a_comment_that_holds_markup_is_shown_as_text(site, page):
    await open_as(page, site, site.keys["a"], "/?trace_id=web-a-markup")
    await ready(page, "inbox")
    shown = await page.eval("document.querySelector('td.comment p').textContent")
    assert shown == MARKUP
    assert await page.eval("window.pwned === undefined && !document.querySelector('td img')")


async def test_one_click_opens_the_trace_with_its_spans_question_answer_and_feedback(
    site, page, artifacts
):
    trace = f"web-a-m-spike-{SPIKE_MINUTES_AGO}-0"
    await open_as(page, site, site.keys["a"], f"/?trace_id={trace}")
    await ready(page, "inbox")
    await page.click(f'a[href="/trace/{trace}"]')
    await ready(page, "trace")
    assert await page.eval("location.pathname") == f"/trace/{trace}"
    text = await page.eval("document.getElementById('view').innerText")
    assert f"Where is my order {SPIKE_MINUTES_AGO}-0?" in text
    assert f"Your order {SPIKE_MINUTES_AGO}-0 ships tomorrow." in text
    assert "spike comment 0" in text
    assert await page.eval("document.querySelectorAll('.timeline li').length") == 1
    assert await rows_shown(page) == [f"fb-{trace}"]
    await page.screenshot(artifacts / "trace.png", full_page=True)


async def test_clicking_the_spike_on_the_rates_chart_opens_the_inbox_of_that_window(
    site, page, artifacts
):
    await open_as(page, site, site.keys["a"], "/rates?since=1h")
    await ready(page, "rates")
    await page.wait_for("document.querySelector('#rate-chart').uplot !== undefined")
    await page.screenshot(artifacts / "rates.png", full_page=True)
    # the spike's point: where the chart draws m-spike's bad rate of the spike window
    point = await page.eval(f"""(() => {{
        const u = document.querySelector('#rate-chart').uplot;
        const k = u.series.findIndex(s => s.label && s.label.endsWith('m-spike'));
        const i = u.data[0].indexOf({site.spike_start});
        const box = u.over.getBoundingClientRect();
        return [box.left + u.valToPos(u.data[0][i], 'x'), box.top + u.valToPos(u.data[k][i], 'y'),
                u.data[k][i]];
    }})()""")
    assert point[2] == 90.0  # 9 bad of 10
    await click_at(page, point[0], point[1])
    await page.wait_for("location.pathname === '/'")
    await ready(page, "inbox")
    params = parse_qs(urlsplit(await page.eval("location.href")).query)
    start = datetime.fromtimestamp(site.spike_start, UTC)
    assert params == {
        "project": ["web-a"], "environment": ["prod"], "model": ["m-spike"], "label": ["bad"],
        "from": [start.isoformat(timespec="milliseconds").replace("+00:00", "Z")],
        "to": [datetime.fromtimestamp(site.spike_start + 60, UTC)
               .isoformat(timespec="milliseconds").replace("+00:00", "Z")],
    }  # fmt: skip
    assert sorted(await rows_shown(page)) == sorted(
        f"fb-web-a-m-spike-{SPIKE_MINUTES_AGO}-{i}" for i in range(9)
    )
    await page.screenshot(artifacts / "inbox-from-rates.png", full_page=True)


async def test_the_alerts_page_shows_the_spike_with_its_samples_and_inbox_link(
    site, page, artifacts
):
    async def fired() -> bool:
        return bool(site.sql("SELECT alert_id FROM thumbline.alerts FINAL WHERE model = 'm-spike'"))

    # its window completes a minute after the module started, and is judged then
    assert await until(fired, timeout=150), "the spike's alert did not fire"
    await open_as(page, site, site.keys["a"], "/alerts")
    await ready(page, "alerts")
    await page.screenshot(artifacts / "alerts.png", full_page=True)
    text = await page.eval("document.getElementById('view').innerText")
    assert "m-spike" in text and "spike comment" in text
    await page.click("article.alert a.inbox-link")
    await ready(page, "inbox")
    shown = await rows_shown(page)
    assert all(e.startswith("fb-web-a-m-spike-") for e in shown)
    assert {f"fb-web-a-m-spike-{SPIKE_MINUTES_AGO}-{i}" for i in range(9)} <= set(shown)


async def test_a_read_key_of_project_a_sees_nothing_of_b_on_any_page(site, page):
    for path in ("/", "/rates?since=1h", "/alerts", "/?label=bad&limit=1000"):
        await open_as(page, site, site.keys["a"], path)
        await ready(page, urlsplit(path).path.strip("/") or "inbox")
        text = await page.eval("document.body.innerText")
        assert "web-b" not in text and "secret of b" not in text and "m-b" not in text, path
    await open_as(page, site, site.keys["a"], "/trace/web-b-m-b-3-0")
    await ready(page, "trace")
    assert "secret of b" not in await page.eval("document.body.innerText")


async def test_every_page_loads_from_loopback_only_without_errors_and_fits_a_phone(
    site, page, artifacts
):
    for path in ("/", "/trace/web-a-m-steady-5-0", "/rates?since=1h", "/alerts", "/docs"):
        await open_as(page, site, site.keys["a"], path)
        if path != "/docs":
            await ready(page, urlsplit(path).path.strip("/").split("/")[0] or "inbox")
    assert page.requests and all(urlsplit(u).hostname == "127.0.0.1" for u in page.requests
                                 if urlsplit(u).scheme in ("http", "https"))  # fmt: skip
    assert not page.problems
    await page.viewport(390, 844, mobile=True)
    for path in ("/", "/rates?since=1h", "/alerts"):
        await open_as(page, site, site.keys["a"], path)
        await ready(page, urlsplit(path).path.strip("/") or "inbox")
        width = await page.eval("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} scrolls sideways on a phone: {width}"
        await page.screenshot(artifacts / f"phone-{urlsplit(path).path.strip('/') or 'inbox'}.png")


async def test_new_feedback_appears_in_the_open_inbox_without_a_reload(site, page, broker):
    await open_as(page, site, site.keys["a"], "/?since=1h")
    await ready(page, "inbox")
    await page.eval("window.sameDocument = true")
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=site.env["THUMBLINE_TOPIC_PREFIX"]
    ) as kafka:
        await kafka.send(FeedbackEvent(event_id="fb-live", trace_id="web-a-m-steady-3-2",
                                       project="web-a", kind="thumb", value="down",
                                       comment="arrived while I watched"))  # fmt: skip
    await page.wait_for("document.querySelector('tr.row[data-event=\"fb-live\"]') !== null",
                        timeout=60)  # fmt: skip
    assert await page.eval("window.sameDocument === true")
    assert (await rows_shown(page))[0] == "fb-live"


async def test_the_keyboard_moves_between_rows_and_opens_a_trace(site, page):
    await open_as(page, site, site.keys["a"], "/?model=m-steady")
    await ready(page, "inbox")
    first, second = (await rows_shown(page))[:2]
    await page.eval("document.querySelector('tr.row[tabindex=\"0\"]').focus()")
    await page.press("ArrowDown")
    assert await page.eval("document.activeElement.dataset.event") == second
    trace = await page.eval("document.activeElement.dataset.trace")
    await page.press("Enter")
    await ready(page, "trace")
    assert await page.eval("location.pathname") == f"/trace/{trace}"
    assert first != second


async def test_an_empty_inbox_says_how_to_send_feedback(site, page):
    await open_as(page, site, site.keys["a"], "/?model=no-such-model")
    await ready(page, "inbox")
    text = await page.eval("document.getElementById('view').innerText")
    assert "No feedback matches these filters" in text


@pytest.mark.slow  # a `thumbline up --demo` of its own: most of a minute
async def test_a_new_user_of_the_demo_sees_feedback_arrive_and_a_bad_rate_chart_within_a_minute(
    broker, thumbline_bin, clean_env, tmp_path, page
):
    env = await worker_env(broker, clean_env, tmp_path, "webdemo")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data", "--demo")
    try:
        # the chart waits for nothing the stream completes: its first minute is drawn as counted
        await page.goto(f"{up.info.gateway_url}/rates?since=1h")
        chart = "document.querySelector('#rate-chart') !== null"
        await page.wait_for(f"document.documentElement.dataset.ready === 'rates' && {chart}",
                            timeout=60)  # fmt: skip
        assert await page.eval("document.querySelector('#rate-chart').uplot.series.length") > 1
        await page.goto(f"{up.info.gateway_url}/")
        await ready(page, "inbox")
        await page.wait_for("document.querySelectorAll('tr.row').length > 0", timeout=10)
        up.proc.send_signal(signal.SIGTERM)
        said, _ = await asyncio.to_thread(up.proc.communicate, timeout=30)
        assert f"web         {up.info.gateway_url}/  (inbox, trace, rates, alerts)" in said
        assert f"see them: {up.info.gateway_url}/ or thumbline inbox" in said
    finally:
        stop(up)
