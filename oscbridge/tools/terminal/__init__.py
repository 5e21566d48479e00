"""Commands for people at a terminal: `status`, `plugins`, `tracks`, `levels`, `tail`, `search`, `calibrate`.

They talk to the running bridge over its OSC API only (`session.py`: UDP, TCP for replies too large for it), print
headed tables with rich (`output.py`: coloured on a terminal, plain when piped) or, with `--json`, one JSON document
with named fields (`columns.py` names every value of every reply, for them and for `oscbridge call`). docs/terminal.md
describes them.
"""
