"""The Markdown side of `oscbridge export`: one readable file per session and an index.

What people typed and what the LLM answered is shown as the text it is, not as Markdown: a message that starts
with `#`, holds a `|` or an unclosed code fence would otherwise turn into a heading, split a table or swallow the
rest of the file. `text_block` escapes every character CommonMark (and GitHub's tables, strikethrough and math)
gives a meaning, keeps line breaks as hard breaks and indentation as no-break spaces, so the rendered page shows
the text exactly, and the raw file stays readable (words and intraword underscores are left alone).

Times are UTC, as in the JSON Lines files, and say so; a musician's local time would differ between machines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Row = dict[str, Any]

NBSP = "\u00a0"
EXCERPT = 80  # characters of a message quoted in a snapshot's list
# Escaped everywhere: code spans and fences, emphasis, links and images, HTML, table cells, strikethrough, math.
_SPECIAL = re.compile(r"[\\`*\[\]<>|~$]")
# An underscore between two letters or digits cannot start or end emphasis (CommonMark's flanking rules), so
# snake_case stays as it is; any other underscore is escaped.
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")  # `&amp;` would show as `&`
# At the start of a line: headings, block quotes (`>` is escaped above), list items, thematic breaks and setext
# underlines (`-`, `+`, `=`), ordered list items (`1.`, `1)`).
_LINE_START = re.compile(r"^(?:([#+=-])|(\d{1,9})([.)]))")
# Line breaks: Markdown knows only CR and LF, but NEL and the Unicode line and paragraph separators are breaks too
# for a reader (and for Python's str.splitlines): all of them are shown as line breaks.
_BREAKS = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
# C0 controls other than tab and newline, DEL and C1 controls: an ESC sequence in a message must not drive the
# terminal of whoever runs `cat` on the file. C0 and DEL become their Unicode control pictures (U+2400...).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return chr(0x2400 + code) if code < 0x20 else "\u2421" if code == 0x7F else "\ufffd"


def _lines(text: str) -> list[str]:
    return _CONTROL.sub(_picture, _BREAKS.sub("\n", text)).split("\n")


def inline(text: str) -> str:
    """Text for a line of a paragraph, a heading or a table cell: escaped, its line breaks as spaces."""
    text = _CONTROL.sub(_picture, _BREAKS.sub(" ", text))
    text = _SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    text = _UNDERSCORE.sub(r"\\_", text)
    return _ENTITY.sub(r"\\&", text)


def heading(text: str) -> str:
    """Inline text for an ATX heading, where `#` at the end would be taken for a closing sequence."""
    return inline(" ".join(_lines(text))).replace("#", "\\#")


def cell(text: str) -> str:
    """Text for a table cell: escaped, its line breaks as `<br>` (a cell is one line)."""
    return "<br>".join(inline(line) for line in _lines(text)).strip() or " "


def text_block(text: str) -> list[str]:
    """Multi-line text as Markdown lines that render as the text: each line escaped, its indentation kept as
    no-break spaces (four spaces would start a code block), line breaks as hard breaks (a trailing backslash),
    blank lines as paragraph breaks."""
    out: list[str] = []
    for line in _lines(text):
        body = line.lstrip(" \t")
        if not body:
            out.append("")
            continue
        indent = line[: len(line) - len(body)].replace("\t", "    ").replace(" ", NBSP)
        escaped = _LINE_START.sub(lambda m: "\\" + m.group(1) if m.group(1) else m.group(2) + "\\" + m.group(3),
                                  inline(body))
        out.append(indent + escaped)
    while out and not out[-1]:
        out.pop()
    while out and not out[0]:
        out.pop(0)
    return [line + "\\" if line and index + 1 < len(out) and out[index + 1] else line
            for index, line in enumerate(out)]


def quoted(lines: Iterable[str]) -> list[str]:
    return [f"> {line}" if line else ">" for line in lines]


def fenced(text: str, info: str = "") -> list[str]:
    """A fenced code block that no backtick run inside `text` can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, *_lines(text), fence]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub table; the cells must already be escaped with `cell`."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def stamp(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when is not None else ""


def _clock(when: datetime, day: datetime) -> str:
    """The time of day, with the date when it is not the session's first day (a session past midnight)."""
    return when.strftime("%H:%M:%S") if when.date() == day.date() else stamp(when)


def _duration(start: datetime, end: datetime) -> str:
    minutes = int((end - start).total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def session_file_name(session: Row) -> str:
    """`2026-11-30_1432_1a2b3c4d.md`: the session's start (UTC) and the first 8 hex digits of its id."""
    started: datetime = session["started_at"]
    return f"{started:%Y-%m-%d_%H%M}_{session['id'][:8]}.md"


@dataclass(frozen=True)
class SessionView:
    """One session and everything that happened in it, ready to render."""

    project: Row
    session: Row
    messages: list[Row]
    conversation: list[Row]
    snapshots: list[Row]
    tracks: list[Row]  # the assignments in effect at any time during the session
    until: datetime  # the session's end, or the time of the export for one that has not ended

    @property
    def decisions(self) -> list[Row]:
        return [m for m in self.messages if m["is_key_decision"]]


def tracks_during(tracks: Sequence[Row], start: datetime, until: datetime) -> list[Row]:
    """The assignments in effect at some time in [start, until]: made before the end, retired after the start
    (or never). A mapping replaced during the session appears twice, its old row with the time it was retired."""
    return sorted((t for t in tracks
                   if t["assigned_at"] <= until and (t["retired_at"] is None or t["retired_at"] > start)),
                  key=lambda t: (t["track_number"], t["assigned_at"], t["id"]))


def _track_rows(view: SessionView) -> Iterator[list[str]]:
    """Track, name, plugin, since when (marked when made in this session), until when (only when it ended
    during this session: an empty cell means it was still mapped when the session ended)."""
    for track in view.tracks:
        retired = track["retired_at"]
        since = stamp(track["assigned_at"]) + (" (this session)" if track["session_id"] == view.session["id"] else "")
        until = stamp(retired) if retired is not None and retired <= view.until else " "
        yield [str(track["track_number"]), cell(track["track_name"]), cell(track["plugin_id"]), since, until]


def _entry(row: Row, is_message: bool, day: datetime) -> list[str]:
    """One line of the conversation: a bold header (time, who, model or display type), the decision, the text."""
    when = _clock(row["created_at"], day)
    if is_message:
        head = f"**{when} · {inline(row['role'])}**"
        if row["model"]:
            head += f" · {inline(row['model'])}"
        if row["is_key_decision"]:
            head += " · ⭐ key decision"
    else:
        head = f"**{when} · Mission Control · {inline(row['role'])}**"
        if row["display_type"] != "chat":
            head += f" · {inline(row['display_type'])}"
    lines = [head, ""]
    if is_message and row["is_key_decision"] and row["decision_summary"]:
        lines += [*quoted(["**Decision:** " + line if i == 0 else line
                           for i, line in enumerate(text_block(row["decision_summary"]))]), ""]
    return [*lines, *text_block(row["content"]), ""]


def _excerpt(text: str) -> str:
    first = next((line.strip() for line in _lines(text) if line.strip()), "")
    return inline(first if len(first) <= EXCERPT else first[: EXCERPT - 1].rstrip() + "…")


def _snapshot(snapshot: Row, messages: dict[str, Row], day: datetime) -> list[str]:
    lines = [f"### {heading(snapshot['name'])}", "", f"Taken at {_clock(snapshot['created_at'], day)}.", ""]
    if snapshot["description"]:
        lines += [*text_block(snapshot["description"]), ""]
    ids: list[str] = snapshot["message_ids"]
    lines += [f"Messages ({len(ids)}):", ""]
    for message_id in ids:
        message = messages.get(message_id)
        lines.append(f"- message {message_id} (not in this export)" if message is None else
                     f"- {_clock(message['created_at'], day)} · {inline(message['role'])}: "
                     f"{_excerpt(message['content'])}")
    lines.append("")
    if snapshot["track_state"] is not None:
        state = json.dumps(snapshot["track_state"], indent=2, ensure_ascii=False, sort_keys=True)
        lines += ["Track state:", "", *fenced(state, "json"), ""]
    return lines


def render_session(view: SessionView) -> str:
    session, start = view.session, view.session["started_at"]
    ended: datetime | None = session["ended_at"]
    if ended is not None:
        end = f"ended {stamp(ended)} UTC ({_duration(start, ended)})"
    else:
        end = "not ended (the current session, or the bridge stopped during it)"
    lines = [f"# {heading(view.project['name'])}: session of {start:%Y-%m-%d %H:%M} UTC", "",
             f"- Started {stamp(start)} UTC, {end}",
             f"- {plural(len(view.messages), 'message')}, {plural(len(view.conversation), 'Mission Control line')}, "
             f"{plural(len(view.snapshots), 'snapshot')}, {plural(len(view.decisions), 'key decision')}",
             f"- Session id {session['id']}", "", "## Tracks", ""]
    if view.tracks:
        lines += ["The track mapping during this session (UTC). A track changed in the session has a row for each "
                  "mapping it had; *Until* is empty for a mapping still in place when the session ended.", "",
                  *table(["Track", "Name", "Plugin", "Since", "Until"], _track_rows(view)), ""]
    else:
        lines += ["No tracks were mapped during this session.", ""]
    if view.decisions:
        lines += ["## Key decisions", ""]
        lines += [f"- {_clock(m['created_at'], start)}: "
                  + (" ".join(inline(x) for x in _lines(m["decision_summary"]) if x.strip())
                     if m["decision_summary"] else _excerpt(m["content"]))
                  for m in view.decisions]
        lines.append("")
    lines += ["## Conversation", ""]
    timeline = sorted([(m["created_at"], 0, m["id"], m) for m in view.messages]
                      + [(c["created_at"], 1, c["id"], c) for c in view.conversation], key=lambda e: e[:3])
    if not timeline:
        lines += ["Nothing was said in this session.", ""]
    for _, kind, _, row in timeline:
        lines += _entry(row, kind == 0, start)
    if view.snapshots:
        by_id = {m["id"]: m for m in view.messages}
        lines += ["## Snapshots", ""]
        for snapshot in view.snapshots:
            lines += _snapshot(snapshot, by_id, start)
    return "\n".join(lines).rstrip("\n") + "\n"


@dataclass(frozen=True)
class IndexLine:
    file: str
    view: SessionView


def render_index(project: Row, sessions: Sequence[IndexLine], current_tracks: Sequence[Row],
                 exported_at: datetime, version: str, jsonl_files: Sequence[str]) -> str:
    lines = [f"# {heading(project['name'])}", "",
             f"Exported {stamp(exported_at)} UTC by oscbridge {version}. All times are UTC.", ""]
    if project["logic_project_path"]:
        lines.append(f"- Logic project: {inline(project['logic_project_path'])}")
    lines += [f"- Created {stamp(project['created_at'])} UTC, last opened "
              f"{stamp(project['last_opened_at']) or 'never'}{' UTC' if project['last_opened_at'] else ''}",
              f"- {plural(len(sessions), 'session')}", "", "## Sessions", ""]
    if sessions:
        lines += [*table(["Session", "Ended", "Messages", "Mission Control", "Snapshots", "Key decisions"],
                         ([f"[{stamp(line.view.session['started_at'])}](sessions/{line.file})",
                           stamp(line.view.session["ended_at"]) or "not ended",
                           str(len(line.view.messages)), str(len(line.view.conversation)),
                           str(len(line.view.snapshots)), str(len(line.view.decisions))] for line in sessions)), ""]
    else:
        lines += ["This project has no sessions.", ""]
    lines += ["## Tracks now", ""]
    if current_tracks:
        lines += [*table(["Track", "Name", "Plugin", "Assigned"],
                         ([str(t["track_number"]), cell(t["track_name"]), cell(t["plugin_id"]),
                           stamp(t["assigned_at"])] for t in current_tracks)), ""]
    else:
        lines += ["No tracks are mapped.", ""]
    if jsonl_files:
        lines += ["## Data", "", "The same history as JSON Lines, one object per row: "
                  + ", ".join(f"[{name}]({name})" for name in jsonl_files) + ".", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
