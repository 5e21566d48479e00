"""oscbridge: the one OSC endpoint of the Chatty Channels AIplayer plugins, backed by PostgreSQL + pgvector."""

__version__ = "0.1.0"
