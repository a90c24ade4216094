-- Administration and self-service (issue #13): who did it, what was done, and finding it again among
-- millions of events and a hundred thousand users.

-- The acting user of an administrative change (an admin on a page or through the API, the user
-- themselves on /account); NULL for the command line, which has no user, and for sign-in events.
ALTER TABLE auth_events ADD COLUMN actor_id UUID REFERENCES users (id) ON DELETE SET NULL;

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended'));

-- The audit trail is paged newest first by (occurred_at, id), with or without a user or kind filter:
-- each filter has an index in that order, so a page is one index range scan however old it is.
-- These replace the narrower indexes, which every query that used them can use as well.
CREATE INDEX auth_events_time_idx ON auth_events (occurred_at, id);
CREATE INDEX auth_events_user_time_idx ON auth_events (user_id, occurred_at, id);
CREATE INDEX auth_events_kind_time_idx ON auth_events (kind, occurred_at, id);
DROP INDEX auth_events_occurred_at_idx;
DROP INDEX auth_events_user_idx;
DROP INDEX auth_events_kind_idx;
-- ON DELETE SET NULL of actor_id must find an admin's events without reading the whole table.
CREATE INDEX auth_events_actor_idx ON auth_events (actor_id) WHERE actor_id IS NOT NULL;

-- Admins search users by any part of the username or email address.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_username_trgm_idx ON users USING gin (lower(username) gin_trgm_ops);
CREATE INDEX users_email_trgm_idx ON users USING gin (lower(email) gin_trgm_ops);

-- The user list is paged by username with OFFSET (the API's `page=`). PostgreSQL cannot answer an
-- expression index (lower(username)) from the index alone, so a deep page would read every skipped
-- row from the table; a stored key and an index on (key, id) let it skip them inside the index.
ALTER TABLE users ADD COLUMN username_key TEXT GENERATED ALWAYS AS (lower(username)) STORED;
CREATE INDEX users_username_key_idx ON users (username_key, id);

-- The statistics count the accounts locked now; without an index that is a scan of every user.
CREATE INDEX users_locked_idx ON users (locked_until) WHERE locked_until IS NOT NULL;

-- "Is this user an admin": the last-admin guard counts the admins on every change that could remove one.
CREATE INDEX user_roles_role_idx ON user_roles (role_name, user_id);

-- The statistics read on every view of the admin pages and /api/admin/stats, kept by triggers so a
-- view costs a few rows however many users and events there are (counting 100,000 users and 3
-- million events on every view took longer than the pages may).
--
-- Users, active users and members per role. Every writer takes these rows in one order (users,
-- active_users, then roles by name), so two of them never wait for each other in a circle.
CREATE TABLE account_counts (
    -- 'users', 'active_users' or 'role:<role name>'
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO account_counts (name, value) VALUES
    ('users', (SELECT count(*) FROM users)),
    ('active_users', (SELECT count(*) FROM users WHERE is_active));
INSERT INTO account_counts (name, value) SELECT 'role:' || role_name, count(*) FROM user_roles GROUP BY role_name;

-- Inserts and deletes are counted per statement (from their transition tables), so a bulk import
-- updates each counter once instead of once per row.
CREATE FUNCTION count_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    users_delta  BIGINT;
    active_delta BIGINT;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE is_active) INTO users_delta, active_delta FROM changed_rows;
    IF TG_OP = 'DELETE' THEN
        users_delta := -users_delta;
        active_delta := -active_delta;
    END IF;
    IF users_delta <> 0 THEN
        UPDATE account_counts SET value = value + users_delta WHERE name = 'users';
    END IF;
    IF active_delta <> 0 THEN
        UPDATE account_counts SET value = value + active_delta WHERE name = 'active_users';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_inserted_counted AFTER INSERT ON users
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION count_users();
CREATE TRIGGER users_deleted_counted AFTER DELETE ON users
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION count_users();

-- Activation and deactivation come one user at a time; a row trigger that fires only when the flag
-- really changes keeps sign-ins (which update other columns) free of it.
CREATE FUNCTION count_activation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE account_counts SET value = value + CASE WHEN NEW.is_active THEN 1 ELSE -1 END WHERE name = 'active_users';
    RETURN NULL;
END
$$;
CREATE TRIGGER users_active_counted AFTER UPDATE OF is_active ON users
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active) EXECUTE FUNCTION count_activation();

-- Role members, per statement, each role's row taken in name order.
CREATE FUNCTION count_role_members() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed RECORD;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR changed IN SELECT role_name, count(*) AS delta FROM new_rows GROUP BY role_name ORDER BY role_name LOOP
            INSERT INTO account_counts (name, value) VALUES ('role:' || changed.role_name, changed.delta)
                ON CONFLICT (name) DO UPDATE SET value = account_counts.value + EXCLUDED.value;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR changed IN SELECT role_name, count(*) AS delta FROM old_rows GROUP BY role_name ORDER BY role_name LOOP
            UPDATE account_counts SET value = value - changed.delta WHERE name = 'role:' || changed.role_name;
        END LOOP;
    ELSE
        FOR changed IN
            SELECT role_name, sum(delta) AS delta
            FROM (SELECT role_name, 1 AS delta FROM new_rows UNION ALL SELECT role_name, -1 FROM old_rows) AS moved
            GROUP BY role_name HAVING sum(delta) <> 0 ORDER BY role_name
        LOOP
            INSERT INTO account_counts (name, value) VALUES ('role:' || changed.role_name, changed.delta)
                ON CONFLICT (name) DO UPDATE SET value = account_counts.value + EXCLUDED.value;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER user_roles_inserted_counted AFTER INSERT ON user_roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_role_members();
CREATE TRIGGER user_roles_deleted_counted AFTER DELETE ON user_roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_role_members();
CREATE TRIGGER user_roles_updated_counted AFTER UPDATE ON user_roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_role_members();

-- Sign-ins and failures per hour (UTC), for the charts: 24 and 720 rows instead of a scan of every
-- sign-in of the last 30 days. Sign-ins are bcrypt-bound (a few per second per core), so one row per
-- hour is no point of contention. (A bulk load of events should disable the trigger and rebuild the
-- table from auth_events, as scripts/seed-scale does.)
CREATE TABLE sign_in_hours (
    hour   TIMESTAMPTZ PRIMARY KEY,
    ok     BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0
);
INSERT INTO sign_in_hours (hour, ok, failed)
SELECT date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*) FILTER (WHERE kind = 'login_ok'), count(*) FILTER (WHERE kind = 'login_failed')
FROM auth_events WHERE kind IN ('login_ok', 'login_failed') GROUP BY 1;

CREATE FUNCTION count_sign_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sign_in_hours (hour, ok, failed)
    VALUES (date_trunc('hour', NEW.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
            (NEW.kind = 'login_ok')::int, (NEW.kind = 'login_failed')::int)
    ON CONFLICT (hour) DO UPDATE SET ok = sign_in_hours.ok + EXCLUDED.ok, failed = sign_in_hours.failed + EXCLUDED.failed;
    RETURN NULL;
END
$$;
CREATE TRIGGER auth_events_sign_ins_counted AFTER INSERT ON auth_events
    FOR EACH ROW WHEN (NEW.kind IN ('login_ok', 'login_failed')) EXECUTE FUNCTION count_sign_in();
