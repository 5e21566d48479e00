-- PgBouncer's userlist.txt for the studio (docs/studio.md, "The studio with docker compose"): the bridge role's
-- name and its SCRAM-SHA-256 verifier exactly as PostgreSQL stores it. PgBouncer needs that very verifier to log
-- in to PostgreSQL with the keys of the bridge's own login (SCRAM pass-through); one made anew from the password,
-- with another salt, would not do. Run by the server's superuser, after `oscbridge db init`:
--
--   (umask 077 && rm -f studio/userlist.txt && docker compose --profile studio exec -T -u postgres studio-postgres \
--       psql -qXAt -v ON_ERROR_STOP=1 -v role=oscbridge_bridge < studio/userlist.sql > studio/userlist.txt)
--
-- The umask makes userlist.txt 0600 from its first byte: the verifier lets whoever reads it log in through PgBouncer.
-- It stops with an error (and psql with a non-zero exit) when the role has no SCRAM-SHA-256 password.

SET oscbridge.userlist_role TO :'role';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_authid WHERE rolname = current_setting('oscbridge.userlist_role')
                   AND rolpassword LIKE 'SCRAM-SHA-256$%') THEN
        RAISE EXCEPTION 'there is no role % with a SCRAM-SHA-256 password: run `oscbridge db init` first',
            current_setting('oscbridge.userlist_role');
    END IF;
END
$$;
SELECT format('"%s" "%s"', rolname, rolpassword) FROM pg_authid WHERE rolname = :'role';
