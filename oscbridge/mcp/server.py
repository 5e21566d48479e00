"""The MCP server: tools, resources and prompts on the official SDK's `MCPServer`, over a `Connect` (link.py).

Tools that only read are always offered and marked `readOnlyHint`; tools that act are registered only when control
is allowed, marked `readOnlyHint: false` (and `destructiveHint` where they change what is heard), each with a
title a client shows in its consent prompt. The input schema of every tool comes from its signature (pydantic),
its output schema from the model it returns. A `Problem` becomes a tool error (`isError`) whose text says what to
do; anything else is the SDK's generic "Error executing tool" (and a traceback in the log, never to the model).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from oscbridge import __version__
from oscbridge.mcp import actions, studio
from oscbridge.mcp.link import BridgeLink, CallFailed, Connect, Problem
from oscbridge.mcp.models import Action, Levels, Messages, Plugins, Search, Tracks, Traffic
from oscbridge.typedefs import ErrorCode

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

READS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# Adds to the conversation memory; nothing existing changes.
ADDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
# Changes what the musician hears (a gain, a tone in the monitors).
CHANGES_SOUND = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                open_world_hint=False)

Track = Annotated[int | str, Field(description="the track: its number (3), its track id (\"TR3\") or its name "
                                               "(\"Kick\", any case), as list_tracks shows them")]

INSTRUCTIONS = (
    "oscbridge is the bridge between a Logic Pro session and the AIplayer plugins of Chatty Channels: it knows every "
    "track, the plugin on it, the plugin's live levels, and the whole conversation about the mix. Start with "
    "list_tracks; get_levels reads the meters; search_context finds what was said or decided before. Levels are RMS "
    "and four bands: the plugins measure no sample peak. ")
READ_ONLY = ("This server was started read-only: it cannot change anything. To let it set parameters, switch the "
             "calibration tone and save messages, the user starts it with `oscbridge mcp --allow-control` (or sets "
             "mcp_allow_control for the bridge's HTTP endpoint).")
CONTROL = ("Control is allowed: set_plugin_parameter, calibration_tone, save_message and create_snapshot act, and "
           "each action is logged to the conversation under this client's name. Say what you are about to change "
           "before you change it.")
REVIEW_LEVELS = (
    "Review the levels of all tracks of this mix. Call get_levels with window_seconds 3 while the song plays, and "
    "list_tracks for the track names. Then name, track by track: what clips or is about to (near_full_scale, or an "
    "RMS above about -10 dBFS on a full-range part), what is silent (and whether it should be: a muted strip, or a "
    "plugin that is not fresh), and what is unusually quiet next to the others. The plugins send RMS and four "
    "bands, no sample peak: say so when you infer clipping. Suggest GAIN changes in dB but do not make them.")
RECALL = ("What did we decide about {topic}? Use search_context with a few different phrasings of '{topic}' "
          "(keywords work even when Ollama is down), look at the rows marked decision first, and answer with the "
          "decisions and their dates, quoting the messages. Say plainly if nothing was decided.")


def client_label(ctx: Context) -> str:
    """Who is acting, from the `clientInfo` of the MCP initialize request (one line, at most 80 characters)."""
    params = ctx.request_context.session.client_params
    info = params.client_info if params is not None else None
    if info is None:
        return "An MCP client"
    name = info.title or info.name
    label = re.sub(r"[\x00-\x1f\x7f]+", " ", f"{name} {info.version}".strip())[:80]
    return f"{label} (MCP)"


def build_server(connect: Connect, *, allow_control: bool) -> MCPServer[Any]:
    """The server, its tools answering through `connect`."""
    # The SDK logs every refused tool call at INFO, with the arguments' text; the bridge's own log keeps warnings.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    server: MCPServer[Any] = MCPServer(
        "oscbridge", title="oscbridge: Chatty Channels studio", version=__version__, log_level="WARNING",
        instructions=INSTRUCTIONS + (CONTROL if allow_control else READ_ONLY))

    def tool(title: str, annotations: ToolAnnotations) -> Callable[[F], F]:
        """Registers a tool; its description is its docstring as one paragraph (clients show it as it is)."""

        def register(fn: F) -> F:
            server.add_tool(fn, title=title, annotations=annotations, description=" ".join((fn.__doc__ or "").split()))
            return fn

        return register

    async def answer(work: Callable[[BridgeLink], Awaitable[T]]) -> T:
        try:
            async with connect() as link:
                return await work(link)
        except Problem as exc:
            raise ToolError(str(exc)) from None

    async def read(work: Callable[[BridgeLink], Awaitable[T]]) -> T:
        try:
            async with connect() as link:
                return await work(link)
        except CallFailed as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise ResourceNotFoundError(str(exc)) from None
            raise ResourceError(str(exc)) from None
        except Problem as exc:
            raise ResourceError(str(exc)) from None

    # -- tools that read -------------------------------------------------------------------------------------

    @tool("List the tracks", READS)
    async def list_tracks() -> Tracks:
        """The tracks of the current project: Logic track number and name, the track id (TRn) of the AIplayer
        plugin on it, and that plugin's state (identified = on its track and streaming levels)."""
        return await answer(studio.tracks)

    @tool("Read the track levels", READS)
    async def get_levels(
        window_seconds: Annotated[float, Field(ge=0.0, le=10.0, description="watch the meters this long and "
                                               "report the highest RMS seen (0 = one reading)")] = 0.0,
    ) -> Levels:
        """The current level of every track: RMS in dBFS, four frequency bands, how fresh the values are, and
        flags for silent tracks and tracks near full scale. The plugins measure no sample peak."""
        return await answer(lambda link: studio.levels(link, window_seconds))

    @tool("List the plugins and their health", READS)
    async def list_plugins() -> Plugins:
        """Every AIplayer plugin instance the bridge knows: port, state, track, when it was last heard and what
        that means; and the bridge's own health (database, Ollama, writes, disk)."""
        return await answer(studio.plugins)

    @tool("Search the conversation", READS)
    async def search_context(
        query: Annotated[str, Field(min_length=1, max_length=2000, description="what to look for, in words")],
        limit: Annotated[int, Field(ge=1, le=50, description="at most this many messages")] = 10,
    ) -> Search:
        """Searches everything said in this project (all sessions) by meaning and by keywords, best match first,
        with why each message matched (semantic, keyword, recent, decision)."""
        return await answer(lambda link: studio.search(link, query, limit))

    @tool("Read the recent messages", READS)
    async def recent_messages(
        limit: Annotated[int, Field(ge=1, le=100, description="at most this many messages")] = 20,
        whole_project: Annotated[bool, Field(description="all sessions of the project, not only the current "
                                                         "session")] = False,
    ) -> Messages:
        """The latest messages of the conversation, newest first: the current session's, or the project's."""
        return await answer(lambda link: studio.messages(link, limit, whole_project))

    @tool("Read a track's recent traffic", READS)
    async def track_traffic(
        track: Track,
        seconds: Annotated[float, Field(gt=0.0, le=3600.0, description="how far back to look")] = 30.0,
        limit: Annotated[int, Field(ge=1, le=500, description="at most this many rows (the newest)")] = 100,
    ) -> Traffic:
        """The OSC control traffic between the bridge and one track's plugin in the last seconds (parameters,
        tone, probes, assignments, confirmations), oldest first. Level telemetry is not included: use
        get_levels."""
        return await answer(lambda link: studio.traffic(link, track, seconds, limit))

    # -- tools that act --------------------------------------------------------------------------------------

    if allow_control:

        @tool("Set a plugin parameter (changes the sound)", CHANGES_SOUND)
        async def set_plugin_parameter(
            ctx: Context,
            track: Track,
            value: Annotated[float, Field(allow_inf_nan=False, description="the new absolute value; GAIN is in "
                                                                           "dB, -60 to 0")],
            parameter: Annotated[str, Field(min_length=1, max_length=64, description="the plugin's parameter; "
                                                                                     "GAIN is the only one")] = "GAIN",
        ) -> Action:
            """Sets a parameter of the AIplayer plugin on a track (GAIN, in dB, -60 to 0: absolute, not added). The
            plugin does not report its current gain. Logged to the conversation."""
            return await answer(lambda link: actions.set_parameter(link, client_label(ctx), track, parameter, value))

        @tool("Switch the calibration tone (audible)", CHANGES_SOUND)
        async def calibration_tone(
            ctx: Context,
            on: Annotated[bool, Field(description="true starts the tone, false stops it")],
            frequency_hz: Annotated[float, Field(ge=20.0, le=20000.0)] = 137.0,
            level_db: Annotated[float, Field(ge=-60.0, le=0.0, description="the tone's level in dBFS")] = -10.0,
        ) -> Action:
            """Starts the calibration tone in every plugin that has no track id yet (the ones being calibrated;
            it is audible on unmuted tracks), or stops it in every plugin. Logged to the conversation."""
            return await answer(lambda link: actions.tone(link, client_label(ctx), on, frequency_hz, level_db))

        @tool("Save a message or a decision", ADDS)
        async def save_message(
            ctx: Context,
            content: Annotated[str, Field(min_length=1, max_length=100_000)],
            role: Annotated[str, Field(pattern="^(user|assistant|producer|agent|system)$",
                                       description="who said it")] = "assistant",
            decision_summary: Annotated[str, Field(max_length=10_000, description="one line; when given, the "
                                                   "message is stored as a key decision")] = "",
        ) -> Action:
            """Saves a message to the conversation memory of the current session (searchable later), or a key
            decision when decision_summary is given. Logged to the conversation."""
            return await answer(lambda link: actions.save_message(link, client_label(ctx), content, role,
                                                                  decision_summary))

        @tool("Create a snapshot", ADDS)
        async def create_snapshot(
            ctx: Context,
            name: Annotated[str, Field(min_length=1, max_length=255)],
            description: Annotated[str, Field(max_length=10_000)] = "",
        ) -> Action:
            """Marks this moment of the session: the messages so far, and the tracks and their levels now. Needs at
            least one saved message in the session. Logged to the conversation."""
            return await answer(lambda link: actions.snapshot(link, client_label(ctx), name, description))

    # -- resources -------------------------------------------------------------------------------------------

    @server.resource("oscbridge://tracks", name="tracks", title="Track map", mime_type="application/json",
                     description="The current project's tracks, their track ids and plugins (as list_tracks).")
    async def track_map() -> str:
        return (await read(studio.tracks)).model_dump_json(indent=2)

    @server.resource("oscbridge://sessions", name="sessions", title="Sessions", mime_type="application/json",
                     description="The current project's sessions in which something was said, newest first, each "
                                 "with the URI of its conversation.")
    async def session_list() -> list[dict[str, Any]]:
        return await read(studio.sessions)

    @server.resource("oscbridge://sessions/{session_id}/conversation", name="conversation",
                     title="A session's conversation", mime_type="text/markdown",
                     description="What was said in one session, in time order: messages, chat, actions.")
    async def conversation(session_id: str) -> str:
        return await read(lambda link: studio.transcript(link, session_id))

    @server.resource("oscbridge://snapshots", name="snapshots", title="Snapshots", mime_type="application/json",
                     description="The current project's snapshots, newest first.")
    async def snapshot_list() -> list[dict[str, Any]]:
        return await read(studio.snapshots)

    # -- prompts ---------------------------------------------------------------------------------------------

    @server.prompt(title="Review the levels of all tracks")
    def review_levels() -> str:
        """Name what clips, what is silent and what stands out, track by track (reads only)."""
        return REVIEW_LEVELS

    @server.prompt(title="What did we decide about …")
    def recall_decisions(topic: Annotated[str, Field(description="e.g. the vocal bus, the kick's low end")]) -> str:
        """Find what was decided about a topic in this project's conversation."""
        return RECALL.format(topic=topic)

    return server
