"""The schema's migrations after the baseline (schema.sql, version 1): `NNNN_what_it_does.sql`, applied in order by
`oscbridge.store.schema.apply_schema`. A file is never changed once released; a later change is a new file."""
