-- Registered clients (issue #17): programs that authenticate as themselves (client credentials) and,
-- later, apps that sign people in through gatehouse (authorization code, OpenID Connect, device grant).
-- One registry holds everything those need, so that later work adds no columns here.
CREATE TABLE oauth_clients (
    -- Chosen by gatehouse: a readable prefix and 128 random bits, never reused (a removed client's row stays).
    client_id                 TEXT PRIMARY KEY CHECK (client_id ~ '^gc_[A-Za-z0-9_-]{16,64}$'),
    name                      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind                      TEXT NOT NULL CHECK (kind IN ('confidential', 'public')),
    -- The scopes this client may ask for, space-separated in a stable order (as refresh_families.scope).
    scope                     TEXT NOT NULL DEFAULT '',
    redirect_uris             TEXT[] NOT NULL DEFAULT '{}',
    post_logout_redirect_uris TEXT[] NOT NULL DEFAULT '{}',
    -- The operator's own app: no consent page (sign in with gatehouse).
    first_party               BOOLEAN NOT NULL DEFAULT FALSE,
    -- Grant names as at /token.
    grant_types               TEXT[] NOT NULL CHECK (grant_types <@ ARRAY[
        'authorization_code', 'refresh_token', 'client_credentials', 'password',
        'urn:ietf:params:oauth:grant-type:device_code']::TEXT[]),
    id_token_alg              TEXT NOT NULL DEFAULT 'RS256' CHECK (id_token_alg IN ('RS256', 'ES256', 'EdDSA')),
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Removal keeps the row (the audit trail and, later, consents and refresh families name it; the
    -- id is never handed out again) but ends it: its secrets are deleted and its tokens refused.
    removed_at                TIMESTAMPTZ,
    -- A public client has no secret, so it cannot authenticate as itself (RFC 6749 §4.4 needs a confidential client).
    CHECK (kind = 'confidential' OR NOT ('client_credentials' = ANY (grant_types)))
);
CREATE INDEX oauth_clients_live_idx ON oauth_clients (created_at) WHERE removed_at IS NULL;

-- A confidential client's secrets, as SHA-256 of the secret (256 random bits: a fast hash is enough,
-- nothing to guess). The current one has no expiry; rotation gives the previous one an hour.
CREATE TABLE oauth_client_secrets (
    id          UUID PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    secret_hash BYTEA NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ
);
-- At most one current secret per client, whatever races.
CREATE UNIQUE INDEX oauth_client_secrets_current_idx ON oauth_client_secrets (client_id) WHERE expires_at IS NULL;
CREATE INDEX oauth_client_secrets_client_idx ON oauth_client_secrets (client_id, expires_at);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed'));
