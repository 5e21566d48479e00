"""The names of the values in the bridge's replies, for the header row of `oscbridge call`, the JSON fields of the
terminal commands and the headers of their tables. The table itself is `oscbridge/api/columns.py`, shared with the
MCP server; `heading` turns a name into a table header.
"""

from __future__ import annotations

from oscbridge.api.columns import LISTS as LISTS
from oscbridge.api.columns import RESULTS as RESULTS
from oscbridge.api.columns import columns_of as columns_of
from oscbridge.api.columns import named as named
from oscbridge.api.columns import none_for_absent as none_for_absent


def heading(name: str) -> str:
    """`seconds_since_heard` -> `seconds since heard`."""
    return name.replace("_", " ")
