-- Personal access tokens: a credential a person makes for a script, with a name, scopes,
-- a mandatory expiry, and a record of when and from where it was last used. Only the SHA-256 of the
-- token is stored (it carries 178 random bits: a fast hash is enough, and a lookup is one index probe).
CREATE TABLE personal_access_tokens (
    id                UUID PRIMARY KEY,
    user_id           UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    token_hash        BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    -- Space-separated, as refresh tokens store theirs; what the owner's roles allowed at creation.
    scope             TEXT NOT NULL,
    -- The database's clock at creation: compared with users.tokens_valid_after, as every credential is.
    created_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Never open-ended, and at most 365 days (plus a minute for the clocks of the instance and the database).
    expires_at        TIMESTAMPTZ NOT NULL,
    last_used_at      TIMESTAMPTZ,
    last_used_address TEXT,
    revoked_at        TIMESTAMPTZ,
    CHECK (expires_at > created_at AND expires_at <= created_at + INTERVAL '365 days 1 minute'),
    CHECK (last_used_address IS NULL OR last_used_at IS NOT NULL)
);
-- A user's tokens, listed on their pages and by the CLI.
CREATE INDEX personal_access_tokens_user_idx ON personal_access_tokens (user_id, created_at);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed',
    'pat_created', 'pat_revoked'));
