"""What the OSCQuery namespace (oscquery.py) says about each address, in the words of BRIDGE-API.md and
docs/bridge-api-notes.md: what each `/bridge/*` request does and what its reply carries (OSCQuery has no attribute
for a reply, which goes to `<address>/reply`), and the messages that are not requests: the AIplayer protocol both
ways (aiplayer-osc-protocol.md, with the type tags the plugin really sends) and the events sent to subscribers.

The arguments of a request are not described here: oscquery.py writes them from the endpoint's own specs.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from oscbridge import protocol as p

# What a request does, then its result (after "ok"). A request missing here is described by the first sentence of
# its handler's docstring.
REQUESTS: Final[dict[str, str]] = {
    "/bridge/ping": "Is the bridge alive. Result: version s, uptime seconds f.",
    "/bridge/status": "How the bridge is doing. Result: plugins bound i, plugins identified i, queued writes i, "
                      "spooled writes i, database up i (0/1), Ollama up i (0/1), free disk MiB i, spool bytes not "
                      "yet in PostgreSQL i, rejected writes i, dropped best-effort writes i.",
    "/bridge/stats": "Every component's counters. Result: list rows, by name: name s, value i.",
    "/bridge/storage": "How much room the tables take. Result: list rows, biggest first: table s, rows h, bytes h; "
                       "then database, -1, its total size.",
    "/bridge/health": "The facts `oscbridge doctor` checks, as the running bridge sees them. Result: list rows: "
                      "name s, status s (ok, warn, fail), text s.",
    "/bridge/project/open": "Opens a Logic project (created the first time); another project starts a new "
                            "session. Result: project id s, session id s.",
    "/bridge/project/current": "The current project. Result: project name s, project id s, session id s.",
    "/bridge/mapping/set": "Puts a plugin id (TRn) on a Logic track of the current project. Result: nothing.",
    "/bridge/mapping/list": "The current project's track mapping. Result: list rows by track number: track number "
                            "i, track name s, plugin id s, port i (-1 if no live plugin), instance id s.",
    "/bridge/mapping/track": "The track a plugin id is on. Result: track name s, track number i, port i, instance "
                             "id s; not_found if unknown.",
    "/bridge/mapping/clear": "Clears the current project's mapping. Result: rows cleared i.",
    "/bridge/plugins": "Every plugin instance the bridge knows. Result: list rows: instance id s, port i, state s "
                       "(requesting, assigned, bound, identified, failed, gone), plugin id s, seconds since last "
                       "heard f.",
    "/bridge/levels": "The latest levels of every track (readable as values under /bridge/state/levels too). "
                      "Result: list rows: plugin id s, rms dBFS f, band dB f x4 (low, low-mid, high-mid, high), "
                      "seconds since update f.",
    "/bridge/subscribe": "Forwards traffic whose address matches an OSC pattern (/aiplayer/*, /bridge/event/*) to "
                         "the requester's host at port; subscribing again renews it. Result: nothing.",
    "/bridge/unsubscribe": "Stops forwarding to the requester's host at port. Result: nothing.",
    "/bridge/calibrate/tone": "Turns the calibration tone on or off in every bound plugin. Result: plugins that "
                              "acknowledged i.",
    "/bridge/calibrate/probe": "Measures the bound plugins without a track. Result: list rows, loudest first: "
                               "instance id s, port i, rms dBFS f.",
    "/bridge/calibrate/assign": "Gives a plugin instance its plugin id and puts it on a track; replies once the "
                                "plugin confirmed, else unavailable. Result: nothing.",
    "/bridge/plugin/parameter": "Sets a parameter (GAIN, in dB) of the plugin with this plugin id, at its own "
                                "port. Result: nothing.",
    "/bridge/plugin/chat": "Shows a text in the editor of the plugin with this plugin id. Result: nothing.",
    "/bridge/debug/log": "Stores a Mission Control debug entry (receiver \"\" = broadcast, payload JSON \"\" = "
                         "none). Result: debug id s.",
    "/bridge/debug/recent": "The current project's debug traffic, a page at a time, newest first. Result: list "
                            "rows: cursor s (pass as before for the next page), created at s, sender s, receiver s, "
                            "message type s, severity s, content s.",
    "/bridge/debug/tail": "The live tail of debug rows, from memory, oldest first. Result: list rows: seq i, time "
                          "d, message type s, sender s, receiver s, severity s, content s.",
    "/bridge/conversation/log": "Stores a line of the conversation as the user saw it. Result: conversation id s.",
    "/bridge/message/save": "Stores a message of the conversation memory (embedded for search unless embed is 0). "
                            "Result: message id s.",
    "/bridge/message/recent": "The project's latest messages (with session only: the current session's). Result: "
                              "list rows, newest first: message id s, role s, content s, model s, created at s "
                              "(ISO-8601), key decision i.",
    "/bridge/context/search": "Searches the conversation memory. Result: list rows, best first: message id s, role "
                              "s, content s, created at s, score f, why s (semantic, keyword, recent, decision, or "
                              "several joined by +).",
    "/bridge/snapshot/create": "Marks the current session's messages as a named snapshot. Result: snapshot id s.",
    "/bridge/snapshot/list": "The project's snapshots, newest first. Result: list rows: snapshot id s, name s, "
                             "description s, created at s, session id s, messages i.",
    "/bridge/spool/retry_rejected": "Re-applies the writes PostgreSQL refused, after the cause was fixed. Result: "
                                    "moved i, re-applied i, refused again i, still waiting i.",
}


class Message(NamedTuple):
    """A message that is not a request: its type tags (the first is its TYPE; others it may come with are its
    OVERLOADS) and what it means."""

    tags: tuple[str, ...]
    description: str


# What the plugins send to the bridge's OSC port (protocol.PLUGIN_SENDS), as the v0.8 plugin sends it.
PLUGIN_SENDS: Final[dict[str, Message]] = {
    p.REQUEST_PORT: Message(("sii",), "A new plugin instance asks for a port: instance id (tempID), preferred port "
                                      "(-1), the bootstrap port it listens on for the answer."),
    p.PORT_CONFIRMED: Message(("sis",), "The plugin bound the port it was given, or not: instance id, port, "
                                        "status (bound or failed)."),
    p.UUID_CONFIRMED: Message(("sss",), "The plugin took its plugin id: instance id, plugin id (TRn), "
                                        "\"confirmed\"."),
    p.TELEMETRY: Message((p.TELEMETRY_TAGS,), "Levels, every 41 ms once identified: plugin id, rms (linear), four "
                                              "band levels in dB (low, low-mid, high-mid, high)."),
    p.RMS: Message((p.RMS_TAGS,), "The rms again, after each telemetry message: plugin id, rms (linear)."),
    p.RMS_RESPONSE: Message(("ssf",), "The answer to query_rms: query id, instance id, rms (linear)."),
    p.TONE_STARTED: Message(("sf",), "The plugin started the calibration tone: instance id, frequency."),
    p.TONE_STOPPED: Message(("s",), "The plugin stopped the calibration tone: instance id."),
    p.CHAT_REQUEST: Message(("is", "ss"), "Text typed in the plugin's editor: 1 (the real plugin) or the plugin "
                                          "id, the text."),
}

# What the bridge sends to a plugin's own port (not accepted on the bridge's port).
BRIDGE_SENDS: Final[dict[str, Message]] = {
    p.PORT_ASSIGNMENT: Message(("sis",), "The port a plugin instance gets: instance id, port (-1 if none), status "
                                         "(assigned or error)."),
    p.TRACK_UUID_ASSIGNMENT: Message(("iss",), "A plugin's plugin id, at the end of calibration: sequence number, "
                                               "instance id, plugin id (TRn)."),
    p.QUERY_RMS: Message(("s",), "Asks a plugin for its rms: query id."),
    p.START_TONE: Message(("ff",), "Starts the calibration tone: frequency Hz, level dB."),
    p.STOP_TONE: Message(("",), "Stops the calibration tone."),
    p.TONE_STATUS: Message(("",), "Asks for the tone's state (the plugin does not answer)."),
    p.SET_PARAMETER: Message(("sf",), "Sets a plugin parameter: parameter (GAIN), value in dB."),
    p.CHAT_RESPONSE: Message(("s",), "A text shown in the plugin's editor."),
}

# What the bridge sends to subscribers of /bridge/event/*.
EVENTS: Final[dict[str, Message]] = {
    p.EVENT_PLUGIN: Message(("siss",), "A plugin instance changed: instance id, port, state, plugin id."),
    p.EVENT_CHAT_REQUEST: Message(("ss",), "Text typed in a plugin's editor: plugin id, text."),
    p.EVENT_ASSIGNED: Message(("ssis",), "Calibration put a plugin on a track: instance id, plugin id, track "
                                         "number, track name."),
}

CONTAINERS: Final[dict[str, str]] = {
    "/": "oscbridge, the OSC endpoint of the AIplayer plugins (BRIDGE-API.md).",
    "/bridge": "Requests. The first argument of each is a request id s (\"\" = no reply unless it fails); the "
               "reply goes to the sender at <address>/reply: [request id, \"ok\", result...], one message per row "
               "for lists ([request id, \"ok\", index, total, row...]), or [request id, \"error\", code, message].",
    "/bridge/event": "Events, sent to subscribers (/bridge/subscribe with /bridge/event/*); not accepted here.",
    "/bridge/state": "Current values, read-only: read them as VALUE over OSCQuery (sending to them does nothing).",
    "/bridge/state/levels": "The latest levels of each track, one node per plugin id: rms dBFS, band dB x4 (low, "
                            "low-mid, high-mid, high), seconds since the update.",
    "/aiplayer": "The AIplayer plugin protocol: what plugins send to this port (ACCESS 2), and what the bridge "
                 "sends to a plugin's own port (ACCESS 0, listed for reference). Subscribe to /aiplayer/* to "
                 "receive what the plugins send.",
}
