-- Sign in with gatehouse (issue #20): the authorization-code flow with PKCE, OpenID Connect and
-- the device grant.

-- ID tokens are signed by keys of their own (RS256 always; ES256 and EdDSA for clients that
-- registered them), beside the access-token keys: each purpose and algorithm is a timeline of its
-- own, and an access token is never accepted under an ID-token key.
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_alg_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_alg_check CHECK (alg IN ('ES256', 'EdDSA', 'HS256', 'RS256'));
ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'access'
    CHECK (purpose IN ('access', 'id_token'));
ALTER TABLE signing_keys ADD CHECK (purpose = 'access' OR alg <> 'HS256');

-- The OpenID Connect scopes; `profile` (name, username) exists since the first migration.
INSERT INTO scopes (name, description) VALUES
    ('openid', 'Sign in to an app with your gatehouse account'),
    ('email', 'Your email address and whether it is verified');
INSERT INTO role_scopes (role_name, scope_name) VALUES
    ('user', 'openid'), ('user', 'email'), ('admin', 'openid'), ('admin', 'email');

-- The client a family's tokens were issued to: a refresh names the same client (and a confidential
-- one authenticates), and revoking a connected app ends its families.
ALTER TABLE refresh_families ADD COLUMN client_id TEXT REFERENCES oauth_clients (client_id);
CREATE INDEX refresh_families_client_idx ON refresh_families (user_id, client_id) WHERE client_id IS NOT NULL;

-- What a person allowed an app (the consent page is not shown again for these scopes).
CREATE TABLE oauth_consents (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (client_id),
    -- Space-separated, in the stable order of refresh_families.scope.
    scope      TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);

-- Authorization codes (RFC 6749 §4.1, RFC 7636): SHA-256 of 32 random bytes, used once within
-- 60 seconds by the client, redirect URI and PKCE challenge they were issued for. Using one marks
-- it used and records what it issued, so that a second use can revoke that.
CREATE TABLE authorization_codes (
    code_hash       BYTEA PRIMARY KEY CHECK (length(code_hash) = 32),
    client_id       TEXT NOT NULL REFERENCES oauth_clients (client_id),
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    -- Whether the request named it (RFC 6749 §4.1.3: then the exchange must name it too).
    redirect_uri_given BOOLEAN NOT NULL,
    -- base64url(SHA-256(code_verifier)); only S256 is accepted.
    code_challenge  TEXT NOT NULL,
    nonce           TEXT,
    scope           TEXT NOT NULL,
    -- When and how the person signed in (the session's), for auth_time and amr.
    auth_time       TIMESTAMPTZ NOT NULL,
    amr             TEXT[] NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    used_at         TIMESTAMPTZ,
    -- The family the exchange began: ended, with every access token issued in it, when the code
    -- is presented again.
    family_id       UUID
);

-- The access token issued with each refresh token (its id and expiry), so that everything a family
-- issued can be refused at once (a code used twice revokes every token issued from it).
ALTER TABLE refresh_tokens ADD COLUMN access_jti UUID, ADD COLUMN access_expires_at TIMESTAMPTZ;
CREATE INDEX authorization_codes_expires_idx ON authorization_codes (expires_at);

-- The device authorization grant (RFC 8628): the device polls with device_code (stored as
-- SHA-256); the person types user_code at /device. Tokens are handed out once (delivered_at).
CREATE TABLE device_codes (
    device_code_hash BYTEA PRIMARY KEY CHECK (length(device_code_hash) = 32),
    -- Eight letters of BCDFGHJKLMNPQRSTVWXZ, stored without the dash.
    user_code        TEXT NOT NULL UNIQUE CHECK (user_code ~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$'),
    client_id        TEXT NOT NULL REFERENCES oauth_clients (client_id),
    scope            TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    -- Seconds a poll must wait after the previous one; grows by 5 on every slow_down.
    interval_secs    INTEGER NOT NULL DEFAULT 5,
    last_polled_at   TIMESTAMPTZ,
    -- Set by the person at /device: allowed (with their sign-in) or denied.
    user_id          UUID REFERENCES users (id) ON DELETE CASCADE,
    decision         TEXT CHECK (decision IN ('allowed', 'denied')),
    auth_time        TIMESTAMPTZ,
    amr              TEXT[],
    delivered_at     TIMESTAMPTZ,
    CHECK ((decision IS NULL) = (user_id IS NULL))
);
CREATE INDEX device_codes_expires_idx ON device_codes (expires_at);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed',
    'pat_created', 'pat_revoked',
    'second_factor_added', 'second_factor_removed', 'second_factor_used', 'second_factor_failed',
    'recovery_codes_generated', 'second_factors_reset',
    'password_reset_requested',
    'profile_changed', 'email_change_requested', 'email_changed', 'invitation_sent',
    'consent_granted', 'consent_revoked', 'code_reused', 'device_decided'));
