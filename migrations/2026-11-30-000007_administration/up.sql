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
