"""The fuzz rate (hostile datagrams per second a server absorbs while it still answers pings within 1 ms p99), and
what greedy TCP clients cost everyone else's UDP round trip.

The storm is `oscbridge.tools.hostile` (the attacks of issue 8 and mutations of real traffic, seeded), sent from a
separate process at a fixed rate for a few seconds per step; meanwhile this process sends a ping every 2 ms and
waits at most 50 ms for each answer. Peers in the same run, under the same storm (`bench.peers`):

* a bare Python UDP echo answering the pings (the floor: it parses nothing),
* liblo's C stack (a pyliblo3 `Server` answering `/bridge/ping`),
* python-osc's stock `AsyncIOOSCUDPServer`: its bundle parser loops forever on the first 20-byte bundle with a
  negative element size, so it is reported as hung once it stops answering.

The greedy phase (issue 8 item 6: before TCP backpressure, one client that sent requests and never read its replies
grew the bridge from 50 to 204 MB and raised everyone else's UDP p99 to 235-460 ms): with 100 mappings set, so
each `/bridge/mapping/list` reply is ~9 kB, 0, 1 and 4 greedy TCP clients (a 4 KiB SO_RCVBUF, requests sent in
bulk from a separate process, never a read) run while this process pings over UDP as above. Per step it reports the
pings, the longest time without an answer (the percentiles leave lost pings out), the bridge's CPU and RSS (before,
peak, after), and when the bridge closed each greedy connection (it stops reading a connection at 1 MiB unsent and
cuts it after `tcp_slow_close`, 5 s, paused). The bare UDP echo is the floor, without greedy clients (it has no TCP
server; python-osc's stock server has none either, and liblo's TCP server is not among the peers).

    .venv/bin/python -m bench.bench_hostile [--phase all|fuzz|greedy] [--rates 2000,5000,10000,20000,40000]
                                            [--seconds 3] [--greedy-seconds 5]

(from the repository root, after `pip install -e '.[bench]'`)
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import psutil

from bench.common import Peer, Requests, cpu_seconds, percentile, print_table
from oscbridge.osc import slip
from oscbridge.osc.codec import encode_message
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.hostile import hostile_datagrams
from oscbridge.tools.ports import LOOPBACK

SEED = 8
# (label in the table, bench.peers name; None for the bridge)
SERVERS = (("bare UDP echo (floor)", "echo-pings"), ("liblo (pyliblo3)", "liblo"),
           ("python-osc AsyncIOOSCUDPServer", "python-osc"), ("oscbridge", None))
MAPPINGS = 100  # rows of /bridge/mapping/list: ~9 kB of replies per 34-byte request, as in tests/test_tcp_limits.py
GREEDY_STEPS = (0, 1, 4)
GREEDY_RCVBUF = 4096  # the client's receive buffer: the kernel takes little of the replies off the bridge's hands
GREEDY_WATCH = 10.0  # seconds past the ping window the greedy clients wait for the bridge to close them


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


def ping_every_2ms(port: int, seconds: float,
                   tick: Callable[[], None] | None = None) -> tuple[list[float], int, int, float]:
    """Pings `port` every 2 ms for `seconds`, waiting at most 50 ms for each answer; returns (latencies in µs,
    sorted, pings sent, pings lost, the longest time in seconds without an answer). The percentiles leave lost
    pings out; the longest silence shows a stall they hide. `tick` runs every 50 pings (~100 ms), outside any
    timed round trip."""
    latencies: list[float] = []
    sent = lost = 0
    last_answer = time.perf_counter()
    silence = 0.0
    deadline = last_answer + seconds
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
                now = time.perf_counter()
                silence, last_answer = max(silence, now - last_answer), now
            except TimeoutError:
                lost += 1
            if tick is not None and sent % 50 == 0:
                tick()
            time.sleep(0.002)
    latencies.sort()
    return latencies, sent, lost, max(silence, time.perf_counter() - last_answer)


def pings_during_storm(port: int, rate: int, seconds: float) -> tuple[list[float], int, int]:
    """Runs the storm and pings every 2 ms meanwhile; returns (latencies in µs, pings sent, pings lost)."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    sender = multiprocessing.get_context("spawn").Process(target=storm, args=(port, rate, seconds, child),
                                                          daemon=True)
    sender.start()
    if not parent.poll(60) or parent.recv() != "ready":
        raise RuntimeError("the storm did not get ready")
    parent.send("go")
    latencies, sent, lost, _ = ping_every_2ms(port, seconds)
    sender.join(30)
    return latencies, sent, lost


def fuzz_phase(rates: list[int], seconds: float) -> None:
    """The storm at each rate against each server; prints the table and each server's fuzz rate."""
    rows: list[tuple[str, ...]] = [("server", "hostile/s", "pings", "lost", "p50 µs", "p99 µs")]
    fuzz_rate: dict[str, int] = {}
    for label, peer in SERVERS:
        # One server at a time: a hung python-osc spins a core, which must not weigh on the next server.
        with BridgeProcess() if peer is None else Peer(peer, quiet=True) as server:
            time.sleep(1.0)  # start-up work (imports, the bridge's first writes) is over before the storm
            for rate in rates:
                latencies, sent, lost = pings_during_storm(server.port, rate, seconds)
                rows.append((label, str(rate), str(sent), str(lost), f"{percentile(latencies, 0.5):.0f}",
                             f"{percentile(latencies, 0.99):.0f}"))
                if lost == 0 and percentile(latencies, 0.99) < 1000:
                    fuzz_rate[label] = rate
                if lost == sent:
                    rows.append((label, "", "", "", "hung", "(answers nothing any more)"))
                    break
    print_table(f"Pings every 2 ms during {seconds:.0f} s of hostile traffic (oscbridge.tools.hostile, "
                f"seed {SEED})", rows)
    print("\nFuzz rate (highest rate with no lost ping and p99 < 1 ms):")
    for label, _ in SERVERS:
        print(f"  {label:32} {fuzz_rate.get(label, 0):>6} datagrams/s")


def greedy(port: int, clients: int, watch: float, conn: Connection) -> None:
    """The greedy process: on the go, opens `clients` TCP connections that send `/bridge/mapping/list` requests as
    fast as the kernel takes them and never read; sends back, per connection, (seconds from the go until the bridge
    closed it or None, requests written), once all are closed or after `watch` seconds. Most requests written wait
    in kernel buffers: the bridge stops reading once paused."""
    burst = slip.encode(encode_message("/bridge/mapping/list", ["g"])) * 1000
    request_size = len(burst) // 1000
    conn.send("ready")
    conn.recv()
    start = time.monotonic()
    socks: list[socket.socket | None] = []
    for _ in range(clients):
        new = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        new.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, GREEDY_RCVBUF)  # before connect: the window follows
        new.connect((LOOPBACK, port))
        new.setblocking(False)
        socks.append(new)
    sent = [0] * clients
    closed: list[float | None] = [None] * clients
    while any(s is not None for s in socks) and time.monotonic() - start < watch:
        for i, sock in enumerate(socks):
            if sock is None:
                continue
            try:
                sent[i] += sock.send(burst[sent[i] % len(burst):])
            except BlockingIOError:
                pass  # the bridge stopped reading: TCP holds the client back
            except OSError:  # reset or broken pipe: the bridge closed the connection
                closed[i] = time.monotonic() - start
                sock.close()
                socks[i] = None
        time.sleep(0.005)
    for sock in socks:
        if sock is not None:
            sock.close()
    conn.send([(closed[i], sent[i] // request_size) for i in range(clients)])


def greedy_step(port: int, pid: int | None, clients: int, seconds: float) -> tuple[str, ...]:
    """One row: pings every 2 ms for `seconds` while `clients` greedy clients run against the server on `port`
    (the bridge when `pid` is given: its CPU and RSS are read too)."""
    proc = psutil.Process(pid) if pid is not None else None
    rss_before = proc.memory_info().rss if proc is not None else 0
    peak = [rss_before]

    def sample() -> None:
        if proc is not None:
            peak[0] = max(peak[0], proc.memory_info().rss)

    sender = None
    if clients:
        parent, child = multiprocessing.get_context("spawn").Pipe()
        sender = multiprocessing.get_context("spawn").Process(
            target=greedy, args=(port, clients, seconds + GREEDY_WATCH, child), daemon=True)
        sender.start()
        if not parent.poll(60) or parent.recv() != "ready":
            raise RuntimeError("the greedy clients did not get ready")
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    wall = time.perf_counter()
    if sender is not None:
        parent.send("go")
    latencies, sent, lost, silence = ping_every_2ms(port, seconds, sample)
    cpu = 100 * (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall) if pid is not None else None
    closes = "-"
    if sender is not None:
        if not parent.poll(seconds + GREEDY_WATCH + 30):
            raise RuntimeError("the greedy clients did not report")
        results: list[tuple[float | None, int]] = parent.recv()
        sender.join(10)
        times = sorted(t for t, _ in results if t is not None)
        still_open = sum(t is None for t, _ in results)
        closes = (f"{len(times)}/{clients} at {times[0]:.1f}-{times[-1]:.1f} s" if times else f"0/{clients}")
        closes += f" ({still_open} still open)" if still_open else ""
        closes += f", {sum(n for _, n in results)} requests written"
    sample()
    rss = "-"
    if proc is not None:
        rss = f"{rss_before / 2**20:.0f} / {peak[0] / 2**20:.0f} / {proc.memory_info().rss / 2**20:.0f}"
    return (str(clients), str(sent), str(lost), f"{percentile(latencies, 0.5):.0f}",
            f"{percentile(latencies, 0.99):.0f}", f"{1000 * silence:.0f}", "-" if cpu is None else f"{cpu:.0f} %",
            rss, closes)


def set_mappings(port: int) -> None:
    """Sets MAPPINGS track mappings, so that each `/bridge/mapping/list` reply is MAPPINGS rows (~9 kB)."""
    requests = Requests(port)
    try:
        for n in range(1, MAPPINGS + 1):
            requests.call("/bridge/mapping/set", n, f"Track {n}", f"TR{n}")
        if len(requests.rows("/bridge/mapping/list")) != MAPPINGS:
            raise RuntimeError(f"the bridge does not list the {MAPPINGS} mappings just set")
    finally:
        requests.close()


def tcp_counters(port: int) -> dict[str, int]:
    """The `tcp.*` counters of `/bridge/stats` (connections open now; paused and closed connections so far)."""
    requests = Requests(port)
    try:
        return {k: v for k, v in requests.stats().items() if k.startswith("tcp.")}
    finally:
        requests.close()


def wait_no_tcp(port: int, timeout: float = 15.0) -> None:
    """Waits until the bridge holds no TCP connection (the last step's greedy clients are gone)."""
    deadline = time.monotonic() + timeout
    while tcp_counters(port)["tcp.connections"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bridge still holds TCP connections after {timeout:.0f} s")
        time.sleep(0.1)


def greedy_phase(seconds: float) -> None:
    """The floor, then the bridge with 0, 1 and 4 greedy TCP clients; prints the table and the bridge's TCP
    counters."""
    rows: list[tuple[str, ...]] = [("server", "greedy", "pings", "lost", "p50 µs", "p99 µs", "longest silence ms",
                                    "CPU", "RSS MB before/peak/after", "greedy connections closed (from connect)")]
    with Peer("echo-pings", quiet=True) as echo:
        time.sleep(1.0)
        rows.append(("bare UDP echo (floor)", *greedy_step(echo.port, None, 0, seconds)))
    with BridgeProcess() as bridge:
        set_mappings(bridge.port)
        time.sleep(1.0)  # the mappings' writes are drained before the first step
        for clients in GREEDY_STEPS:
            wait_no_tcp(bridge.port)
            rows.append(("oscbridge", *greedy_step(bridge.port, bridge.pid, clients, seconds)))
        wait_no_tcp(bridge.port)
        counters = tcp_counters(bridge.port)
    print_table(f"Pings every 2 ms during {seconds:.0f} s with greedy TCP clients (never read; {MAPPINGS} mappings, "
                f"~9 kB per /bridge/mapping/list reply)", rows)
    print("\nBridge TCP counters after the phase: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("all", "fuzz", "greedy"), default="all")
    parser.add_argument("--rates", default="2000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=3.0, help="per storm rate")
    parser.add_argument("--greedy-seconds", type=float, default=5.0, help="ping window per greedy step")
    ns = parser.parse_args()
    if ns.phase in ("all", "fuzz"):
        fuzz_phase([int(r) for r in ns.rates.split(",")], ns.seconds)
    if ns.phase in ("all", "greedy"):
        greedy_phase(ns.greedy_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
