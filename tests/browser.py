"""Headless Chromium for the tests, driven over the DevTools protocol (CDP) with aiohttp.

    async with open_page(chromium_bin, profile_dir) as page:   # loopback_only=True
        await page.goto(f"{gateway}/docs")
        await page.wait_for("document.querySelector('.opblock')")
        await page.click("button.login")
        await page.screenshot(artifacts / "docs.png")
        assert page.problems == []

The fixtures in tests/integration/conftest.py (``chromium_bin``, ``browser``,
``artifacts``) give a test a page that is stopped with its test. One page per
browser: the lead's pages need no more, and one tab keeps the event stream simple.

Why CDP with aiohttp rather than Playwright: the tests need about fifteen protocol
calls, aiohttp is already a dependency, and Playwright-for-Python brings a Node.js
driver (its wheel is tens of MB) pinned to a Chromium revision of its own, while
these tests must run Debian's Chromium, whichever version it is.

A reader task reads the browser's messages all the time: answers go to the call
that waits for them, and events (requests, console errors, uncaught exceptions,
Content-Security-Policy violations) are collected while a test waits for anything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

#: Keys ``Page.press`` knows: name -> (code, Windows virtual key code, text it types).
KEYS: dict[str, tuple[str, int, str]] = {
    "Enter": ("Enter", 13, "\r"),
    "Tab": ("Tab", 9, ""),
    "Escape": ("Escape", 27, ""),
    "Backspace": ("Backspace", 8, ""),
    " ": ("Space", 32, " "),
    "ArrowDown": ("ArrowDown", 40, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
    "Home": ("Home", 36, ""),
    "End": ("End", 35, ""),
}

#: Every host but loopback fails to resolve, and every connection that is not to loopback
#: goes to a proxy that is not there (this also stops IP literals, which skip the resolver).
LOOPBACK_ONLY = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens there
    "--proxy-bypass-list=127.0.0.1;localhost",
]


def chromium_command(
    binary: str, profile: Path, port: int = 0, *, loopback_only: bool = True
) -> list[str]:
    """The command line of a headless Chromium with its DevTools port on ``port`` (0: any
    free port, written to ``DevToolsActivePort`` in ``profile``)."""
    return [
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--hide-scrollbars", "--force-color-profile=srgb",
        *(LOOPBACK_ONLY if loopback_only else []),
        f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def open_page(
    binary: str, profile: Path, *, loopback_only: bool = True, timeout: float = 20.0
) -> AsyncIterator[Page]:
    """Start Chromium and yield its one tab; the browser and every helper process it started
    are killed on the way out (its own process group), also when the test fails.

    Args:
        binary: the Chromium executable (``tests.conftest.system_tool``).
        profile: a fresh directory for its profile (cookies, storage, cache).
        loopback_only: True (the default) makes every request beyond 127.0.0.1 and
            localhost fail, as on a machine without network: a page that needs a CDN
            breaks in the test as it would for a user offline.
        timeout: how long Chromium may take to open its DevTools port.
    """
    # port 0: Chromium picks a free one and writes it to DevToolsActivePort in the profile,
    # so browsers started at once by parallel test runs never race for a port
    command = chromium_command(binary, profile, 0, loopback_only=loopback_only)
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        async with aiohttp.ClientSession() as http:
            target = await _first_tab(http, profile, proc, timeout)
            async with http.ws_connect(target, max_msg_size=0) as ws:
                page = Page(ws)
                try:
                    await page.start()
                    yield page
                finally:
                    await page.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes
        proc.wait()
        await _group_gone(proc.pid)


async def _group_gone(group: int, within: float = 10.0) -> None:
    """Wait until no live process of process group ``group`` is left: SIGKILL is delivered
    at once, but a helper with much memory takes a moment to exit (zombies waiting for
    their parent to reap them are dead and not counted). Linux; elsewhere it returns."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if not _live_members(group):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"processes {_live_members(group)} of Chromium outlived SIGKILL")


def _live_members(group: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # after the ")" closing the command name: state, ppid, pgrp, ...
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # exited while we looked
        if int(pgrp) == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


async def _first_tab(
    http: aiohttp.ClientSession, profile: Path, proc: subprocess.Popen[bytes], timeout: float
) -> str:
    """The DevTools WebSocket URL of the browser's first tab."""
    deadline = asyncio.get_running_loop().time() + timeout
    active = profile / "DevToolsActivePort"
    while asyncio.get_running_loop().time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"Chromium exited {proc.returncode} at start; to see why, run: "
                + " ".join(str(arg) for arg in proc.args)  # type: ignore[union-attr]
            )
        try:
            port = int(active.read_text().split()[0])  # noqa: ASYNC240 (a few bytes)
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                tabs = [t for t in await r.json() if t["type"] == "page"]
            if tabs:
                return str(tabs[0]["webSocketDebuggerUrl"])
        except (OSError, ValueError, IndexError, aiohttp.ClientError):
            pass  # not written yet, or not listening yet
        await asyncio.sleep(0.1)
    raise AssertionError(f"Chromium did not open its DevTools port in {timeout} s")


class Page:
    """One Chromium tab over the DevTools protocol.

    ``requests`` (every URL the page asked for, its own document included, in order;
    ``data:`` URLs left out) and
    ``problems`` (console errors, uncaught exceptions, failed loads and
    Content-Security-Policy violations, as text) are collected from the start and never
    cleared: assert on them, or on a slice taken after a step.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.requests: list[str] = []
        self.problems: list[str] = []

    async def start(self) -> None:
        """Read the browser's messages from now on and turn on the events the page collects."""
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Network", "Log"):
            await self.call(f"{domain}.enable")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if "id" in data:
                    answer = self._answers.pop(data["id"], None)
                    if answer is not None and not answer.done():
                        answer.set_result(data)
                else:
                    self._event(data["method"], data.get("params", {}))
        finally:  # the browser is gone: no call waits forever
            gone = AssertionError("the browser closed the DevTools connection")
            for future in [*self._answers.values(), *itertools.chain(*self._waiters.values())]:
                if not future.done():
                    future.set_exception(gone)

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            if not params["request"]["url"].startswith("data:"):  # inline, not a request
                self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"uncaught: {thrown}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            self.problems.append(f"console.error: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.problems.append(f"{entry['source']}: {entry['text']}{where}")
        for waiter in self._waiters.pop(method, []):
            if not waiter.done():
                waiter.set_result(params)

    def _expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(method, []).append(future)
        return future

    async def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """One DevTools protocol command (``Domain.method``); its result.

        Raises:
            AssertionError: the browser answered with an error, or not within ``timeout``.
        """
        call_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[call_id] = answer
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        try:
            data = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise AssertionError(f"{method}: no answer from the browser in {timeout} s") from None
        finally:
            self._answers.pop(call_id, None)
        if "error" in data:
            raise AssertionError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def goto(self, url: str, timeout: float = 20.0) -> None:
        """Open ``url`` and wait for its load event (scripts run, images and styles loaded).

        Raises:
            AssertionError: the page could not be reached (the network error is named), or
                did not finish loading within ``timeout``.
        """
        loaded = self._expect("Page.loadEventFired")
        result = await self.call("Page.navigate", url=url)
        if result.get("errorText"):
            loaded.cancel()
            raise AssertionError(f"{url}: {result['errorText']}")
        try:
            await asyncio.wait_for(loaded, timeout)
        except TimeoutError:
            raise AssertionError(f"{url} did not finish loading in {timeout} s") from None

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited); JSON values
        only (a DOM node comes back as ``{}``).

        Raises:
            AssertionError: the expression threw (its message is in the error).
        """
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise AssertionError(f"{expression!r} threw in the page: {thrown}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate ``expression`` every 0.1 s until it is truthy; its value (True for a DOM
        node, so ``wait_for("document.querySelector('.row')")`` waits for an element).

        Raises:
            AssertionError: still falsy after ``timeout`` seconds (with the last value).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        node_as_true = f"(() => {{ const v = ({expression}); return v instanceof Node || v; }})()"
        while True:
            value = await self.eval(node_as_true)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"never true in the page within {timeout} s: {expression} (last: {value!r})"
                )
            await asyncio.sleep(0.1)

    async def click(self, selector: str, timeout: float = 5.0) -> None:
        """Click the first element matching ``selector`` as a user would: scroll it into view,
        then move, press and release the left mouse button at its centre. Waits up to
        ``timeout`` seconds for the element to be there, visible and uncovered (a list
        still rendering, a dialog still closing).

        Raises:
            AssertionError: after ``timeout``, no element matches, it has no size (hidden),
                or another element covers its centre (the click would land there).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.eval(f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return "missing";
                el.scrollIntoView({{block: "center", inline: "center"}});
                const r = el.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return "hidden";
                const x = r.x + r.width / 2, y = r.y + r.height / 2;
                const top = document.elementFromPoint(x, y);
                if (top && top !== el && !el.contains(top))
                    return "covered by " + top.outerHTML.slice(0, 80);
                return [x, y];
            }})()""")  # fmt: skip
            if isinstance(found, list):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"cannot click {selector} within {timeout} s: {found}")
            await asyncio.sleep(0.1)
        x, y = found
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=1)  # fmt: skip

    async def type(self, selector: str, text: str, timeout: float = 5.0) -> None:
        """Focus the first element matching ``selector`` (waiting up to ``timeout`` seconds
        for it) and type ``text`` into it: one input event, as an input method would; use
        :meth:`press` for keys with a meaning.

        Raises:
            AssertionError: no element matches after ``timeout``.
        """
        focus = (f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
                 " if (!el) return false; el.focus(); return true; })()")  # fmt: skip
        try:
            await self.wait_for(focus, timeout)
        except AssertionError:
            raise AssertionError(f"cannot type into {selector}: no such element") from None
        await self.call("Input.insertText", text=text)

    async def press(self, key: str) -> None:
        """Press and release ``key`` (a name of :data:`KEYS`: Enter, Tab, Escape, ArrowDown,
        ...) in the focused element, with the browser's default action (Tab moves focus,
        Enter submits a form)."""
        if key not in KEYS:
            known = ", ".join(KEYS)
            raise AssertionError(f"press knows {known}; add {key!r} to tests.browser.KEYS")
        code, keycode, text = KEYS[key]
        common = {"key": key, "code": code, "windowsVirtualKeyCode": keycode,
                  "nativeVirtualKeyCode": keycode}  # fmt: skip
        if text:
            await self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        else:
            await self.call("Input.dispatchKeyEvent", type="rawKeyDown", **common)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **common)

    async def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page, ``full_page``) to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = (await self.call("Page.getLayoutMetrics"))["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}  # fmt: skip
        data = (await self.call("Page.captureScreenshot", **params))["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))  # noqa: ASYNC240 (a few hundred KB, local)
        return path

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Resize the viewport to ``width`` x ``height`` CSS pixels (device scale 1);
        ``mobile`` also honours the page's ``<meta name="viewport">`` as a phone does."""
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=mobile)  # fmt: skip

    async def set_session_storage(self, items: dict[str, str]) -> None:
        """Put ``items`` in the current page's ``sessionStorage`` (its origin's, for this tab).

        Storage belongs to an origin: ``goto`` a page of it first; its scripts see the items
        from the next ``goto``. Read them back with
        ``await page.eval("sessionStorage.getItem('key')")``.
        """
        await self.eval(
            f"Object.entries({json.dumps(items)}).forEach(([k, v]) => sessionStorage.setItem(k, v))"
        )
