"""Round-trip latency of /bridge/mapping/track over UDP loopback, and CPU per received datagram.

Latency: the bridge (a real `oscbridge serve` process on its embedded PostgreSQL) beside, in the same run, the
servers of `bench.peers`: a bare Python UDP echo (the floor any Python UDP service sits on), the same echo on
asyncio+uvloop, python-osc's stock AsyncIOOSCUDPServer and liblo's C stack (pyliblo3), the last two answering
/bridge/mapping/track with the bridge's reply (checked before measuring). One request in flight at a time from a
blocking client socket; p50 and p99 in microseconds. Targets (issue 2): p50 within 2x of the floor, p99 under 1 ms.

CPU per datagram: the same fire-and-forget datagrams sent at a fixed rate to the bridge, to python-osc's server and
to liblo's, each mapping the same addresses; CPU time of the server process (user + system, from psutil) divided by
the datagrams it received. Targets: the bridge costs at most what python-osc does; telemetry at most 12 µs
(issue 9).

Client and servers are pinned to one core (Linux), so a round trip is two context switches rather than two
cross-core wake-ups (~40 µs each on the 2-core VM this was written on, which swamp the rest).

    .venv/bin/python -m bench.bench_latency [--requests 5000] [--rate 5000] [--seconds 4]

(from the repository root, after `pip install -e '.[bench]'`)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from bench.common import Peer, Requests, cpu_seconds, peer_count, percentile, pin, print_table
from oscbridge.osc.codec import decode_packet, encode_message
from oscbridge.protocol import RMS, RMS_TAGS, TELEMETRY, TELEMETRY_TAGS
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.ports import LOOPBACK

CORE = 1
ROUNDS = 10
TRACK_REQUEST = encode_message("/bridge/mapping/track", ["bench-1", "TR1"])
# (label in the tables, bench.peers name)
ECHOES = (("bare Python UDP echo (floor)", "echo"), ("asyncio+uvloop UDP echo", "uvloop-echo"))
OSC_PEERS = (("python-osc AsyncIOOSCUDPServer", "python-osc"), ("liblo (pyliblo3)", "liblo"))
BRIDGE = "oscbridge"


def measure_latency(port: int, request: bytes, n: int, warmup: int = 300) -> list[float]:
    """Round trips of `request` in microseconds, one in flight, after `warmup` unmeasured ones."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        sock.settimeout(2.0)
        samples: list[float] = []
        for i in range(n + warmup):
            t0 = time.perf_counter_ns()
            sock.send(request)
            sock.recv(65536)
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return samples


def reply_to(port: int, request: bytes) -> list[object]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(request, (LOOPBACK, port))
        (message,) = decode_packet(sock.recv(65536))
        return [message.address, message.tags, *message.args]


def blast(port: int, datagrams: list[bytes], rate: int, seconds: float) -> int:
    """Sends `rate` datagrams per second for `seconds`, cycling through `datagrams`; returns how many."""
    sent = 0
    start = time.perf_counter()
    slice_len = 0.005
    per_slice = max(1, int(rate * slice_len))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) + per_slice
            while sent < due:
                sock.send(datagrams[sent % len(datagrams)])
                sent += 1
            time.sleep(slice_len / 2)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=5000, help="datagrams per second for the CPU measurement")
    parser.add_argument("--seconds", type=float, default=4.0)
    ns = parser.parse_args()

    with ExitStack() as stack:
        peers = {name: stack.enter_context(Peer(name)) for _, name in ECHOES + OSC_PEERS}
        bridge = stack.enter_context(BridgeProcess())
        requests = Requests(bridge.port)
        stack.callback(requests.close)
        requests.call("/bridge/mapping/set", 1, "Kick", "TR1")
        expected = reply_to(bridge.port, TRACK_REQUEST)
        for label, name in OSC_PEERS:
            if (got := reply_to(peers[name].port, TRACK_REQUEST)) != expected:
                raise SystemExit(f"{label} answers {got}, the bridge {expected}")

        pin(os.getpid(), CORE)
        for pid in [bridge.pid, *(peer.pid for peer in peers.values())]:
            pin(pid, CORE)

        # Interleaved rounds so that all servers see the same machine conditions (this VM's wake-up latency
        # drifts by tens of microseconds over seconds).
        servers = [(label, peers[name].port) for label, name in ECHOES + OSC_PEERS]
        servers.append((f"{BRIDGE} /bridge/mapping/track", bridge.port))
        samples: dict[str, list[float]] = {label: [] for label, _ in servers}
        for _ in range(ROUNDS):
            for label, port in servers:
                samples[label] += measure_latency(port, TRACK_REQUEST, ns.requests // ROUNDS, warmup=50)
        rows: list[tuple[str, ...]] = [("server", "p50 µs", "p99 µs", "mean µs")]
        for label, values in samples.items():
            values.sort()
            rows.append((label, f"{percentile(values, 0.5):.1f}", f"{percentile(values, 0.99):.1f}",
                         f"{sum(values) / len(values):.1f}"))
        print_table(f"Round trip over UDP loopback, {ns.requests} requests in {ROUNDS} interleaved rounds, "
                    "one in flight", rows)
        ours, floor = samples[servers[-1][0]], samples[ECHOES[0][0]]
        print(f"  p50 ratio to the floor: {percentile(ours, 0.5) / percentile(floor, 0.5):.2f}x (target <= 2x); "
              f"p99 {percentile(ours, 0.99):.0f} µs (target < 1000 µs)")

        workloads = {
            "telemetry": [encode_message(TELEMETRY, [f"TR{i}", 0.2, -16.0, -53.6, -100.0, -100.0], TELEMETRY_TAGS)
                          for i in range(1, 33)]
            + [encode_message(RMS, [f"TR{i}", 0.2], RMS_TAGS) for i in range(1, 33)],
            "fire-and-forget /bridge/mapping/track": [encode_message("/bridge/mapping/track", ["", "TR1"])],
        }
        def bridge_received() -> int:
            """Datagrams in, less this benchmark's requests (the /bridge/stats that reads the counter included)."""
            packets = requests.stats()["router.packets_in"]
            return packets - requests.n

        counters: list[tuple[str, int, int, Callable[[], int]]] = [
            (label, peers[name].port, peers[name].pid, partial(peer_count, peers[name].port))
            for label, name in OSC_PEERS]
        counters.append((BRIDGE, bridge.port, bridge.pid, bridge_received))
        rows = [("workload", "server", "sent", "received", "CPU µs/datagram")]
        for workload, datagrams in workloads.items():
            for label, port, pid, received_so_far in counters:
                before = received_so_far()
                cpu0 = cpu_seconds(pid)
                sent = blast(port, datagrams, ns.rate, ns.seconds)
                time.sleep(0.5)
                cpu = cpu_seconds(pid) - cpu0
                received = received_so_far() - before
                rows.append((workload, label, str(sent), str(received), f"{cpu / max(received, 1) * 1e6:.1f}"))
        print_table(f"CPU per received datagram at {ns.rate}/s for {ns.seconds:.0f} s (server process only)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
