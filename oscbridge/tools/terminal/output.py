"""Where a terminal command's facts go: headed tables for people, one JSON document for scripts.

On a terminal, tables are drawn by rich with a rule under the header and colours for states. When stdout is not
a terminal (a pipe, a file) the same tables come out as plain aligned text: no colour codes, no box characters,
no wrapping (one line per row, whatever its length) and no trailing spaces, so `grep`, `awk` and `cut` work on
them. Rich decides what a terminal is (`isatty`, and the `NO_COLOR`, `FORCE_COLOR` and `TERM=dumb` conventions).
Text from the bridge is never read as rich markup: `[abc]` in a message is printed as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from oscbridge.tools.terminal.columns import heading

# Piped output is not wrapped: rich lays tables out for this width, and a row as long as its content needs.
PIPE_WIDTH = 100_000
STATUS_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}
SEVERITY_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}


class TitledTable(Table):
    """A table with its title on a line of its own above it: rich's own title is wrapped to the table's width, which
    breaks a long title over a narrow table into pieces."""

    def __init__(self, heading: str | None, **options: Any) -> None:
        super().__init__(**options)
        self.heading = heading

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.heading:
            yield Text(self.heading, style="bold" if console.is_terminal else "")
        yield from super().__rich_console__(console, options)


class Output:
    """One command's stdout. `json_mode` is the command's `--json`."""

    def __init__(self, file: TextIO, *, json_mode: bool = False) -> None:
        self.file = file
        self.json_mode = json_mode
        self.console = Console(file=file, markup=False, emoji=False, highlight=False)
        self.terminal = self.console.is_terminal
        if not self.terminal:
            self.console.width = PIPE_WIDTH

    def table(self, title: str | None, names: Sequence[str], *, right: Sequence[str] = ()) -> Table:
        """An empty table with a header per column name (`heading`); the columns named in `right` (numbers) are
        right-aligned."""
        table = TitledTable(title, box=box.SIMPLE_HEAD if self.terminal else None, pad_edge=False, show_edge=False,
                            header_style="bold" if self.terminal else "")
        for name in names:
            table.add_column(heading(name), justify="right" if name in right else "left")
        return table

    def show(self, *renderables: RenderableType) -> None:
        """Prints tables and lines; piped, as plain text without trailing spaces."""
        if self.terminal:
            self.console.print(*renderables)
            return
        with self.console.capture() as captured:
            self.console.print(*renderables)
        lines = captured.get().splitlines()
        self.file.write("".join(line.rstrip() + "\n" for line in lines))
        self.file.flush()

    def line(self, text: str, style: str = "") -> None:
        self.show(Text(text, style=style))

    def json(self, document: dict[str, Any]) -> None:
        """The command's one JSON document (indented: people look at it too)."""
        self.file.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        self.file.flush()

    def json_line(self, document: dict[str, Any]) -> None:
        """One JSON document per line, for commands that follow the bridge (`tail`, `levels --watch`)."""
        self.file.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.file.flush()


def styled(text: str, styles: dict[str, str]) -> Text:
    """`text` in the style its value calls for (a status, a severity), if any."""
    return Text(text, style=styles.get(text, ""))


def one_line(text: str) -> str:
    """Text with its line breaks shown as `\\n`, so that a row stays one line (piped tables, the tail)."""
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def cell(value: Any) -> str:
    """A table cell: empty for None (a value the bridge does not have, such as the port of a plugin that is gone)."""
    return "" if value is None else str(value)
