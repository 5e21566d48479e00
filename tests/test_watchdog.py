"""The watchdog ends a daemon whose event loop stopped making progress, with the stuck stack in its log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from oscbridge.watchdog import EXIT_STALLED, Watchdog


def a_bug_that_blocks_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_a_stalled_loop_is_reported_with_the_stuck_stack() -> None:
    stalls: list[tuple[float, str]] = []
    watchdog = Watchdog(asyncio.get_running_loop(), 0.4, on_stall=lambda s, stack: stalls.append((s, stack)))
    watchdog.start()
    try:
        await asyncio.sleep(0.8)  # a healthy loop: heartbeats keep coming
        assert stalls == []
        a_bug_that_blocks_the_loop(1.2)
        await asyncio.sleep(0.05)
    finally:
        watchdog.stop()
    assert len(stalls) == 1
    seconds, stack = stalls[0]
    assert seconds >= 0.4
    assert "a_bug_that_blocks_the_loop" in stack


async def test_a_stopped_watchdog_never_fires() -> None:
    fired: list[float] = []
    watchdog = Watchdog(asyncio.get_running_loop(), 0.2, on_stall=lambda s, _: fired.append(s))
    watchdog.start()
    watchdog.stop()
    a_bug_that_blocks_the_loop(0.5)
    await asyncio.sleep(0.05)
    assert fired == [] and not watchdog.fired


STALLING_PROGRAM = textwrap.dedent("""
    import asyncio
    from oscbridge.logs import configure_logging
    from oscbridge.watchdog import Watchdog

    def parser_that_never_finishes():
        while True:
            pass

    async def main():
        Watchdog(asyncio.get_running_loop(), 0.5).start()
        await asyncio.sleep(0.2)
        parser_that_never_finishes()

    configure_logging("info")
    asyncio.run(main())
""")


def test_the_process_exits_non_zero_with_the_stack_so_launchd_restarts_it() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STALLING_PROGRAM], capture_output=True, text=True, timeout=30)
    assert done.returncode == EXIT_STALLED
    assert time.monotonic() - started < 15
    assert '"event": "event_loop_stalled"' in done.stderr
    assert "parser_that_never_finishes" in done.stderr
