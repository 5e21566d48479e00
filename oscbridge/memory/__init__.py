"""Conversation memory: LLM messages with embeddings, hybrid context search, Mission Control conversation rows
and context snapshots (issue 4; docs/memory.md).

`component.MemoryComponent` plugs it into the bridge; `client.MemoryCalls` gives `oscbridge.client.BridgeClient`
its typed calls. Nothing is imported here, so that the client does not pull in the daemon's dependencies."""
