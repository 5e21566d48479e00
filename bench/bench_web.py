"""Open web pages against the 128-plugin load: the bridge's CPU, telemetry loss and ping latency with no page, one
page, five pages, and five pages of which some are stalled.

    .venv/bin/python -m bench.bench_web [--seconds 20] [--plugins 128] [--stalled 2] [--browser] [--changes 30]

(from the repository root, after `pip install -e '.[bench]'`)

The issue's promise (docs/web.md, "The receive path comes first"): a slow or stalled browser never slows datagram
handling; a page's unsent bytes are bounded and a page that falls behind skips ticks. The load is
`bench.bench_plugins`': 128 negotiated plugins, each sending `/aiplayer/telemetry` then `/aiplayer/rms` every
41 ms as the real plugin does (about 6,250 datagrams/s), from sender processes. Here each plugin cycles through 24
levels 0.5 dB apart, so the levels change at every tick, as with music (with steady levels the page would get
nothing to send). The bridge (`oscbridge serve` with `--http-port`) runs as its own process, so psutil counts its
CPU alone; the embedded PostgreSQL, the senders and the pages are other processes.

Phases, `--seconds` each, in one bridge:

* a: no page;
* b: one page;
* c: five pages;
* d: five pages, `--stalled` of them stalled: a WebSocket that sends the token and then never reads, with a 4 KiB
  receive buffer, so the bytes pile up in the bridge's socket. Before the measured window the load runs until the
  bridge starts skipping ticks (or closes a page): on loopback the kernel's send buffer takes megabytes (Linux
  grows it up to `tcp_wmem`'s 4 MiB) before the bridge's own buffer holds anything; the time it took is printed.

A page is an aiohttp WebSocket client on `/api/live` that sends the token (`<data_dir>/web-token`) first and parses
every message; all pages live in one process apart from the bridge. With `--browser` (and `/usr/bin/chromium` and
`/usr/bin/chromedriver` present) the reading pages are headless Chromium windows opening
`http://127.0.0.1:<port>/#token=...` instead (the stalled ones stay raw sockets: a browser cannot be told to stop
reading); the table says which kind ran.

Reported per phase: the bridge's CPU (user + system, share of one core) and RSS; apart from it, the CPU of its
embedded PostgreSQL (the postmaster and its backends: what the pages' reads cost the database); datagrams sent by
the plugins and counted by the bridge (`hub.telemetry` in `/bridge/stats`: every telemetry and rms datagram the hub
took), lost and the loss in %; the frames sent to pages and the ticks skipped for pages that had too much unsent
(`web.frames_sent`, `web.ticks_skipped`); the pages and HTTP connections open at the end (`web.pages`,
`web.connections`); `/bridge/ping` round trips, one every 10 ms during the phase, p50 and p99. A second table
shows the pages' side: messages, frames and level frames per reading page per second, kilobytes per second, parse
errors, and the CPU of the pages' process (with Chromium's processes).

With `--browser`, after the phases: change to page, the promise that a change made outside the page shows on it
within 1 s (docs/web.md; tests/test_web_browser.py checks only that it arrives, CI being too loaded to time it).
One headless Chromium window shows the Tracks view while `--changes` mappings are set over OSC
(`/bridge/mapping/set`, a new name each time), first with no load, then under the plugins' load. Each latency is
the page's own stamp of drawing the row (`data-shown-at`, `Date.now()` in whole milliseconds) minus `time.time()`
just before the request, as in the tests' `shown_after_the_change`: Selenium's polling adds nothing. The feed
checks the mapping twice a second, so up to 0.5 s of each latency is waiting for that check; a random pause before
each change spreads the changes over that period. Printed: median, p95, max, and how many took over 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import psutil

from bench.bench_plugins import Load, connect_plugins, plugin_env, received_by_bridge
from bench.common import Requests, cpu_seconds, percentile, print_table
from oscbridge.config import Settings
from oscbridge.osc.codec import encode_message
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.ports import LOOPBACK, free_port
from oscbridge.web.feed import LEVELS_HZ, STATE_EVERY
from oscbridge.web.token import read_token

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LEVEL_VARIANTS = 24  # a plugin's level changes at every tick and repeats after one second
STALLED_RCVBUF = 4096
PING_EVERY = 0.01
FILL_STEP = 5.0  # seconds of load per step while the stalled pages fill
FILL_LIMIT = 120.0
PROMISE = 1.0  # seconds a change made outside the page may take to show on it (docs/web.md)
ARRIVAL = 10.0  # seconds after which a change counts as not shown (tests/test_web_browser.py's ARRIVAL)
STATE_PERIOD = STATE_EVERY / LEVELS_HZ  # the feed's check of the mapping: 0.5 s
LOAD_WINDOW = 10.0  # seconds per load run while the changes are timed under load


@dataclass
class Phase:
    name: str
    readers: int
    stalled: int

    @property
    def pages(self) -> int:
        return self.readers + self.stalled


@dataclass
class PageCounts:
    """What the reading pages of one phase received, summed over them."""

    messages: int = 0
    frames: int = 0
    levels: int = 0
    bytes: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # the pages' process and its children (Chromium), seconds
    hellos: set[int] = field(default_factory=set)


# --------------------------------------------------------------------------------------------------------------
# The pages (run in a process of their own)
# --------------------------------------------------------------------------------------------------------------


def stalled_page(port: int, token: str) -> socket.socket:
    """A WebSocket handshake by hand and the token, then never a read: what a frozen browser tab does."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.settimeout(5)
    sock.connect((LOOPBACK, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /api/live HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(1)  # one byte at a time: nothing after the headers is read, ever
        if not chunk:
            raise RuntimeError("the bridge closed the stalled page's handshake")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no WebSocket for the stalled page: {answer[:80]!r}")
    payload = json.dumps({"token": token}).encode()
    mask = os.urandom(4)
    # A masked text frame (client frames must be masked); the token message is well under 126 bytes.
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


async def read_page(session: aiohttp.ClientSession, port: int, token: str, number: int, counts: PageCounts,
                    counting: asyncio.Event) -> None:
    """A page as the browser's script is one: the token first, then every message parsed."""
    async with session.ws_connect(f"http://{LOOPBACK}:{port}/api/live") as ws:
        await ws.send_str(json.dumps({"token": token}))
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                frames: list[dict[str, Any]] = json.loads(message.data)
            except ValueError:
                counts.errors += 1
                continue
            if any(frame.get("type") == "hello" for frame in frames):
                counts.hellos.add(number)
            if counting.is_set():
                counts.messages += 1
                counts.frames += len(frames)
                counts.levels += sum(1 for frame in frames if frame.get("type") == "levels")
                counts.bytes += len(message.data)


async def aiohttp_pages(port: int, token: str, readers: int, conn: Connection) -> PageCounts:
    counts, counting = PageCounts(), asyncio.Event()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        tasks = [loop.create_task(read_page(session, port, token, n, counts, counting)) for n in range(readers)]
        while len(counts.hellos) < readers:
            if any(task.done() for task in tasks):
                await next(task for task in tasks if task.done())  # raises what went wrong
                raise RuntimeError("a page closed before its hello")
            await asyncio.sleep(0.05)
        await _run_phase(conn, counts, counting.set)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def chromium() -> WebDriver:
    """Headless Chromium through chromedriver, as tests/test_web_browser.py drives it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                # Every window counts as a visible page: no timer throttling of the ones behind.
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


async def browser_pages(port: int, token: str, readers: int, conn: Connection) -> PageCounts:
    """Headless Chromium windows with the page; the bridge's `web.pages` tells the parent when they are open."""
    driver = chromium()
    try:
        for n in range(readers):
            if n:
                driver.switch_to.new_window("window")
            driver.get(f"http://{LOOPBACK}:{port}/#token={token}")
        counts = PageCounts()
        await _run_phase(conn, counts, lambda: None)
        return counts
    finally:
        driver.quit()


async def _run_phase(conn: Connection, counts: PageCounts, start_counting: Callable[[], None]) -> None:
    """Says "ready", counts between the parent's "go" and "stop" (its CPU too, Chromium's included)."""
    loop = asyncio.get_running_loop()
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # "go"
    start_counting()
    started, cpu0 = time.monotonic(), _tree_cpu(os.getpid())
    await loop.run_in_executor(None, conn.recv)  # "stop"
    counts.seconds, counts.cpu = time.monotonic() - started, _tree_cpu(os.getpid()) - cpu0


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its living descendants (Chromium runs in several)."""
    total = cpu_seconds(pid)
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that ended since the list was taken
            total += cpu_seconds(child.pid)
    return total


def postgres_pid(data_dir: Path) -> int:
    """The embedded PostgreSQL's postmaster (pg_ctl detaches it from the bridge): the first line of its pid file."""
    return int((Settings(data_dir=data_dir).embedded_pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def pages_process(port: int, token: str, readers: int, stalled: int, browser: bool, conn: Connection) -> None:
    try:
        held = [stalled_page(port, token) for _ in range(stalled)]
        run = browser_pages if browser else aiohttp_pages
        counts = asyncio.run(run(port, token, readers, conn))
        for sock in held:
            sock.close()
        conn.send({name: value for name, value in asdict(counts).items() if name != "hellos"})
    except Exception as exc:
        conn.send(f"the pages failed: {exc!r}")


class Pages:
    """The pages of one phase, open (the bridge counts them in `web.pages`) when the constructor returns."""

    def __init__(self, requests: Requests, port: int, token: str, phase: Phase, browser: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=pages_process,
                                args=(port, token, phase.readers, phase.stalled, browser, child), daemon=True)
        self.proc.start()
        if not self.pipe.poll(60):
            self.close()
            raise RuntimeError("the pages did not open within 60 s")
        if (said := self.pipe.recv()) != "ready":
            self.close()
            raise RuntimeError(str(said))
        deadline = time.monotonic() + 30
        while requests.stats().get("web.pages", 0) < phase.pages:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the bridge did not see {phase.pages} pages within 30 s")
            time.sleep(0.1)

    def go(self) -> None:
        self.pipe.send("go")

    def stop(self) -> PageCounts:
        self.pipe.send("stop")
        if not self.pipe.poll(30):
            self.close()
            raise RuntimeError("the pages did not report")
        result = self.pipe.recv()
        self.close()
        if not isinstance(result, dict):  # a dict, not the class: this module is __main__ in one process only
            raise RuntimeError(str(result))
        return PageCounts(**result)

    def close(self) -> None:
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --------------------------------------------------------------------------------------------------------------
# One phase
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    phase: Phase
    cpu: float  # share of one core
    pg_cpu: float  # the bridge's PostgreSQL (postmaster and backends), share of one core
    rss: int
    sent: int
    errors: int
    received: int
    stats: dict[str, int]  # the counters' change over the phase (web.pages and web.connections: at the end)
    pings: list[float]
    pages: PageCounts | None
    fill: float | None  # seconds of load until the bridge skipped ticks for the stalled pages


def fill_stalled(requests: Requests, load: Load, rate: float, pages: int) -> float:
    """Runs the load until the bridge skips a tick (a stalled page's unsent bytes passed the bound) or closes a
    page; returns how long that took."""
    started = time.monotonic()
    skipped = requests.stats().get("web.ticks_skipped", 0)
    while True:
        stats = requests.stats()
        if stats.get("web.ticks_skipped", 0) > skipped or stats.get("web.pages", 0) < pages:
            return time.monotonic() - started
        if time.monotonic() - started > FILL_LIMIT:
            raise RuntimeError(f"the bridge skipped no tick for the stalled pages within {FILL_LIMIT:.0f} s")
        load.start(rate, FILL_STEP)
        load.result()


def run_phase(bridge: BridgeProcess, requests: Requests, load: Load, phase: Phase, http_port: int, token: str,
              rate: float, seconds: float, browser: bool) -> Result:
    postgres = postgres_pid(bridge.data_dir)
    pages = Pages(requests, http_port, token, phase, browser) if phase.pages else None
    try:
        fill = fill_stalled(requests, load, rate, phase.pages) if phase.stalled else None
        before_received = received_by_bridge(requests)
        start_at = load.start(rate, seconds)
        time.sleep(max(0.0, start_at - time.time()))
        if pages is not None:
            pages.go()
        before, cpu0, pg0, wall0 = requests.stats(), cpu_seconds(bridge.pid), _tree_cpu(postgres), time.monotonic()
        ping = encode_message("/bridge/ping", ["p"])
        pings: list[float] = []
        while time.time() < start_at + seconds:
            pings.append(requests.latency_us(ping))
            time.sleep(PING_EVERY)
        sent, errors = load.result()
        cpu, pg, wall = cpu_seconds(bridge.pid) - cpu0, _tree_cpu(postgres) - pg0, time.monotonic() - wall0
        after = requests.stats()
        counts = pages.stop() if pages is not None else None
        pages = None
    finally:
        if pages is not None:
            pages.close()
    time.sleep(0.5)  # the last datagrams reach the hub
    change = {name: after.get(name, 0) - before.get(name, 0) for name in ("web.frames_sent", "web.ticks_skipped")}
    change.update({name: after.get(name, 0) for name in ("web.pages", "web.connections")})
    return Result(phase, 100 * cpu / wall, 100 * pg / wall, psutil.Process(bridge.pid).memory_info().rss, sent, errors,
                  received_by_bridge(requests) - before_received, change, sorted(pings), counts, fill)


# --------------------------------------------------------------------------------------------------------------
# Change to page (--browser)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Changes:
    condition: str
    latencies: list[float]  # seconds, sorted, of the changes shown
    missed: int  # changes not shown within ARRIVAL


def open_tracks(driver: WebDriver, port: int, token: str, plugins: int) -> None:
    """The page with the token, live, on the Tracks view with every plugin's row drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"http://{LOOPBACK}:{port}/#token={token}")
    waiting = WebDriverWait(driver, 30, poll_frequency=0.05)
    waiting.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
    driver.find_element(By.ID, "tab-tracks").click()
    waiting.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tracks-body tr")) >= plugins)


def change_latencies(driver: WebDriver, requests: Requests, condition: str, changes: int, plugins: int) -> Changes:
    """Renames tracks 1, 2, ... over OSC, one at a time, and times each until the page's row shows the new name."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import presence_of_all_elements_located
    from selenium.webdriver.support.ui import WebDriverWait

    latencies: list[float] = []
    missed = 0
    for n in range(changes):
        time.sleep(random.uniform(0, STATE_PERIOD))  # anywhere in the feed's check period, not in step with it
        number = 1 + n % plugins
        name = f"Track {number} ({condition} {n})"
        selector = f'#tracks-body tr[data-plugin-id="TR{number}"][data-name="{name}"]'
        changed = time.time()
        requests.call("/bridge/mapping/set", number, name, f"TR{number}")
        try:
            rows = WebDriverWait(driver, ARRIVAL, poll_frequency=0.05).until(
                presence_of_all_elements_located((By.CSS_SELECTOR, selector)))
        except TimeoutException:
            missed += 1
            continue
        shown_at_ms = rows[0].get_attribute("data-shown-at")
        if shown_at_ms is None:
            raise RuntimeError(f"the page drew track {number}'s row without a data-shown-at stamp")
        latencies.append(int(shown_at_ms) / 1000 - changed)
    return Changes(condition, sorted(latencies), missed)


def under_load(load: Load, rate: float, work: Callable[[], T]) -> T:
    """Runs `work` while the plugins stream, in LOAD_WINDOW runs back to back from a thread (each run starts
    0.3 s after the last ended: `Load.start`'s lead, about 3 % of the time without load)."""
    done = threading.Event()
    failed: list[BaseException] = []

    def stream() -> None:
        try:
            while not done.is_set():
                load.start(rate, LOAD_WINDOW)
                load.result()
        except BaseException as exc:  # raised in the caller: numbers "under load" without load would mislead
            failed.append(exc)

    thread = threading.Thread(target=stream, name="load", daemon=True)
    thread.start()
    time.sleep(1.0)  # the first run started and the page draws levels
    try:
        result = work()
    finally:
        done.set()
        thread.join()
    if failed:
        raise RuntimeError("the load stopped during the measurement") from failed[0]
    return result


def measure_changes(requests: Requests, load: Load, http_port: int, token: str, ns: argparse.Namespace
                    ) -> list[Changes]:
    driver = chromium()
    try:
        open_tracks(driver, http_port, token, ns.plugins)
        idle = change_latencies(driver, requests, "no load", ns.changes, ns.plugins)
        loaded = under_load(load, ns.rate, lambda: change_latencies(driver, requests, "under load", ns.changes,
                                                                    ns.plugins))
        return [idle, loaded]
    finally:
        driver.quit()


def report_changes(measured: list[Changes], ns: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = [("condition", "changes", "median", "p95", "max", f"over {PROMISE:.0f} s",
                                    f"not shown in {ARRIVAL:.0f} s")]
    for c in measured:
        over = sum(1 for latency in c.latencies if latency > PROMISE) + c.missed
        rows.append((c.condition, str(len(c.latencies) + c.missed), f"{1000 * percentile(c.latencies, 0.5):.0f} ms",
                     f"{1000 * percentile(c.latencies, 0.95):.0f} ms", f"{1000 * max(c.latencies, default=0):.0f} ms",
                     f"{over} ({100 * over / max(len(c.latencies) + c.missed, 1):.0f} %)", str(c.missed)))
    print_table(f"Change to page: /bridge/mapping/set over OSC until the Tracks row's data-shown-at, one headless "
                f"Chromium page (promise: {PROMISE:.0f} s; the load: {ns.plugins} plugins at {ns.rate} Hz)", rows)
    print(f"  the feed checks the mapping every {1000 * STATE_PERIOD:.0f} ms: 0-{1000 * STATE_PERIOD:.0f} ms of each "
          f"latency is waiting for that check ({500 * STATE_PERIOD:.0f} ms on average)")


# --------------------------------------------------------------------------------------------------------------


def report(results: list[Result], ns: argparse.Namespace, kind: str) -> None:
    rows: list[tuple[str, ...]] = [("phase", "bridge CPU", "PG CPU", "RSS", "sent", "received", "lost",
                                    "frames to pages", "ticks skipped", "pages / conns open", "ping p50", "ping p99")]
    for r in results:
        lost = r.sent - r.received
        rows.append((r.phase.name, f"{r.cpu:.1f} %", f"{r.pg_cpu:.1f} %", f"{r.rss / 2**20:.0f} MB", str(r.sent),
                     str(r.received), f"{lost} ({100 * lost / max(r.sent, 1):.2f} %)", str(r.stats["web.frames_sent"]),
                     str(r.stats["web.ticks_skipped"]), f"{r.stats['web.pages']} / {r.stats['web.connections']}",
                     f"{percentile(r.pings, 0.5):.0f} µs", f"{percentile(r.pings, 0.99):.0f} µs"))
    print_table(f"{ns.plugins} plugins at {ns.rate} Hz (telemetry + rms, {2 * ns.rate * ns.plugins:.0f} "
                f"datagrams/s offered), {ns.seconds:.0f} s per phase, pages: {kind} ({os.cpu_count()} cores)", rows)
    for r in results:
        if r.fill is not None:
            print(f"  {r.phase.name}: the stalled pages filled (the bridge skipped a tick or closed one) after "
                  f"{r.fill:.0f} s of load, before the measured window")
    side: list[tuple[str, ...]] = [("phase", "messages/s per page", "frames/s", "levels/s", "KB/s",
                                    "parse errors", "pages' CPU")]
    for r in results:
        counts = r.pages
        if counts is None or r.phase.readers == 0:
            continue
        per = max(counts.seconds, 1e-9) * r.phase.readers
        counted = kind == "aiohttp"  # a browser's frames are its own business: only the bridge's count is known
        side.append((r.phase.name, f"{counts.messages / per:.1f}" if counted else "-",
                     f"{counts.frames / per:.1f}" if counted else "-", f"{counts.levels / per:.1f}" if counted else "-",
                     f"{counts.bytes / per / 1024:.1f}" if counted else "-", str(counts.errors),
                     f"{100 * counts.cpu / max(counts.seconds, 1e-9):.1f} %"))
    print_table("The reading pages' side (the stalled ones read nothing)", side)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", type=int, default=128)
    parser.add_argument("--rate", type=float, default=24.4, help="telemetry ticks per plugin per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--senders", type=int, default=3, help="sender processes for the plugins")
    parser.add_argument("--stalled", type=int, default=2, help="stalled pages among the five of phase d")
    parser.add_argument("--browser", action="store_true", help="headless Chromium pages instead of aiohttp")
    parser.add_argument("--changes", type=int, default=30,
                        help="with --browser: mapping changes timed from OSC to the page, per condition (0: none)")
    ns = parser.parse_args()
    browser = ns.browser and CHROMIUM.exists() and CHROMEDRIVER.exists()
    if ns.browser and not browser:
        print(f"--browser: {CHROMIUM} or {CHROMEDRIVER} is missing; using aiohttp pages", file=sys.stderr)
    kind = "headless Chromium" if browser else "aiohttp"
    phases = [Phase("a: no page", 0, 0), Phase("b: one page", 1, 0), Phase("c: five pages", 5, 0),
              Phase(f"d: five, {ns.stalled} stalled", 5 - ns.stalled, ns.stalled)]

    http_port = free_port()
    bridge = BridgeProcess("--http-port", str(http_port), extra_env=plugin_env(ns.plugins))
    load: Load | None = None
    try:
        token = read_token(bridge.data_dir)
        if token is None:
            raise RuntimeError(f"no web token in {bridge.data_dir}: is the web page on?")
        requests = Requests(bridge.port)
        load = connect_plugins(requests, bridge.port, ns.plugins, ns.senders, variants=LEVEL_VARIANTS)
        results = [run_phase(bridge, requests, load, phase, http_port, token, ns.rate, ns.seconds, browser)
                   for phase in phases]
        report(results, ns, kind)
        if browser and ns.changes > 0:
            report_changes(measure_changes(requests, load, http_port, token, ns), ns)
    finally:
        if load is not None:
            load.close()
        bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
