"""PostgreSQL: the embedded server, the connection pool, the schema, the spool and the batching writer."""
