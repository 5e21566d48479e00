"""Live frames for open pages: levels up to the plugins' telemetry rate, plugins, mapping and status twice a
second, health every two seconds, and the traffic and event tails as they come.

The receive path comes first. Nothing here runs per datagram: the feed samples state on its own tick, and only
while a page is open. Each state is computed and encoded once per tick for every page (`_update`), and sent to a
page only when it changed since that page last got it. Every page keeps its own cursors into the traffic tail and
the event log, so a page that falls behind skips rows (and is told how many) without holding anything for the
others. A page whose connection does not take its frames (the bytes wait in its socket buffer) skips ticks: its
next frame carries the latest state, so a stalled browser costs one frame's bytes, never a growing queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from oscbridge.api.endpoint import Endpoint
from oscbridge.clock import Clock
from oscbridge.logs import get_logger
from oscbridge.store.debug_tail import COLUMNS, DebugTail
from oscbridge.tasks import cancel_and_wait
from oscbridge.web.calls import WebPeer, as_json, perform
from oscbridge.web.values import json_values

log = get_logger("oscbridge.web")

LEVELS_HZ = 24.0  # the plugins send telemetry every 41 ms (protocol note P4): faster would only repeat values
STATE_EVERY = 12  # ticks: plugins, mapping, project and status twice a second
HEALTH_EVERY = 48  # ticks: health every two seconds (it reads the database)
ROWS_PER_FRAME = 200  # traffic rows or events in one frame; more waiting are skipped and counted
EVENTS_KEPT = 500
BACKLOG_ON_CONNECT = 100  # a page that opens gets the last rows of the tails at once
STATE_REQUESTS = ("/bridge/plugins", "/bridge/mapping/list", "/bridge/project/current", "/bridge/status")
OUTPUT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class EventLog:
    """The newest `/bridge/event/*` events, with sequence numbers for the pages' cursors."""

    def __init__(self, clock: Clock, size: int = EVENTS_KEPT) -> None:
        self._clock = clock
        self._events: deque[tuple[int, float, str, list[Any]]] = deque(maxlen=size)
        self.last = 0

    def add(self, address: str, args: list[Any]) -> None:
        self.last += 1
        self._events.append((self.last, self._clock.time(), address, json_values(args)))

    def since(self, seq: int, limit: int) -> tuple[list[tuple[int, float, str, list[Any]]], int]:
        newer = self.last - seq
        if newer <= 0:
            return [], 0
        events = list(islice(reversed(self._events), min(newer, limit, len(self._events))))
        events.reverse()
        return events, newer - len(events)


@dataclass(eq=False)
class Page:
    """One open page: what it was last sent, and its cursors into the tails."""

    authorized: bool
    traffic_seq: int
    event_seq: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    versions: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    skipped_ticks: int = 0


class LiveFeed:
    def __init__(self, endpoints: dict[str, Endpoint], tail: DebugTail, events: EventLog,
                 hz: float = LEVELS_HZ) -> None:
        self._endpoints = endpoints
        self._tail = tail
        self.events = events
        self.period = 1.0 / hz
        self._state: dict[str, tuple[int, str]] = {}  # kind -> (version, encoded frame)
        self.pages: set[Page] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self.frames_sent = 0
        self.ticks_skipped = 0
        self.pages_cut = 0  # closed for taking no frame for too long
        self._peer = WebPeer(("oscbridge-web", 0))

    # -- pages ------------------------------------------------------------------------------------------------

    def open(self, authorized: bool) -> Page:
        page = Page(authorized, max(0, self._tail.last - BACKLOG_ON_CONNECT),
                    max(0, self.events.last - BACKLOG_ON_CONNECT))
        self.pages.add(page)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-web-feed")
        page.wake.set()
        return page

    def close(self, page: Page) -> None:
        self.pages.discard(page)
        page.wake.set()

    def message_for(self, page: Page) -> str | None:
        """Everything `page` has not seen yet, as one JSON array of frames (None when there is nothing new)."""
        parts = []
        for kind, (version, text) in self._state.items():
            if page.versions.get(kind) != version:
                page.versions[kind] = version
                parts.append(text)
        if page.authorized:
            rows, skipped = self._tail.since(page.traffic_seq, ROWS_PER_FRAME)
            if rows or skipped:
                page.traffic_seq = self._tail.last
                parts.append(OUTPUT({"type": "traffic", "skipped": skipped,
                                     "rows": [dict(zip(COLUMNS, row, strict=True)) for row in rows]}))
            events, skipped = self.events.since(page.event_seq, ROWS_PER_FRAME)
            if events or skipped:
                page.event_seq = self.events.last
                parts.append(OUTPUT({"type": "events", "skipped": skipped, "events": events}))
        if not parts:
            return None
        page.frames += 1
        self.frames_sent += 1
        return "[" + ",".join(parts) + "]"

    # -- the tick -----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        tick = 0
        while self.pages:
            try:
                self._sample(tick)
            except Exception as exc:  # a bug in one frame must not end the live view for every page
                log.exception("web_feed_failed", error=str(exc))
            for page in self.pages:
                if page.wake.is_set():  # it has not taken the last tick yet: still sending, or held back
                    page.skipped_ticks += 1
                    self.ticks_skipped += 1
                page.wake.set()
            tick += 1
            await asyncio.sleep(self.period)
        if self._health is not None:
            self._health.cancel()

    def _sample(self, tick: int) -> None:
        levels = self._endpoints["/bridge/levels"].func()
        # Rounded to 0.1 dB and without the age, so that a track whose levels stand still sends nothing.
        self._update("levels", {"type": "levels", "rows": [
            [row[0], *(round(value, 1) for value in row[1:6])] for row in levels.rows]})
        if tick % STATE_EVERY == 0:
            for address in STATE_REQUESTS:
                self._update(address, {"type": "state", "address": address,
                                       **as_json(self._endpoints[address].func())})
        if tick % HEALTH_EVERY == 0 and (self._health is None or self._health.done()):
            self._health = asyncio.get_running_loop().create_task(self._sample_health())

    async def _sample_health(self) -> None:
        with contextlib.suppress(Exception):  # health says when something is down; it is never the problem
            result = await perform(self._endpoints["/bridge/health"], [], self._peer)
            self._update("/bridge/health", {"type": "state", "address": "/bridge/health", **as_json(result)})

    def _update(self, kind: str, frame: dict[str, Any]) -> None:
        text = OUTPUT(frame)
        current = self._state.get(kind)
        if current is None or current[1] != text:
            self._state[kind] = ((current[0] + 1) if current else 1, text)

    async def stop(self) -> None:
        for page in list(self.pages):
            self.close(page)
        await cancel_and_wait(self._ticker, self._health)

    def stats(self) -> dict[str, int]:
        return {"web.pages": len(self.pages), "web.frames_sent": self.frames_sent,
                "web.ticks_skipped": self.ticks_skipped, "web.pages_cut": self.pages_cut}

