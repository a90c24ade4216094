-- A second factor for people: an authenticator app (TOTP, RFC 6238) and recovery codes.
--
-- One row per user: the TOTP secret sealed under a key derived from the master secret (covered by
-- `gatehouse keys re-encrypt`), enrolment pending until a code from the app confirms it, and the
-- highest time step ever accepted. Accepting a step is one conditional UPDATE
-- (`last_used_step < $step`), so of racing requests on any number of instances one wins.
CREATE TABLE user_totp (
    user_id        UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed  BYTEA NOT NULL,
    -- NULL while enrolling: the secret was shown, no code from it was entered yet.
    confirmed_at   TIMESTAMPTZ,
    last_used_step BIGINT,
    -- Wrong codes while enrolling: five cancel the enrolment.
    enrol_failures INTEGER NOT NULL DEFAULT 0 CHECK (enrol_failures >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- Ten single-use codes per user, stored as SHA-256 of the user id and the normalised code (each
-- carries 80 random bits: a fast hash is enough). Using one is a conditional UPDATE of `used_at`.
CREATE TABLE recovery_codes (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    used_at    TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

-- How the person behind a refresh family signed in (RFC 8176 methods): a refresh keeps it.
ALTER TABLE refresh_families ADD COLUMN amr TEXT[] NOT NULL DEFAULT '{pwd}';

ALTER TABLE auth_events DROP CONSTRAINT auth_events_reason_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_reason_check
    CHECK (reason IN ('unknown_user', 'wrong_password', 'locked', 'inactive_user', 'second_factor'));

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed',
    'pat_created', 'pat_revoked',
    'second_factor_added', 'second_factor_removed', 'second_factor_used', 'second_factor_failed',
    'recovery_codes_generated', 'second_factors_reset'));
