"""`oscbridge simulate`: the command line of the plugin simulator.

It starts N simulated plugins against a running bridge, lets them live for a while (or until Ctrl-C), and
prints one JSON line per plugin saying how far each got: a quick way to see that a bridge hands out ports,
identifies plugins and receives telemetry, without Logic Pro.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import TextIO

from oscbridge.logs import configure_logging
from oscbridge.protocol import EPHEMERAL_BASE, EPHEMERAL_COUNT, EPHEMERAL_STEP, TELEMETRY
from oscbridge.tools.recording import parse_host_port
from oscbridge.tools.sim.plugin import MESSAGE_DELAY, SILENCE_RMS, PluginFleet, SimConfig, SimulatedPlugin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the simulator's options to `parser`, so the daemon's CLI can mount them as a subcommand."""
    parser.add_argument("--plugins", type=int, default=1, help="how many plugin instances (default 1)")
    parser.add_argument("--bridge", default="127.0.0.1:8999", help="where plugins send (default 127.0.0.1:8999)")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between instance starts")
    parser.add_argument("--ephemeral-base", type=int, default=EPHEMERAL_BASE,
                        help=f"first bootstrap port ({EPHEMERAL_BASE})")
    parser.add_argument("--ephemeral-step", type=int, default=EPHEMERAL_STEP,
                        help=f"step between bootstrap ports ({EPHEMERAL_STEP})")
    parser.add_argument("--ephemeral-count", type=int, default=EPHEMERAL_COUNT,
                        help=f"bootstrap ports to try ({EPHEMERAL_COUNT})")
    parser.add_argument("--unmuted", action="store_true", help="start with strips unmuted (levels are live)")
    parser.add_argument("--signal-rms", type=float, default=SILENCE_RMS, help="linear RMS of the input signal")
    parser.add_argument("--message-thread", action="store_true",
                        help="handle every datagram on one ordered queue like the real plugin's message thread "
                             "(a probe read on the old port is answered after a move)")
    parser.add_argument("--message-delay", type=float, default=MESSAGE_DELAY,
                        help=f"seconds the message thread spends per datagram ({MESSAGE_DELAY})")
    parser.add_argument("--log-level", default="warning", help="log level on stderr (default warning)")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Runs the simulation described by parsed arguments; returns the exit status."""
    configure_logging(args.log_level)
    try:
        bridge_host, bridge_port = parse_host_port(args.bridge)
    except ValueError as exc:
        print(f"oscbridge simulate: --bridge: {exc}", file=sys.stderr)
        return 2
    if args.plugins < 1:
        print("oscbridge simulate: --plugins must be at least 1", file=sys.stderr)
        return 2
    if args.message_delay < 0:
        print("oscbridge simulate: --message-delay must not be negative", file=sys.stderr)
        return 2
    fleet = PluginFleet(args.plugins, config_from_args(args, bridge_host, bridge_port), interval=args.interval)
    try:
        asyncio.run(_simulate(fleet, args.duration))
    except OSError as exc:
        print(f"oscbridge simulate: {exc}", file=sys.stderr)
        return 1
    for plugin in fleet:
        print(json.dumps(summary(plugin)), file=out)
    return 0


def config_from_args(args: argparse.Namespace, bridge_host: str, bridge_port: int) -> SimConfig:
    """The plugin configuration that parsed options describe."""
    return SimConfig(
        bridge_host=bridge_host,
        bridge_port=bridge_port,
        ephemeral_base=args.ephemeral_base,
        ephemeral_step=args.ephemeral_step,
        ephemeral_count=args.ephemeral_count,
        start_muted=not args.unmuted,
        signal_rms=args.signal_rms,
        message_thread=args.message_thread,
        message_delay=args.message_delay,
    )


def summary(plugin: SimulatedPlugin) -> dict[str, object]:
    """What one plugin achieved, as printed at the end of a run."""
    return {
        "temp_id": plugin.temp_id,
        "state": plugin.state,
        "ephemeral_port": plugin.ephemeral_port,
        "port": plugin.port,
        "track_id": plugin.track_id,
        "sender_port": plugin.sender_port,
        "received": len(plugin.received),
        "sent": plugin.sent_counts.total(),
        "telemetry_sent": plugin.sent_counts[TELEMETRY],
    }


async def _simulate(fleet: PluginFleet, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            loop.add_signal_handler(sig, stop.set)
    try:
        await fleet.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        await fleet.close()
