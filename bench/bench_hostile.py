"""The fuzz rate: hostile datagrams per second a server absorbs while it still answers pings within 1 ms p99.

The storm is `oscbridge.tools.hostile` (the attacks of issue 8 and mutations of real traffic, seeded), sent from a
separate process at a fixed rate for a few seconds per step; meanwhile this process sends a ping every 2 ms and
waits at most 50 ms for each answer. Peers in the same run, under the same storm (`bench.peers`):

* a bare Python UDP echo answering the pings (the floor: it parses nothing),
* liblo's C stack (a pyliblo3 `Server` answering `/bridge/ping`),
* python-osc's stock `AsyncIOOSCUDPServer`: its bundle parser loops forever on the first 20-byte bundle with a
  negative element size, so it is reported as hung once it stops answering.

    .venv/bin/python -m bench.bench_hostile [--rates 2000,5000,10000,20000,40000] [--seconds 3]

(from the repository root, after `pip install -e '.[bench]'`)
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
import time
from multiprocessing.connection import Connection

from bench.common import Peer, percentile, print_table
from oscbridge.osc.codec import encode_message
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.hostile import hostile_datagrams
from oscbridge.tools.ports import LOOPBACK

SEED = 8
# (label in the table, bench.peers name; None for the bridge)
SERVERS = (("bare UDP echo (floor)", "echo-pings"), ("liblo (pyliblo3)", "liblo"),
           ("python-osc AsyncIOOSCUDPServer", "python-osc"), ("oscbridge", None))


def storm(port: int, rate: int, seconds: float, conn: Connection) -> None:
    """The sender process: makes the datagrams, says so, waits for the go, then sends them at `rate` per second."""
    datagrams = list(hostile_datagrams(SEED, int(rate * seconds)))
    conn.send("ready")
    conn.recv()
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i, data in enumerate(datagrams):
            if i % 10 == 0:
                ahead = i / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
            try:  # noqa: SIM105 (cheaper than contextlib.suppress at 40,000 sends a second)
                sock.sendto(data, (LOOPBACK, port))
            except OSError:  # ENOBUFS on some kernels: the datagram is simply not sent
                pass


def pings_during_storm(port: int, rate: int, seconds: float) -> tuple[list[float], int, int]:
    """Runs the storm and pings every 2 ms meanwhile; returns (latencies in µs, pings sent, pings lost)."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    sender = multiprocessing.get_context("spawn").Process(target=storm, args=(port, rate, seconds, child),
                                                          daemon=True)
    sender.start()
    if not parent.poll(60) or parent.recv() != "ready":
        raise RuntimeError("the storm did not get ready")
    latencies: list[float] = []
    sent = lost = 0
    parent.send("go")
    deadline = time.perf_counter() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        while time.perf_counter() < deadline:
            request_id = f"p{sent}"
            t0 = time.perf_counter_ns()
            sock.sendto(encode_message("/bridge/ping", [request_id]), (LOOPBACK, port))
            sent += 1
            try:
                while request_id.encode() not in sock.recv(65536):
                    pass
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)
            except TimeoutError:
                lost += 1
            time.sleep(0.002)
    sender.join(30)
    latencies.sort()
    return latencies, sent, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=3.0)
    ns = parser.parse_args()
    rates = [int(r) for r in ns.rates.split(",")]

    rows: list[tuple[str, ...]] = [("server", "hostile/s", "pings", "lost", "p50 µs", "p99 µs")]
    fuzz_rate: dict[str, int] = {}
    for label, peer in SERVERS:
        # One server at a time: a hung python-osc spins a core, which must not weigh on the next server.
        with BridgeProcess() if peer is None else Peer(peer, quiet=True) as server:
            time.sleep(1.0)  # start-up work (imports, the bridge's first writes) is over before the storm
            for rate in rates:
                latencies, sent, lost = pings_during_storm(server.port, rate, ns.seconds)
                rows.append((label, str(rate), str(sent), str(lost), f"{percentile(latencies, 0.5):.0f}",
                             f"{percentile(latencies, 0.99):.0f}"))
                if lost == 0 and percentile(latencies, 0.99) < 1000:
                    fuzz_rate[label] = rate
                if lost == sent:
                    rows.append((label, "", "", "", "hung", "(answers nothing any more)"))
                    break
    print_table(f"Pings every 2 ms during {ns.seconds:.0f} s of hostile traffic (oscbridge.tools.hostile, "
                f"seed {SEED})", rows)
    print("\nFuzz rate (highest rate with no lost ping and p99 < 1 ms):")
    for label, _ in SERVERS:
        print(f"  {label:32} {fuzz_rate.get(label, 0):>6} datagrams/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
