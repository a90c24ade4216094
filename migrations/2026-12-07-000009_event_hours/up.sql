-- Audit events counted per hour and kind, so the last day's figures (`/api/admin/stats`, the stats
-- page) read a few hundred rows instead of counting a day of events. Each hour and kind is spread
-- over 8 slots (by backend process): every token issued or refreshed adds one, and a single hot
-- row would make concurrent issuers wait on each other's commits. Readers sum the slots.
CREATE TABLE event_hours (
    hour  TIMESTAMPTZ NOT NULL,
    kind  TEXT NOT NULL,
    slot  SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 7),
    count BIGINT NOT NULL,
    PRIMARY KEY (hour, kind, slot)
);

INSERT INTO event_hours (hour, kind, slot, count)
SELECT date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', kind, 0, count(*)
FROM auth_events GROUP BY 1, 2;

CREATE FUNCTION count_event_hours() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_hours (hour, kind, slot, count)
    SELECT date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', kind, pg_backend_pid() % 8, count(*)
    FROM new_events GROUP BY 1, 2
    -- One order for every writer: two statements never take the same rows in opposite orders.
    ORDER BY 1, 2
    ON CONFLICT (hour, kind, slot) DO UPDATE SET count = event_hours.count + EXCLUDED.count;
    RETURN NULL;
END
$$;

CREATE TRIGGER auth_events_hours_counted AFTER INSERT ON auth_events
    REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION count_event_hours();
