-- The id of the request that caused an event (the `X-Request-Id` of its answer), so an audit row
-- leads to the log lines of the same request. NULL for events of the command line.
ALTER TABLE auth_events ADD COLUMN request_id text
    CONSTRAINT auth_events_request_id_sane CHECK (request_id ~ '^[A-Za-z0-9._-]{1,64}$');
