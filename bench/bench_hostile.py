"""The fuzz rate: hostile datagrams per second a server absorbs while it still answers pings within 1 ms p99.

The storm is `oscbridge.tools.hostile` (the attacks of issue 8 and mutations of real traffic, seeded), sent from a
separate process at a fixed rate for a few seconds per step; meanwhile this process sends a ping every 2 ms and
waits at most 50 ms for each answer. Peers in the same run, under the same storm:

* a bare Python UDP echo (the floor: it parses nothing),
* liblo's C stack (pyliblo3 `Server` answering `/bridge/ping`),
* python-osc's stock `AsyncIOOSCUDPServer`: its bundle parser loops forever on the first 20-byte bundle with a
  negative element size, so it is reported as hung once it stops answering.

    python bench/bench_hostile.py [--rates 2000,5000,10000,20000,40000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BridgeProcess, free_port, percentile, print_table
from oscbridge.osc.codec import encode_message

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    data, addr = s.recvfrom(65536)
    if data.startswith(b"/bridge/ping"):
        s.sendto(data, addr)
"""

LIBLO = """
import sys, pyliblo3 as liblo
server = liblo.Server(int(sys.argv[1]), liblo.UDP)
def ping(path, args, types, src):
    server.send(src, "/bridge/ping/reply", args[0], "ok")
server.add_method("/bridge/ping", "s", ping)
while True:
    server.recv(100)
"""

STOCK = """
import asyncio, sys
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import AsyncIOOSCUDPServer
def ping(client, address, *args):
    return ("/bridge/ping/reply", [args[0] if args else "", "ok"])
d = Dispatcher(strict_timing=False)
d.map("/bridge/ping", ping, needs_reply_address=True)
async def main():
    server = AsyncIOOSCUDPServer(("127.0.0.1", int(sys.argv[1])), d, asyncio.get_running_loop())
    await server.create_serve_endpoint()
    await asyncio.Event().wait()
asyncio.run(main())
"""

SENDER = """
import socket, sys, time
from oscbridge.tools.hostile import hostile_datagrams
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
datagrams = list(hostile_datagrams(8, int(rate * seconds)))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for i, data in enumerate(datagrams):
    if i % 10 == 0:
        ahead = i / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
    try:
        sock.sendto(data, ("127.0.0.1", port))
    except OSError:
        pass
"""


def pings_during_storm(port: int, rate: int, seconds: float) -> tuple[list[float], int, int]:
    """Runs the storm and pings every 2 ms meanwhile; returns (latencies in µs, pings sent, pings lost)."""
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(rate), str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None and sender.stdin is not None
    sender.stdout.readline()  # the datagrams are made; the storm starts now
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    latencies: list[float] = []
    sent = lost = 0
    sender.stdin.write("go\n")
    sender.stdin.flush()
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            request = encode_message("/bridge/ping", [f"p{sent}"])
            t0 = time.perf_counter_ns()
            sock.sendto(request, ("127.0.0.1", port))
            sent += 1
            try:
                while True:
                    data, _ = sock.recvfrom(65536)
                    if f"p{sent - 1}".encode() in data:
                        latencies.append((time.perf_counter_ns() - t0) / 1000.0)
                        break
            except TimeoutError:
                lost += 1
            time.sleep(0.002)
    finally:
        sock.close()
        sender.wait(30)
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
    names = ["bare UDP echo (floor)", "liblo (pyliblo3)", "python-osc AsyncIOOSCUDPServer", "oscbridge"]
    for name, program in zip(names, (ECHO, LIBLO, STOCK, None), strict=True):
        # One server at a time: a hung python-osc spins a core, which must not weigh on the next server.
        bridge = BridgeProcess() if program is None else None
        port = bridge.port if bridge is not None else free_port()
        proc = None if program is None else subprocess.Popen([sys.executable, "-c", program, str(port)],
                                                             stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            for rate in rates:
                latencies, sent, lost = pings_during_storm(port, rate, ns.seconds)
                rows.append((name, str(rate), str(sent), str(lost), f"{percentile(latencies, 0.5):.0f}",
                             f"{percentile(latencies, 0.99):.0f}"))
                if lost == 0 and percentile(latencies, 0.99) < 1000:
                    fuzz_rate[name] = rate
                if lost == sent:
                    rows.append((name, "", "", "", "hung", "(answers nothing any more)"))
                    break
        finally:
            if bridge is not None:
                bridge.stop()
            if proc is not None:
                proc.kill()
                proc.wait(5)
    print_table(f"Pings every 2 ms during {ns.seconds:.0f} s of hostile traffic (oscbridge.tools.hostile, seed 8)", rows)
    print("\nFuzz rate (highest rate with no lost ping and p99 < 1 ms):")
    for name in names:
        print(f"  {name:32} {fuzz_rate.get(name, 0):>6} datagrams/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
