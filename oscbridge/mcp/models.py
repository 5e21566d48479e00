"""What the MCP tools return: pydantic models, so that each tool publishes an output schema (with these field
descriptions) and a client gets both structured content and its JSON text. Field names are those of
`api/columns.py` wherever a value comes straight from a reply.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

BAND_1 = "level of 20-250 Hz in dB (-100 = nothing)"
BAND_2 = "level of 250-2000 Hz in dB"
BAND_3 = "level of 2-8 kHz in dB"
BAND_4 = "level of 8-20 kHz in dB"


class Track(BaseModel):
    track_number: int = Field(description="the Logic track number")
    track_name: str
    plugin_id: str = Field(description="the track id (TRn) the AIplayer plugin on this track carries")
    plugin_state: str = Field(description="identified (on its track, streaming levels), bound (waiting for "
                                          "calibration), assigned, requesting, failed, gone, or none (no plugin "
                                          "instance carries this track id)")
    port: int | None = Field(description="the UDP port the live plugin listens on; null when none is live")
    instance_id: str | None = Field(description="the live plugin instance's id; null when none is live")
    seconds_since_heard: float | None = Field(description="seconds since the plugin last sent anything; null "
                                                          "when never heard")


class Tracks(BaseModel):
    project: str = Field(description="the current project (Logic song)")
    tracks: list[Track]


class Level(BaseModel):
    plugin_id: str
    track_number: int | None = Field(description="null when this track id is not mapped to a track")
    track_name: str | None
    rms_dbfs: float = Field(description="RMS of the plugin's last audio block in dBFS (-100 = digital silence)")
    max_rms_dbfs: float = Field(description="the highest RMS read during window_seconds; NOT a sample peak")
    band_1_db: float = Field(description=BAND_1)
    band_2_db: float = Field(description=BAND_2)
    band_3_db: float = Field(description=BAND_3)
    band_4_db: float = Field(description=BAND_4)
    seconds_since_update: float = Field(description="age of these values; the plugins send every 41 ms")
    fresh: bool = Field(description="updated within the last second; if false the values are frozen (playback "
                                    "stopped, the track is muted and not processed, or the plugin is gone)")
    silent: bool = Field(description="max_rms_dbfs at or below -90 dBFS")
    near_full_scale: bool = Field(description="max_rms_dbfs at or above -6 dBFS: too little headroom for the "
                                              "signal's peaks; the track very likely clips")


class Levels(BaseModel):
    levels: list[Level]
    window_seconds: float = Field(description="how long the levels were watched")
    note: str


class HealthFact(BaseModel):
    name: str
    status: str = Field(description="ok, warn or fail")
    text: str


class Plugin(BaseModel):
    instance_id: str
    port: int | None
    state: str = Field(description="requesting, assigned, bound, identified, failed or gone")
    plugin_id: str | None = Field(description="its track id (TRn); null before calibration")
    track_number: int | None
    track_name: str | None
    seconds_since_heard: float | None
    health: str = Field(description="what the state means for this plugin, and what to do")


class Plugins(BaseModel):
    plugins: list[Plugin]
    bridge: list[HealthFact] = Field(description="the bridge's own health: database, Ollama, writes, disk, ...")


class Found(BaseModel):
    message_id: str
    role: str
    content: str
    created_at: str
    score: float
    why: str = Field(description="why it matched: semantic (meaning), keyword, recent, decision (a key decision "
                                 "of the last 7 days), or several joined by +")


class Search(BaseModel):
    query: str
    results: list[Found]
    semantic: bool = Field(description="whether Ollama answered, so that matches by meaning were possible")
    note: str | None


class Message(BaseModel):
    message_id: str
    role: str
    content: str
    model: str
    created_at: str
    key_decision: bool


class Messages(BaseModel):
    scope: str = Field(description="session (the current session) or project (every session of the project)")
    messages: list[Message] = Field(description="newest first")


class TrafficRow(BaseModel):
    time: str = Field(description="ISO-8601, UTC")
    type: str = Field(description="osc_in (from the plugin), osc_out (to it), event, or the type a client logged")
    sender: str
    receiver: str
    severity: str
    content: str


class Traffic(BaseModel):
    track: str
    seconds: float
    rows: list[TrafficRow] = Field(description="oldest first")
    note: str


class Action(BaseModel):
    done: str = Field(description="what was done, as it was logged to the conversation")
    logged: bool = Field(description="whether the action was logged to the conversation")
    id: str | None = Field(default=None, description="the id of what was created (message, snapshot)")
    acknowledged: int | None = Field(default=None, description="plugins that acknowledged (calibration tone)")
