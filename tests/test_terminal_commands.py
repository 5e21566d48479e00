"""The terminal commands (docs/terminal.md) against a bridge running in-process with simulated plugins: headed
tables (plain when piped, drawn in colour on a pseudo-terminal), `--json` with the same facts, and one line on
stderr with exit code 1 when no bridge answers or a request fails.

Most commands run through `oscbridge.cli.main` in a thread (the bridge keeps running in the test's event loop);
the no-bridge and terminal tests run `python -m oscbridge` as a user does.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import math
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path

from oscbridge.cli import main
from oscbridge.client import BridgeClient
from oscbridge.tools.fake_ollama import FakeOllama
from oscbridge.tools.sim.plugin import PluginFleet
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.calibrate import interactive
from oscbridge.tools.terminal.output import Output
from oscbridge.tools.terminal.tail import Filter, tail
from tests.conftest import free_port, make_settings, run_cli, running, wait_until
from tests.hub_support import hub_settings, sim_config
from tests.pty_support import ANSI, plain, terminal_env


@dataclass
class Result:
    code: int
    out: str
    err: str


async def command(*argv: str) -> Result:
    """`oscbridge ARGV...` through the real command line, in a thread, with stdout and stderr captured (piped)."""

    def invoke() -> Result:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
        return Result(code, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(invoke)


def cells(line: str) -> list[str]:
    """The cells of a piped table line (columns are at least two spaces apart; empty cells vanish)."""
    return re.split(r"\s{2,}", line.strip())


def no_ollama() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: Ollama is down, as on many machines


async def test_calibrate_plugins_tracks_and_levels(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8, ollama_url=no_ollama())
    at = ("--osc-port", str(settings.osc_port))
    async with running(settings), PluginFleet(3, sim_config(settings), interval=0.0) as fleet:
        await fleet.wait_all(lambda p: p.state == "bound", timeout=5)

        # Every track muted: no plugin stands out, nothing is assigned, and the tone is switched off again.
        refused = await command("calibrate", "--assign", "TR9", "--track", "9", *at)
        assert refused.code == 1 and "no plugin stands out" in refused.err and refused.err.count("\n") == 1
        assert "tone on (137 Hz, -10 dB): 3 plugins acknowledged" in refused.out
        assert "tone off: 3 plugins acknowledged" in refused.out and not any(p.tone_on for p in fleet)

        # Track 2 unmuted: its plugin is the loudest and confirms TR2; each step says what happened.
        fleet[1].muted = False
        done = await command("calibrate", "--assign", "TR2", "--track", "2", "--name", "Snare", *at)
        assert done.code == 0, done.err
        lines = done.out.splitlines()
        probe = lines.index("Probe: plugins without a track id, loudest first")
        assert cells(lines[probe + 1]) == ["instance id", "port", "rms dbfs"]
        assert cells(lines[probe + 2])[:2] == [fleet[1].temp_id, str(fleet[1].port)]
        assert f"choose: {fleet[1].temp_id} on port {fleet[1].port}" in done.out
        assert (f"assign: TR2 confirmed by plugin {fleet[1].temp_id} on port {fleet[1].port}; track 2 'Snare'"
                in lines)
        assert fleet[1].track_id == "TR2" and lines[-1] == "tone off: 3 plugins acknowledged"

        # The same as one JSON document.
        fleet[1].muted, fleet[0].muted = True, False
        doc = json.loads((await command("calibrate", "--assign", "TR1", "--track", "1", "--name", "Kick",
                                        "--json", *at)).out)
        steps = doc["steps"]
        assert [step["step"] for step in steps] == ["tone", "probe", "choose", "assign", "tone"]
        assert {row["instance_id"] for row in steps[1]["plugins"]} == {fleet[0].temp_id, fleet[2].temp_id}
        assert steps[2]["instance_id"] == fleet[0].temp_id and steps[2]["margin_db"] > 10
        assert steps[3] == {"step": "assign", "instance_id": fleet[0].temp_id, "plugin_id": "TR1", "track_number": 1,
                            "track_name": "Kick", "confirmed": True, "port": fleet[0].port}
        assert fleet[0].track_id == "TR1"

        # Interactive: the questions a person answers (Enter takes the suggestion), then the tone goes off.
        fleet[0].muted, fleet[2].muted = True, False
        answers = iter(["3", "Hat", "", "", "q"])
        questions: list[str] = []

        def ask(question: str, default: str) -> str:
            questions.append(question)
            return next(answers) or default

        buffer = io.StringIO()

        async def interact() -> int:
            async with session.connect("127.0.0.1", settings.osc_port) as bridge:
                return await interactive(bridge, Output(buffer), (137.0, -10.0), ask=ask, confirm=lambda q: True)

        assert await asyncio.to_thread(asyncio.run, interact()) == 0
        said = buffer.getvalue().splitlines()
        assert questions == ["Track number, or q to finish", "Track name", "Track id",
                             "Unmute track 3 in Logic, mute the others, then press Enter to probe (s to skip)",
                             "Track number, or q to finish"]
        assert f"choose: {fleet[2].temp_id} on port {fleet[2].port} at " in buffer.getvalue()
        assert f"assign: TR3 confirmed by plugin {fleet[2].temp_id} on port {fleet[2].port}; track 3 'Hat'" in said
        assert said[-1] == "tone off: 3 plugins acknowledged" and fleet[2].track_id == "TR3"

        # An error reply: its request, code and message, in one line.
        wrong = await command("calibrate", "--assign", "TR3", "--track", "3", "--instance", "nobody", "--no-tone",
                              *at)
        assert wrong.code == 1 and wrong.err.startswith("oscbridge: /bridge/calibrate/assign failed: error "
                                                        "not_found: ") and wrong.err.count("\n") == 1

        # plugins: the instances with the tracks their track ids are mapped to.
        title, header, *rows = (await command("plugins", *at)).out.splitlines()
        assert title == "Plugins"
        assert cells(header) == ["instance id", "port", "state", "plugin id", "track number", "track name",
                                 "seconds since heard"]
        by_id = {cells(row)[0]: cells(row) for row in rows}
        assert by_id[fleet[1].temp_id][1:6] == [str(fleet[1].port), "identified", "TR2", "2", "Snare"]
        assert by_id[fleet[2].temp_id][1:6] == [str(fleet[2].port), "identified", "TR3", "3", "Hat"]
        listed = json.loads((await command("plugins", "--json", *at)).out)["plugins"]
        assert {p["instance_id"]: (p["port"], p["state"], p["plugin_id"], p["track_number"], p["track_name"])
                for p in listed} == {
            fleet[0].temp_id: (fleet[0].port, "identified", "TR1", 1, "Kick"),
            fleet[1].temp_id: (fleet[1].port, "identified", "TR2", 2, "Snare"),
            fleet[2].temp_id: (fleet[2].port, "identified", "TR3", 3, "Hat")}

        # tracks: the mapping, by track number.
        title, header, *rows = (await command("tracks", *at)).out.splitlines()
        assert title == "Tracks" and cells(header) == ["track number", "track name", "plugin id", "port",
                                                       "instance id"]
        assert [cells(row) for row in rows] == [["1", "Kick", "TR1", str(fleet[0].port), fleet[0].temp_id],
                                                ["2", "Snare", "TR2", str(fleet[1].port), fleet[1].temp_id],
                                                ["3", "Hat", "TR3", str(fleet[2].port), fleet[2].temp_id]]
        tracks = json.loads((await command("tracks", "--json", *at)).out)["tracks"]
        assert tracks == [{"track_number": n, "track_name": name, "plugin_id": f"TR{n}", "port": plugin.port,
                           "instance_id": plugin.temp_id}
                          for n, name, plugin in zip((1, 2, 3), ("Kick", "Snare", "Hat"), fleet, strict=True)]

        # call: a header row of the same names on request (scripts reading a pipe get none by default).
        raw = await command("call", "/bridge/mapping/list", *at)
        assert raw.out.splitlines()[0] == f"1\tKick\tTR1\t{fleet[0].port}\t{fleet[0].temp_id}"
        headed = await command("call", "/bridge/mapping/list", "--header", *at)
        assert headed.out.splitlines() == ["track_number\ttrack_name\tplugin_id\tport\tinstance_id",
                                           *raw.out.splitlines()]

        # levels: the identified plugins stream telemetry.
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await wait_until(lambda: _levels_of(client, {"TR1", "TR2", "TR3"}))
        await client.close()
        title, header, *rows = (await command("levels", *at)).out.splitlines()
        assert title == "Levels" and cells(header) == ["track number", "plugin id", "rms dbfs", "band 1 db",
                                                       "band 2 db", "band 3 db", "band 4 db",
                                                       "seconds since update", "track name"]
        assert [(row[0], row[1], row[-1]) for row in map(cells, rows)] == [
            ("1", "TR1", "Kick"), ("2", "TR2", "Snare"), ("3", "TR3", "Hat")]
        levels = json.loads((await command("levels", "--json", *at)).out)["levels"]
        assert [(row["track_number"], row["plugin_id"], row["track_name"]) for row in levels] == [
            (1, "TR1", "Kick"), (2, "TR2", "Snare"), (3, "TR3", "Hat")]
        assert all(isinstance(row["rms_dbfs"], float) and row["rms_dbfs"] <= 0 for row in levels)

        # levels --watch, piped: a header once, then one aligned line per track and round, the time first.
        watched = (await command("levels", "--watch", "--count", "3", "--interval", "0.05", *at)).out.splitlines()
        assert cells(watched[0])[:3] == ["time", "track number", "plugin id"] and len(watched) == 1 + 3 * 3
        assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} +([123]) +TR\1 ", line) for line in watched[1:])
        assert len({line.index("TR") for line in watched[1:]}) == 1  # the columns line up across rounds
        rounds = (await command("levels", "--watch", "--count", "2", "--interval", "0.05", "--json", *at)).out
        assert [[row["plugin_id"] for row in json.loads(line)["levels"]] for line in rounds.splitlines()] == [
            ["TR1", "TR2", "TR3"]] * 2

        # tail: the plugin control traffic the bridge stored, matched on its OSC address.
        confirmed = (await command("tail", "--no-follow", "-n", "500", "--address", "/aiplayer/port_confirm*",
                                   *at)).out.splitlines()
        assert cells(confirmed[0]) == ["seq", "time", "type", "sender", "receiver", "severity", "content"]
        contents = [cells(line)[-1] for line in confirmed[1:]]
        assert all(text.startswith("/aiplayer/port_confirmed ,sis ") for text in contents)
        assert {text.split()[2] for text in contents} == {p.temp_id for p in fleet}


async def _levels_of(client: BridgeClient, tracks: set[str]) -> bool:
    return {row[0] for row in await client.rows("/bridge/levels")} >= tracks


async def test_tail_search_and_errors(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, ollama_url=no_ollama())
    at = ("--osc-port", str(settings.osc_port))
    async with running(settings):
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/debug/log", "orchestrator", "", "log", "/aiplayer/set_parameter ,sf GAIN -3", "",
                          "info")
        await client.call("/bridge/debug/log", "mixer", "", "log", "someone else", "", "info")
        await client.call("/bridge/debug/log", "orchestrator", "TR1", "command", "two\nlines [bold]as is[/]", "",
                          "warning")

        # tail --no-follow: the last rows of one sender; their text as it is, one line per row.
        lines = (await command("tail", "--no-follow", "--sender", "orchestrator", *at)).out.splitlines()
        assert len(lines) == 3 and cells(lines[0])[0] == "seq"
        assert cells(lines[1])[2:] == ["log", "orchestrator", "info", "/aiplayer/set_parameter ,sf GAIN -3"]
        assert cells(lines[2])[2:] == ["command", "orchestrator", "TR1", "warning", "two\\nlines [bold]as is[/]"]
        one = (await command("tail", "--no-follow", "-n", "1", "--address", "/aiplayer/*", *at)).out.splitlines()
        assert len(one) == 2 and one[1].endswith("/aiplayer/set_parameter ,sf GAIN -3")
        rows = [json.loads(line) for line in (await command("tail", "--no-follow", "--json", *at)).out.splitlines()]
        assert [(r["sender"], r["content"]) for r in rows] == [
            ("orchestrator", "/aiplayer/set_parameter ,sf GAIN -3"), ("mixer", "someone else"),
            ("orchestrator", "two\nlines [bold]as is[/]")]
        assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)

        # A long list (one datagram per row over UDP would overflow the client's receive buffer) arrives whole.
        tcp = await BridgeClient.connect("127.0.0.1", settings.osc_port, transport="tcp")
        await asyncio.gather(*(tcp.call("/bridge/debug/log", "bulk", "", "log", f"row {n}", "", "debug")
                               for n in range(400)))
        await tcp.close()
        bulk = (await command("tail", "--no-follow", "-n", "500", "--sender", "bulk", *at)).out.splitlines()
        assert [cells(line)[-1] for line in bulk[1:]] == [f"row {n}" for n in range(400)]

        # Following: rows logged while it runs come out as they arrive, after one header. The follower prints its
        # header once it knows where the bridge's rows end; only rows logged after that are its to show.
        buffer, done = io.StringIO(), threading.Event()

        async def follow() -> None:
            async with session.connect("127.0.0.1", settings.osc_port) as bridge:
                tailing = asyncio.ensure_future(tail(bridge, Output(buffer), Filter(sender="orchestrator"),
                                                     lines=0, follow=True, interval=0.05))
                while not (done.is_set() or tailing.done()):
                    await asyncio.sleep(0.05)
                tailing.cancel()
                with suppress(asyncio.CancelledError):
                    await tailing  # a failure of the follower itself is raised here

        def followed() -> list[str]:
            return buffer.getvalue().splitlines()

        following = asyncio.ensure_future(asyncio.to_thread(asyncio.run, follow()))
        try:
            await wait_until(lambda: followed() or following.done(), timeout=10)
            assert followed() and cells(followed()[0])[0] == "seq"
            # The other sender's row comes between the two: once the second is out, it has been passed over.
            for sender, text in (("orchestrator", "first while following"), ("mixer", "not this one"),
                                 ("orchestrator", "second while following")):
                await client.call("/bridge/debug/log", sender, "", "log", text, "", "info")
            await wait_until(lambda: "second while following" in buffer.getvalue() or following.done(), timeout=10)
        finally:
            done.set()
            await following
        assert [cells(line)[-1] for line in followed()[1:]] == ["first while following", "second while following"]

        # search: what the context search found, with its score and why.
        for text in ("Reduce the kick GAIN by 3 dB", "The snare needs presence", "Bass is muddy"):
            await client.call("/bridge/message/save", "assistant", text, "llama", 0, "", 1)
        await wait_until(lambda: _found(client, "kick", 3))
        expected = await client.rows("/bridge/context/search", "kick gain", 5)
        title, header, first, *rest = (await command("search", "kick", "gain", "--limit", "5", *at)).out.splitlines()
        assert title == "Context for 'kick gain'"
        assert cells(header) == ["score", "why", "role", "created at", "content"]
        assert cells(first)[1:3] == [expected[0][5], "assistant"] and "keyword" in cells(first)[1]
        assert cells(first)[-1] == "Reduce the kick GAIN by 3 dB" and len(rest) == 2
        found = json.loads((await command("search", "kick", "gain", "--limit", "5", "--json", *at)).out)
        assert found["query"] == "kick gain"
        assert [(r["message_id"], r["why"]) for r in found["results"]] == [(row[0], row[5]) for row in expected]

        # An error reply of `call`: code and message; bad flags are refused before anything is sent.
        bad = await command("call", "/bridge/mapping/set", "0", "Bass", "TR3", *at)
        assert bad.code == 1 and bad.out == ""
        assert bad.err == ("oscbridge: /bridge/mapping/set failed: error bad_request: track_number must be at least "
                           "1, got 0\n")
        assert (await command("tail", "--address", "aiplayer", *at)).code == 2
        await client.close()


async def _found(client: BridgeClient, query: str, count: int) -> bool:
    return len(await client.rows("/bridge/context/search", query, 10)) >= count


async def test_status_names_every_fact_and_the_embedding_backlog(tmp_path: Path, database_url: str,
                                                                 fake: FakeOllama) -> None:
    fake.set_fail(503, message="busy")
    settings = make_settings(tmp_path, database_url, ollama_url=fake.url, embed_batch_size=1, embed_retry_max=0.2,
                             embed_timeout=2.0)
    at = ("--osc-port", str(settings.osc_port))
    async with running(settings):
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        for n in range(12):
            await client.call("/bridge/message/save", "assistant", f"message {n}", "llama", 0, "", 1)
        await wait_until(lambda: _stat(client, "memory.backlog", 12))

        # Ollama refuses: twelve messages wait, none is embedded.
        doc = json.loads((await command("status", "--json", "--sample", "0.2", *at)).out)
        assert doc["embedding"] == {"backlog": 12, "embedded_since_start": 0, "rate_per_second": 0.0,
                                    "seconds_left": None}
        status = await client.call("/bridge/status")
        assert doc["plugins"] == {"bound": status[0], "identified": status[1]}
        assert doc["database"] == {"up": True} and doc["ollama"] == {"up": False}
        assert set(doc["writes"]) == {"queued", "spooled", "spool_bytes", "rejected", "dropped_best_effort"}
        assert doc["disk"]["free_mib"] == status[6] or abs(doc["disk"]["free_mib"] - status[6]) < 64
        assert doc["bridge"]["port"] == settings.osc_port and doc["bridge"]["version"]
        health = await client.rows("/bridge/health")
        assert [(h["name"], h["status"]) for h in doc["health"]] == [(row[0], row[1]) for row in health]
        assert "messages" in {row["table"] for row in doc["storage"]["tables"]}
        assert doc["storage"]["database_bytes"] > 0
        assert doc["stats"]["memory.backlog"] == 12 and doc["stats"]["router.packets_in"] > 0

        text = (await command("status", "--sample", "0", *at)).out.splitlines()
        for title in ("Bridge", "Health", "Storage", "Counters"):
            assert title in text
        assert cells(text[text.index("Bridge") + 1]) == ["fact", "value"]
        assert cells(text[text.index("Health") + 1]) == ["name", "status", "text"]
        assert cells(text[text.index("Storage") + 1]) == ["table", "rows", "size"]
        assert cells(text[text.index("Counters") + 1]) == ["name", "value"]
        facts = {cells(line)[0]: cells(line)[1] for line in text[2:text.index("Health") - 1]}
        assert facts["database"] == "up" and facts["ollama"] == "down"
        assert facts["embedding backlog"] == "12 messages waiting"
        rows = text[text.index("Health") + 2:text.index("Storage") - 1]
        assert [cells(row)[:2] for row in rows] == [[row[0], row[1]] for row in health]

        # Ollama answers, slowly (0.1 s a message): the rate and the time left are measured.
        fake.set_delay(0.1, "/api/embed")
        fake.set_fail(None)
        await wait_until(lambda: _stat(client, "memory.embedded", 1), timeout=10)
        embedding = json.loads((await command("status", "--json", "--sample", "0.6", *at)).out)["embedding"]
        assert 0 < embedding["backlog"] < 12 and embedding["embedded_since_start"] >= 2
        assert embedding["rate_per_second"] > 0 and embedding["seconds_left"] > 0
        await client.close()


async def _stat(client: BridgeClient, name: str, at_least: int) -> bool:
    value: int = dict(await client.rows("/bridge/stats")).get(name, 0)
    return value >= at_least


COMMANDS: list[list[str]] = [["status"], ["plugins"], ["tracks"], ["levels"], ["tail"], ["search", "kick"],
                             ["calibrate", "--probe"], ["call", "/bridge/ping"]]


def test_without_a_bridge_every_command_says_how_to_start_one(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    procs = [subprocess.Popen([sys.executable, "-m", "oscbridge", *argv, "--osc-port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in COMMANDS]
    for argv, proc in zip(COMMANDS, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and out == "", (argv, err)
        assert err == (f"oscbridge: no bridge answers on 127.0.0.1:{port} (no reply to /bridge/ping within 1 s): "
                       "start it with `oscbridge serve`, or as a service with `oscbridge launchd install`\n"), argv


def on_a_terminal(argv: list[str]) -> str:
    """What `python -m oscbridge ARGV...` writes to a 160-column pseudo-terminal (stdout and stderr), as a person
    sees it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "oscbridge", *argv], stdin=follower, stdout=follower,
                            stderr=follower, env=terminal_env(os.environ), close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command ended and closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    return b"".join(chunks).decode()


async def test_on_a_terminal_tables_are_drawn_in_colour_and_piped_they_are_plain(tmp_path: Path,
                                                                                 database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, ollama_url=no_ollama())
    at = ["--osc-port", str(settings.osc_port)]
    async with running(settings):
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
        await client.close()
        drawn = await asyncio.to_thread(on_a_terminal, ["status", "--sample", "0", *at])
        piped = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "oscbridge", "status", "--sample",
                                                         "0", *at], capture_output=True, text=True, timeout=30)
        assert "\x1b[" in drawn and "─" in drawn  # colours, and the rule under each header
        assert "\x1b[32mok" in drawn  # a health status in green
        plain = ANSI.sub("", drawn)
        assert re.search(r"name +status +text", plain) and re.search(r"database +up", plain)
        assert piped.returncode == 0 and "\x1b" not in piped.stdout and "─" not in piped.stdout
        assert re.search(r"^name +status +text$", piped.stdout, re.M)
        assert all(line == line.rstrip() for line in piped.stdout.splitlines())

        # call draws its table on a terminal too; a live meter redraws in place.
        called = ANSI.sub("", await asyncio.to_thread(on_a_terminal, ["call", "/bridge/mapping/list", *at]))
        assert re.search(r"track number +track name +plugin id +port +instance id", called)
        assert re.search(r"^1 +Kick +TR1 +-1", called, re.M)
        live = await asyncio.to_thread(on_a_terminal, ["levels", "--watch", "--count", "3", "--interval", "0.05",
                                                       *at])
        assert "\x1b[2K" in live or "\x1b[1A" in live  # the cursor goes back up to redraw


def test_commands_that_talk_to_a_bridge_offer_only_what_finds_it() -> None:
    """`--host` of these commands is where the bridge listens, not an address to listen on, and the storage flags
    of `serve` would be taken and ignored: they are refused. (`mcp`: tests/test_mcp_input.py.)"""
    for command in ("call", "status", "plugins", "tracks", "levels", "tail", "search", "calibrate"):
        shown = run_cli(command, "--help")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert "where the bridge listens" in text and "--osc-port" in text, command
        assert not any(flag in text for flag in ("--database-url", "--data-dir", "--http-port")), command
        refused = run_cli(command, "--database-url", "postgresql://nowhere/db")
        assert refused.returncode == 2 and "unrecognized arguments: --database-url" in refused.stderr, command


async def test_levels_watch_on_a_terminal_draws_a_meter_bar_for_each_streaming_track(tmp_path: Path,
                                                                                     database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=4, ollama_url=no_ollama())
    at = ["--osc-port", str(settings.osc_port)]
    # Linear RMS, and the colour its meter gets: -3.1 dBFS red, -14.0 yellow, -26.0 green (SGR 31, 33, 32).
    signals = {1: (0.7, 31), 2: (0.2, 33), 3: (0.05, 32)}
    async with running(settings), PluginFleet(3, sim_config(settings), interval=0.0) as fleet:
        await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        for (track, (rms, _)), plugin in zip(signals.items(), fleet, strict=True):
            plugin.signal_rms, plugin.muted = rms, False
            await client.call("/bridge/calibrate/assign", plugin.temp_id, f"TR{track}", track, f"Strip {track}")
        await wait_until(lambda: _levels_of(client, {"TR1", "TR2", "TR3"}))
        await client.close()
        drawn = await asyncio.to_thread(on_a_terminal, ["levels", "--watch", "--count", "2", "--interval", "0.05",
                                                        *at])
    text = plain(drawn)
    assert "Levels at " in text and re.search(r"track +plugin id +meter +rms dbfs +bands db +track name", text)
    for track, (rms, colour) in signals.items():
        dbfs = 20 * math.log10(rms)
        # The track, its id, a bar of the meter's width (30), the level it stands for, the track's name.
        assert re.search(rf"^ +{track} +TR{track} +[━╸╺]{{30}} +{dbfs:.1f} .* Strip {track} *$", text, re.M), text
        # Its filled part is in the level's colour and as long as the level is above the meter's -60 dBFS floor.
        filled = re.search(rf"TR{track} +\x1b\[{colour}m(━+)", drawn)
        assert filled, (track, drawn)
        assert abs(len(filled[1]) - (dbfs + 60) / 60 * 30) <= 1, (track, drawn)
