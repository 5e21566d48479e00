"""The /bridge/* requests of BRIDGE-API.md, one module per area, and the machinery they share."""
