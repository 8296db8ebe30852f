"""The browser the web UI's tests drive (tests/browser.py): what it lets through, what it
reports, and that it is gone when the test is.

Each test serves its own small pages from an aiohttp app on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.browser import open_page
from thumbline.broker import free_port

Pages = dict[str, tuple[str, str]]  # path -> (content type, body)
HTML = "text/html"
JS = "text/javascript"


def lan_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # a UDP connect sends nothing: it picks the route
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


class Site:
    """Pages served on every address of the machine, and the paths it was asked for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.asked: list[str] = []
        self.pages: Pages = {}
        self.headers: dict[str, str] = {}


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    served = Site(free_port())

    async def handle(request: web.Request) -> web.Response:
        served.asked.append(request.path)
        if request.path not in served.pages:
            return web.Response(status=404)
        content_type, body = served.pages[request.path]
        return web.Response(text=body, content_type=content_type, headers=served.headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", served.port).start()  # noqa: S104 (the LAN test)
    yield served
    await runner.cleanup()


def offline_page(lan: str | None, port: int) -> Pages:
    """A page with three scripts: from its own server, from a CDN, and from this machine's
    network address; each marks the window when it runs."""
    beyond = f'<script src="http://{lan}:{port}/lan.js"></script>' if lan else ""
    return {
        "/": (HTML, f"""<!doctype html><title>offline</title>
            <script src="/local.js"></script>
            <script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">
            </script>{beyond}"""),
        "/local.js": (JS, "window.ran = (window.ran || []).concat('local');"),
        "/lan.js": (JS, "window.ran = (window.ran || []).concat('lan');"),
    }  # fmt: skip


async def test_loopback_only_loads_from_loopback_and_nothing_from_a_cdn_or_the_network(
    chromium_bin, tmp_path, site
):
    lan = lan_address()
    site.pages = offline_page(lan, site.port)
    async with open_page(chromium_bin, tmp_path / "c") as page:  # loopback_only by default
        await page.goto(f"{site.url}/")
        assert await page.eval("window.ran") == ["local"]
        assert "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js" in (
            page.requests
        )
        assert any("cdn.jsdelivr.net" in p for p in page.problems), page.problems
        if lan:
            assert any(f"{lan}:{site.port}/lan.js" in p for p in page.problems), page.problems
    assert "/lan.js" not in site.asked  # no connection reached this machine's address


async def test_without_loopback_only_the_same_page_reaches_the_network(
    chromium_bin, tmp_path, site
):
    """The counterpart of the test above: there, the harness is what stopped the request."""
    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no network address besides loopback")
    site.pages = offline_page(lan, site.port)
    async with open_page(chromium_bin, tmp_path / "c", loopback_only=False) as page:
        await page.goto(f"{site.url}/")
        assert await page.wait_for("window.ran.length === 2 && window.ran")
    assert "/lan.js" in site.asked


FORM = """<!doctype html><meta name="viewport" content="width=device-width">
<link rel="icon" href="data:,">
<title>form</title><style>body { margin: 0 } #spacer { height: 3000px }
#cover { position: fixed; top: 0; left: 0; width: 200px; height: 100px; background: #eee }</style>
<form id="f"><input id="q"><input id="next"><button id="go">go</button></form>
<button id="hidden-under" style="position: fixed; top: 10px; left: 10px">under</button>
<div id="cover">cover</div>
<div id="spacer"></div><button id="far">far</button>
<script src="/form.js"></script>"""
FORM_JS = """window.seen = [];
document.getElementById("f").addEventListener("submit", (e) => {
  e.preventDefault(); window.seen.push("submit " + document.getElementById("q").value);
});
document.addEventListener("keydown", (e) => window.seen.push("key " + e.key));
document.getElementById("far").addEventListener("click", (e) =>
  window.seen.push("far " + e.isTrusted + " " + (window.scrollY > 0)));
document.getElementById("hidden-under").addEventListener("click", () =>
  window.seen.push("under"));"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


async def test_a_user_types_presses_keys_and_clicks_and_the_page_sees_real_events(
    browser, site, artifacts
):
    site.pages = {"/": (HTML, FORM), "/form.js": (JS, FORM_JS)}
    await browser.viewport(800, 600)
    await browser.goto(f"{site.url}/")
    assert await browser.wait_for("document.querySelector('#q')") is True  # an element
    await browser.type("#q", "bad answers")
    await browser.press("Enter")
    await browser.press("Tab")
    assert await browser.eval("document.activeElement.id") == "next"
    await browser.press("Escape")
    await browser.press("ArrowDown")
    await browser.click("#far")  # below the fold: scrolled into view first
    assert await browser.eval("window.seen") == [
        "key Enter", "submit bad answers", "key Tab", "key Escape", "key ArrowDown",
        "far true true",
    ]  # fmt: skip
    with pytest.raises(AssertionError, match='covered by <div id="cover"'):
        await browser.click("#hidden-under", timeout=0.3)
    with pytest.raises(AssertionError, match="no-such within 0.3 s: missing"):
        await browser.click("#no-such", timeout=0.3)
    await browser.eval("setTimeout(() => document.getElementById('cover').remove(), 300)")
    await browser.click("#hidden-under")  # waits for the cover to go
    assert (await browser.eval("window.seen"))[-1] == "under"

    assert png_size(await browser.screenshot(artifacts / "view.png")) == (800, 600)
    width, height = png_size(await browser.screenshot(artifacts / "page.png", full_page=True))
    assert width == 800 and height > 3000
    await browser.viewport(390, 844, mobile=True)
    assert await browser.eval("[window.innerWidth, window.innerHeight]") == [390, 844]
    assert browser.problems == []


async def test_session_storage_set_on_an_origin_is_there_for_its_next_page(browser, site):
    site.pages = {"/": (HTML, "<title>a</title>"), "/b": (HTML, "<title>b</title>")}
    await browser.goto(f"{site.url}/")
    await browser.set_session_storage({"thumbline.key": "tl_read_x"})
    await browser.goto(f"{site.url}/b")
    assert await browser.eval("sessionStorage.getItem('thumbline.key')") == "tl_read_x"


async def test_problems_has_uncaught_errors_console_errors_and_csp_violations(browser, site):
    site.headers = {"Content-Security-Policy": "default-src 'self'"}
    site.pages = {
        "/": (HTML, """<!doctype html><title>broken</title>
            <script>window.inline = true;</script>
            <script src="/broken.js"></script>"""),
        "/broken.js": (JS, "console.error('the rates did not load');"
                           "setTimeout(() => { throw new Error('boom'); });"),
    }  # fmt: skip
    await browser.goto(f"{site.url}/")
    await browser.wait_for("true")
    problems = await _settled(browser.problems, 3)
    assert await browser.eval("window.inline === undefined")  # the CSP refused it
    assert any("Content Security Policy" in p and "inline" in p for p in problems), problems
    assert "console.error: the rates did not load" in problems
    assert any(p.startswith("uncaught: Error: boom") for p in problems), problems


async def _settled(problems: list[str], want: int) -> list[str]:
    """``problems`` once it has ``want`` entries (events arrive while the test waits)."""
    for _ in range(100):
        if len(problems) >= want:
            break
        await asyncio.sleep(0.05)
    return list(problems)


def chromium_processes(profile: Path) -> list[int]:
    """Processes whose command line names ``profile`` (the browser started for it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(profile).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("fails", [False, True], ids=["passes", "fails"])
async def test_the_browser_is_gone_when_its_test_ends(chromium_bin, tmp_path, fails):
    profile = tmp_path / "c"
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        async with open_page(chromium_bin, profile) as page:
            await page.goto("about:blank")
            assert chromium_processes(profile), "the browser runs while the test does"
            if fails:
                raise RuntimeError("the test failed")
    assert chromium_processes(profile) == []
