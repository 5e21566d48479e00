"""128 simulated plugins streaming telemetry into a bridge that runs as its own process.

    .venv/bin/python -m bench.bench_plugins [--plugins 128] [--seconds 20] [--step-seconds 3] [--senders 3]

(from the repository root, after `pip install -e '.[bench]'`)

What it measures (issue 3):

* 128 plugins negotiate their ports with the bridge (`request_port` from their own sender socket, bind the
  assigned port, `port_confirmed`), then each sends `/aiplayer/telemetry` + `/aiplayer/rms` at 24 Hz from that
  socket for `--seconds` (about 6,200 datagrams/s). The bridge learns each plugin's track id from its telemetry.
* Datagrams lost: what the senders sent against the bridge's `hub.telemetry` counter (`/bridge/stats`).
* The bridge process's CPU share (of one core) and resident memory, with psutil; the embedded PostgreSQL runs
  in other processes and is not counted.
* `/bridge/mapping/track` round trips during that load (one request every 10 ms): p50 and p99.
* The highest rate taken without loss: the same senders step the rate up (`--step-seconds` per step) against the
  bridge and against python-osc's stock AsyncIOOSCUDPServer with a Dispatcher mapping the same addresses
  (`bench.peers`), in the same run.

The load comes from `--senders` processes with pre-encoded datagrams, sent in 2 ms time slices, so the
generator costs little next to the servers. The machine is shared by generator and server: on 2 cores the
highest rate is a property of the whole machine, which the table says.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import psutil

from bench.common import Peer, Requests, cpu_seconds, peer_count, percentile, print_table
from oscbridge.osc.codec import decode_packet, encode_message
from oscbridge.protocol import PORT_CONFIRMED, REQUEST_PORT, RMS, RMS_TAGS, TELEMETRY, TELEMETRY_TAGS
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.ports import LOOPBACK, free_block

SLICE = 0.002


# --------------------------------------------------------------------------------------------------------------
# The load generator (runs in its own processes)
# --------------------------------------------------------------------------------------------------------------


def _negotiate(sender: socket.socket, bridge: tuple[str, int]) -> socket.socket:
    """What the plugin constructor does, minus the 50000+ scan: ask once, bind the assigned port, confirm."""
    temp_id = uuid.uuid4().hex
    boot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    boot.bind((LOOPBACK, 0))
    boot.settimeout(10)
    sender.sendto(encode_message(REQUEST_PORT, [temp_id, -1, boot.getsockname()[1]], "sii"), bridge)
    port = int(decode_packet(boot.recv(1024))[0].args[1])
    boot.close()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((LOOPBACK, port))
    sender.sendto(encode_message(PORT_CONFIRMED, [temp_id, port, "bound"], "sis"), bridge)
    return receiver


def plugin_datagrams(track: str, variants: int) -> list[tuple[bytes, bytes]]:
    """A plugin's telemetry and rms pairs, pre-encoded: one steady level, or `variants` levels 0.5 dB apart that
    it cycles through tick by tick (the web page sends a level only when it changed, as it does with music)."""
    pairs = []
    for k in range(variants):
        rms, step = 0.2 * 10 ** (-0.5 * k / 20), 0.5 * k
        pairs.append((encode_message(TELEMETRY, [track, rms, -16.0 - step, -53.6 - step, -100.0, -100.0],
                                     TELEMETRY_TAGS), encode_message(RMS, [track, rms], RMS_TAGS)))
    return pairs


def sender_process(bridge_port: int, first: int, count: int, negotiate: bool, conn: Connection,
                   variants: int = 1) -> None:
    bridge = (LOOPBACK, bridge_port)
    sockets: list[socket.socket] = []
    plugins: list[tuple[socket.socket, Iterator[tuple[bytes, bytes]]]] = []
    for number in range(first, first + count):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((LOOPBACK, 0))
        sockets.append(sender)
        if negotiate:
            sockets.append(_negotiate(sender, bridge))
        plugins.append((sender, itertools.cycle(plugin_datagrams(f"TR{number}", variants))))
    conn.send("ready")
    while True:
        command = conn.recv()
        if command[0] == "stop":
            break
        _, rate, seconds, start_at = command
        conn.send(_stream(plugins, bridge, rate, seconds, start_at))
    for sock in sockets:
        sock.close()


def _stream(plugins: list[tuple[socket.socket, Iterator[tuple[bytes, bytes]]]], bridge: tuple[str, int],
            rate: float, seconds: float, start_at: float) -> tuple[int, int]:
    """Each plugin sends its pair every 1/rate s, phases spread evenly; returns (datagrams sent, send errors)."""
    period = 1.0 / rate
    count = len(plugins)
    due = [start_at + period * k / count for k in range(count)]
    end = start_at + seconds
    sent = errors = 0
    while True:
        now = time.time()
        if now >= end:
            break
        for index in range(count):
            if due[index] <= now:
                sock, pairs = plugins[index]
                telemetry, rms = next(pairs)
                try:
                    sock.sendto(telemetry, bridge)
                    sock.sendto(rms, bridge)
                    sent += 2
                except OSError:
                    errors += 1
                due[index] += period
        time.sleep(SLICE)
    return sent, errors


class Load:
    """`processes` sender processes holding `plugins` plugins between them."""

    def __init__(self, port: int, plugins: int, processes: int, negotiate: bool, variants: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        share = -(-plugins // processes)
        for first in range(1, plugins + 1, share):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=sender_process, args=(port, first, min(share, plugins + 1 - first),
                                                            negotiate, child, variants), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("a sender process did not get ready")

    def start(self, rate: float, seconds: float) -> float:
        start_at = time.time() + 0.3
        for pipe in self.pipes:
            pipe.send(("run", rate, seconds, start_at))
        return start_at

    def result(self) -> tuple[int, int]:
        sent = errors = 0
        for pipe in self.pipes:
            s, e = pipe.recv()
            sent += s
            errors += e
        return sent, errors

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop",))
        for proc in self.procs:
            proc.join(5)


# --------------------------------------------------------------------------------------------------------------
# Talking to the bridge
# --------------------------------------------------------------------------------------------------------------


def plugin_env(plugins: int) -> dict[str, str]:
    """The bridge's settings for `plugins` generator plugins: their pool, one bootstrap port, no silence timeout."""
    # One block: the plugin pool (8 spare ports), then the one bootstrap port (the generator never scans).
    pool = free_block(plugins + 9)
    return {"OSCBRIDGE_PORT_RANGE_START": str(pool), "OSCBRIDGE_PORT_RANGE_END": str(pool + plugins + 7),
            "OSCBRIDGE_EPHEMERAL_BASE": str(pool + plugins + 8), "OSCBRIDGE_EPHEMERAL_COUNT": "1",
            # The generator does not answer probes; pauses between runs must not make its plugins "gone".
            "OSCBRIDGE_PLUGIN_SILENCE": "600"}


def connect_plugins(requests: Requests, port: int, plugins: int, senders: int, variants: int = 1) -> Load:
    """Maps TR1..TRn to tracks, starts the senders and waits until every plugin has its port."""
    for number in range(1, plugins + 1):
        requests.call("/bridge/mapping/set", number, f"Track {number}", f"TR{number}")
    load = Load(port, plugins, senders, negotiate=True, variants=variants)
    try:
        wait_identified(requests, plugins)
    except BaseException:
        load.close()
        raise
    return load


def wait_identified(requests: Requests, plugins: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [row[2] for row in requests.rows("/bridge/plugins")]
        if states.count("bound") + states.count("identified") >= plugins:
            return
        time.sleep(0.2)
    raise RuntimeError("the plugins did not all get a port")


def received_by_bridge(requests: Requests) -> int:
    return requests.stats().get("hub.telemetry", 0)


# --------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", type=int, default=128)
    parser.add_argument("--rate", type=float, default=24.4, help="telemetry ticks per plugin per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--steps", default="24,48,96,144,192,288", help="per-plugin rates of the ramp (Hz)")
    parser.add_argument("--senders", type=int, default=3)
    ns = parser.parse_args()

    bridge = BridgeProcess(extra_env=plugin_env(ns.plugins))
    stock = Peer("python-osc")
    loads: list[Load] = []
    try:
        requests = Requests(bridge.port)
        load = connect_plugins(requests, bridge.port, ns.plugins, ns.senders)
        loads.append(load)
        proc = psutil.Process(bridge.pid)

        # The main run: 24 Hz for --seconds, with mapping queries alongside.
        before = received_by_bridge(requests)
        cpu0, wall0 = cpu_seconds(bridge.pid), time.monotonic()
        start_at = load.start(ns.rate, ns.seconds)
        time.sleep(max(0.0, start_at - time.time()))
        latencies: list[float] = []
        query = encode_message("/bridge/mapping/track", ["q", f"TR{ns.plugins // 2}"])
        while time.time() < start_at + ns.seconds:
            latencies.append(requests.latency_us(query))
            time.sleep(0.01)
        sent, errors = load.result()
        cpu, wall = cpu_seconds(bridge.pid) - cpu0, time.monotonic() - wall0
        time.sleep(0.5)
        received = received_by_bridge(requests) - before
        rss = proc.memory_info().rss
        latencies.sort()
        stats = requests.stats()
        identified = sum(1 for row in requests.rows("/bridge/plugins") if row[2] == "identified")
        print_table(f"{ns.plugins} plugins at {ns.rate} Hz for {ns.seconds:.0f} s against `oscbridge serve` "
                    f"({os.cpu_count()} cores, senders in {ns.senders} processes)", [
            ("measure", "value", "target"),
            ("datagrams sent", f"{sent} ({sent / ns.seconds:.0f}/s)", "~6,200/s"),
            ("datagrams received by the hub", str(received), ""),
            ("datagrams lost", str(sent - received), "0"),
            ("send errors at the senders", str(errors), "0"),
            ("plugins identified (from telemetry)", str(identified), str(ns.plugins)),
            ("bridge CPU (share of one core)", f"{100 * cpu / wall:.1f} %", ""),
            ("bridge CPU per datagram", f"{1e6 * cpu / max(received, 1):.1f} µs", ""),
            ("bridge RSS (without PostgreSQL)", f"{rss / 2**20:.1f} MB", "< 80 MB"),
            ("/bridge/mapping/track p50", f"{percentile(latencies, 0.5):.0f} µs ({len(latencies)} requests)", ""),
            ("/bridge/mapping/track p99", f"{percentile(latencies, 0.99):.0f} µs", "< 2,000 µs"),
            ("hub rejections / handler errors", f"{stats.get('router.plugin_rejected', 0)} / "
                                                f"{stats.get('router.handler_errors', 0)}", "0 / 0"),
        ])

        # The ramp, against both servers, with the same sender processes (negotiated ones for the bridge).
        stock_load = Load(stock.port, ns.plugins, ns.senders, negotiate=False)
        loads.append(stock_load)
        rows: list[tuple[str, ...]] = [
            ("per-plugin rate", "offered/s", "oscbridge sent", "lost", "python-osc sent", "lost")]
        best = {"oscbridge": 0.0, "python-osc": 0.0}
        for rate in (float(r) for r in ns.steps.split(",")):
            cells = [f"{rate:.0f} Hz", f"{2 * rate * ns.plugins:.0f}"]
            counters: tuple[tuple[str, Load, Callable[[], int]], ...] = (
                ("oscbridge", load, lambda: received_by_bridge(requests)),
                ("python-osc", stock_load, lambda: peer_count(stock.port)))
            for name, target, count in counters:
                before = count()
                target.start(rate, ns.step_seconds)
                step_sent, _ = target.result()
                time.sleep(1.0)
                lost = step_sent - (count() - before)
                cells += [str(step_sent), str(lost)]
                if lost <= 0 and step_sent >= 0.9 * 2 * rate * ns.plugins * ns.step_seconds:
                    best[name] = max(best[name], step_sent / ns.step_seconds)
            rows.append(tuple(cells))
        print_table(f"Rate ramp, {ns.step_seconds:.0f} s per step (sent = what the senders managed)", rows)
        print(f"  highest rate without loss: oscbridge {best['oscbridge']:.0f}/s, "
              f"python-osc AsyncIOOSCUDPServer {best['python-osc']:.0f}/s")
    finally:
        for load in loads:
            load.close()
        stock.stop()
        bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
