"""The bridge as an MCP server (docs/mcp.md): tools, resources and prompts over the `/bridge/*` API, for any MCP
client (a desktop assistant, an IDE agent, a local model runner).

One implementation, two transports:

* stdio, `oscbridge mcp` (oscbridge/tools/mcp.py): a separate process that holds no state and reaches the running
  bridge over OSC, like every other client;
* streamable HTTP at `/mcp` on the web port, inside the daemon (`mount.py`, `http.py`): the same tools run the
  requests through the daemon's own endpoint table.

The tools see the bridge only through a `BridgeLink` (`link.py`: a request in, values or rows out), so the logic
(`studio.py` reads, `actions.py` acts) is the same either way. The MCP SDK is imported by `server.py` and `http.py`
only: the daemon loads them on the first request to `/mcp`, never at start.
"""
