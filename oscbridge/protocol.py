"""The AIplayer plugin protocol's addresses and constants (aiplayer-osc-protocol.md), and the bridge's events.

The one list of them: the plugin hub answers these, the simulator sends them, the recordings name them.
"""

from __future__ import annotations

from typing import Final

# Plugin -> bridge (to port 8999, from the instance's one sender socket)
REQUEST_PORT: Final = "/aiplayer/request_port"
PORT_CONFIRMED: Final = "/aiplayer/port_confirmed"
UUID_CONFIRMED: Final = "/aiplayer/uuid_assignment_confirmed"
TELEMETRY: Final = "/aiplayer/telemetry"
RMS: Final = "/aiplayer/rms"
RMS_RESPONSE: Final = "/aiplayer/rms_response"
TONE_STARTED: Final = "/aiplayer/tone_started"
TONE_STOPPED: Final = "/aiplayer/tone_stopped"
CHAT_REQUEST: Final = "/aiplayer/chat/request"

# Bridge -> plugin (to the plugin's receiver port)
PORT_ASSIGNMENT: Final = "/aiplayer/port_assignment"
TRACK_UUID_ASSIGNMENT: Final = "/aiplayer/track_uuid_assignment"
QUERY_RMS: Final = "/aiplayer/query_rms"
START_TONE: Final = "/aiplayer/start_tone"
STOP_TONE: Final = "/aiplayer/stop_tone"
TONE_STATUS: Final = "/aiplayer/tone_status"
SET_PARAMETER: Final = "/aiplayer/set_parameter"
CHAT_RESPONSE: Final = "/aiplayer/chat/response"

PLUGIN_SENDS: Final = (REQUEST_PORT, PORT_CONFIRMED, UUID_CONFIRMED, TELEMETRY, RMS, RMS_RESPONSE, TONE_STARTED,
                       TONE_STOPPED, CHAT_REQUEST)

# The plugin's parameters (set_parameter ,sf; section 2.2 A7): GAIN is the only one, in dB, -60 to 0 in steps
# of 0.1 (the plugin clamps what lies outside)
PARAMETERS: Final = {"GAIN": (-60.0, 0.0)}

# Type tags the plugin sends (a trailing extra argument is tolerated, as the app did)
TELEMETRY_TAGS: Final = "sfffff"  # track id, rms (linear), four band levels (dB)
RMS_TAGS: Final = "sf"

# Bootstrap ports: 50000, 50100, ... 59900, the first one free (section 1.1 item 3)
EPHEMERAL_BASE: Final = 50000
EPHEMERAL_STEP: Final = 100
EPHEMERAL_COUNT: Final = 100

# Events the bridge sends to subscribers (BRIDGE-API.md)
EVENT_PLUGIN: Final = "/bridge/event/plugin"
EVENT_CHAT_REQUEST: Final = "/bridge/event/chat_request"
EVENT_ASSIGNED: Final = "/bridge/event/assigned"
EVENT_MAPPING: Final = "/bridge/event/mapping"  # project id, track number, track name, plugin id ("" when cleared)
