"""Writes the recordings in tests/data from the sample session of aiplayer-osc-protocol.md, section 5.

Run from the repository root: `.venv/bin/python tests/data/make_recordings.py`. The output is deterministic.

Every datagram is encoded with explicit type tags, exactly as the real plugin (JUCE) and app (Swift) encode
them, and written with `oscbridge.tools.recording.Recorder` (so the files are in the bridge's own JSONL format).
Source ports and tempIDs are the ones of the note; all hosts are 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

from oscbridge.tools.recording import Recorder
from oscbridge.tools.sim.plugin import build_message

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
P, A = "plugin->app", "app->plugin"

KICK = "43440ecde2c040a193edbfc32b76dde4"  # TR1, sender port 57012, assigned 9000
SNARE = "fdda8bfa71b04b2794728fc47fe6cecd"  # TR2, sender port 63488, assigned 9001
BASS = "755f7d69f93547e489909c25a094826c"  # TR3, sender port 51977, assigned 9002
NO_PORT = "0d6c1f4b8a2e4f3c9b7a1e2d3c4b5a69"
DEAF = "5e0a7f19c3d84b2aa6f0d1e2c3b4a596"
Q1 = "3F2504E0-4F89-41D3-9A0C-0305E82C3301"
Q2 = "9B1DEB4D-3B7D-4BAD-9BDD-2B0D7B3DCB6D"
Q3 = "1B4E28BA-2FA1-41D2-883F-0016D3CCA427"

Row = tuple[int, str, int, int, str, tuple[tuple[str, object], ...]]  # t_ms, direction, src, dst, address, args

# Section 5, main session, line for line (the note leaves out broadcasts to 9003-9010 and most telemetry).
SESSION: list[Row] = [
    (0, P, 57012, 8999, "/aiplayer/request_port", (("s", KICK), ("i", -1), ("i", 50000))),
    (1, A, 60211, 50000, "/aiplayer/port_assignment", (("s", KICK), ("i", 9000), ("s", "assigned"))),
    (21, P, 63488, 8999, "/aiplayer/request_port", (("s", SNARE), ("i", -1), ("i", 50100))),
    (22, A, 52876, 50100, "/aiplayer/port_assignment", (("s", SNARE), ("i", 9001), ("s", "assigned"))),
    (43, P, 51977, 8999, "/aiplayer/request_port", (("s", BASS), ("i", -1), ("i", 50200))),
    (44, A, 64102, 50200, "/aiplayer/port_assignment", (("s", BASS), ("i", 9002), ("s", "assigned"))),
    (118, P, 57012, 8999, "/aiplayer/port_confirmed", (("s", KICK), ("i", 9000), ("s", "bound"))),
    (170, P, 63488, 8999, "/aiplayer/port_confirmed", (("s", SNARE), ("i", 9001), ("s", "bound"))),
    (222, P, 51977, 8999, "/aiplayer/port_confirmed", (("s", BASS), ("i", 9002), ("s", "bound"))),
    (31480, A, 58231, 9000, "/aiplayer/start_tone", (("f", 137.0), ("f", -10.0))),
    (31480, A, 58232, 9001, "/aiplayer/start_tone", (("f", 137.0), ("f", -10.0))),
    (31481, A, 58233, 9002, "/aiplayer/start_tone", (("f", 137.0), ("f", -10.0))),
    (31482, P, 57012, 8999, "/aiplayer/tone_started", (("s", KICK), ("f", 137.0))),
    (31483, P, 63488, 8999, "/aiplayer/tone_started", (("s", SNARE), ("f", 137.0))),
    (31483, P, 51977, 8999, "/aiplayer/tone_started", (("s", BASS), ("f", 137.0))),
    (34200, A, 61004, 9000, "/aiplayer/query_rms", (("s", Q1),)),
    (34200, A, 61005, 9001, "/aiplayer/query_rms", (("s", Q1),)),
    (34201, A, 61006, 9002, "/aiplayer/query_rms", (("s", Q1),)),
    (34202, P, 57012, 8999, "/aiplayer/rms_response", (("s", Q1), ("s", KICK), ("f", 0.22418))),
    (34202, P, 63488, 8999, "/aiplayer/rms_response", (("s", Q1), ("s", SNARE), ("f", 1e-05))),
    (34203, P, 51977, 8999, "/aiplayer/rms_response", (("s", Q1), ("s", BASS), ("f", 1e-05))),
    (35850, A, 61391, 9000, "/aiplayer/query_rms", (("s", Q2),)),
    (35850, A, 61392, 9001, "/aiplayer/query_rms", (("s", Q2),)),
    (35851, A, 61393, 9002, "/aiplayer/query_rms", (("s", Q2),)),
    (35852, P, 57012, 8999, "/aiplayer/rms_response", (("s", Q2), ("s", KICK), ("f", 0.22418))),
    (35852, P, 63488, 8999, "/aiplayer/rms_response", (("s", Q2), ("s", SNARE), ("f", 0.22135))),
    (35853, P, 51977, 8999, "/aiplayer/rms_response", (("s", Q2), ("s", BASS), ("f", 1e-05))),
    (37500, A, 49801, 9000, "/aiplayer/query_rms", (("s", Q3),)),
    (37500, A, 49802, 9001, "/aiplayer/query_rms", (("s", Q3),)),
    (37501, A, 49803, 9002, "/aiplayer/query_rms", (("s", Q3),)),
    (37502, P, 57012, 8999, "/aiplayer/rms_response", (("s", Q3), ("s", KICK), ("f", 0.22418))),
    (37502, P, 63488, 8999, "/aiplayer/rms_response", (("s", Q3), ("s", SNARE), ("f", 0.22135))),
    (37503, P, 51977, 8999, "/aiplayer/rms_response", (("s", Q3), ("s", BASS), ("f", 0.22762))),
    (38450, A, 55120, 9000, "/aiplayer/stop_tone", ()),
    (38450, A, 55121, 9001, "/aiplayer/stop_tone", ()),
    (38451, A, 55122, 9002, "/aiplayer/stop_tone", ()),
    (38452, P, 57012, 8999, "/aiplayer/tone_stopped", (("s", KICK),)),
    (38452, P, 63488, 8999, "/aiplayer/tone_stopped", (("s", SNARE),)),
    (38453, P, 51977, 8999, "/aiplayer/tone_stopped", (("s", BASS),)),
    (38952, A, 59310, 9001, "/aiplayer/track_uuid_assignment", (("i", 1), ("s", SNARE), ("s", "TR2"))),
    (38952, A, 59311, 9000, "/aiplayer/track_uuid_assignment", (("i", 2), ("s", KICK), ("s", "TR1"))),
    (38953, A, 59312, 9002, "/aiplayer/track_uuid_assignment", (("i", 3), ("s", BASS), ("s", "TR3"))),
    (38953, P, 63488, 8999, "/aiplayer/uuid_assignment_confirmed", (("s", SNARE), ("s", "TR2"), ("s", "confirmed"))),
    (38954, P, 57012, 8999, "/aiplayer/uuid_assignment_confirmed", (("s", KICK), ("s", "TR1"), ("s", "confirmed"))),
    (38954, P, 51977, 8999, "/aiplayer/uuid_assignment_confirmed", (("s", BASS), ("s", "TR3"), ("s", "confirmed"))),
    (
        38995,
        P,
        57012,
        8999,
        "/aiplayer/telemetry",
        (("s", "TR1"), ("f", 0.22418), ("f", -16.0), ("f", -53.6), ("f", -100.0), ("f", -100.0)),
    ),
    (38995, P, 57012, 8999, "/aiplayer/rms", (("s", "TR1"), ("f", 0.22418))),
    (
        60012,
        P,
        57012,
        8999,
        "/aiplayer/telemetry",
        (("s", "TR1"), ("f", 0.1834), ("f", -13.2), ("f", -38.5), ("f", -52.7), ("f", -61.9)),
    ),
    (60012, P, 57012, 8999, "/aiplayer/rms", (("s", "TR1"), ("f", 0.1834))),
    (
        60019,
        P,
        63488,
        8999,
        "/aiplayer/telemetry",
        (("s", "TR2"), ("f", 0.1127), ("f", -24.6), ("f", -29.8), ("f", -34.1), ("f", -41.3)),
    ),
    (60019, P, 63488, 8999, "/aiplayer/rms", (("s", "TR2"), ("f", 0.1127))),
    (
        60031,
        P,
        51977,
        8999,
        "/aiplayer/telemetry",
        (("s", "TR3"), ("f", 0.1409), ("f", -17.3), ("f", -36.4), ("f", -56.2), ("f", -71.8)),
    ),
    (60031, P, 51977, 8999, "/aiplayer/rms", (("s", "TR3"), ("f", 0.1409))),
    (
        60053,
        P,
        57012,
        8999,
        "/aiplayer/telemetry",
        (("s", "TR1"), ("f", 0.0472), ("f", -13.2), ("f", -38.5), ("f", -52.7), ("f", -61.9)),
    ),
    (60053, P, 57012, 8999, "/aiplayer/rms", (("s", "TR1"), ("f", 0.0472))),
]

# Section 5, supplementary examples: plugin chat (,is), what the app would answer, pool exhausted, failed bind.
EDGE_CASES: list[Row] = [
    (0, P, 57012, 8999, "/aiplayer/chat/request", (("i", 1), ("s", "reduce gain by 3 db"))),
    (5000, A, 53311, 9000, "/aiplayer/set_parameter", (("s", "GAIN"), ("f", -3.0))),
    (5001, A, 60987, 9000, "/aiplayer/chat/response", (("s", "OK, reducing GAIN by 3.0 dB."),)),
    (9000, P, 62001, 8999, "/aiplayer/request_port", (("s", NO_PORT), ("i", -1), ("i", 50300))),
    (9001, A, 57777, 50300, "/aiplayer/port_assignment", (("s", NO_PORT), ("i", -1), ("s", "error"))),
    (12000, P, 62044, 8999, "/aiplayer/request_port", (("s", DEAF), ("i", -1), ("i", 50400))),
    (12001, A, 57790, 50400, "/aiplayer/port_assignment", (("s", DEAF), ("i", 9003), ("s", "assigned"))),
    (12058, P, 62044, 8999, "/aiplayer/port_confirmed", (("s", DEAF), ("i", 9003), ("s", "failed"))),
]

# After the track assignment every plugin streams telemetry every 41 ms with its frozen tone level. The note
# shows only TR1's first tick (38995) and says TR2/TR3 tick 1-2 ms later; fill in 0.5 s of that stream.
TONE_BANDS = (-16.0, -53.6, -100.0, -100.0)
FROZEN = [("TR1", 57012, 0.22418, 38995), ("TR2", 63488, 0.22135, 38996), ("TR3", 51977, 0.22762, 38997)]
TELEMETRY_UNTIL_MS = 39500


def telemetry_ticks() -> list[Row]:
    rows: list[Row] = []
    for track, src, rms, first in FROZEN:
        start = first + 41 if track == "TR1" else first  # TR1's first tick is already in SESSION
        for t_ms in range(start, TELEMETRY_UNTIL_MS, 41):
            bands = tuple(("f", b) for b in TONE_BANDS)
            rows.append((t_ms, P, src, 8999, "/aiplayer/telemetry", (("s", track), ("f", rms), *bands)))
            rows.append((t_ms, P, src, 8999, "/aiplayer/rms", (("s", track), ("f", rms))))
    return rows


def write(path: Path, rows: list[Row]) -> None:
    path.unlink(missing_ok=True)
    with Recorder(path) as recorder:
        for t_ms, _direction, src, dst, address, args in sorted(rows, key=lambda row: row[0]):
            recorder.record((HOST, src), (HOST, dst), build_message(address, *args), t=t_ms / 1000)


def main() -> None:
    write(HERE / "three_tracks_startup.jsonl", SESSION + telemetry_ticks())
    write(HERE / "edge_cases.jsonl", EDGE_CASES)


if __name__ == "__main__":
    main()
