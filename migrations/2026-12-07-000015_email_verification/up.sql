-- Email verification, email changes by link, and invitations.
--
-- `email_verified`: the address was proven by a link mailed to it (a confirmation, an invitation, a
-- reset link used while the address was unchanged). Addresses stored before this migration were set
-- by admins and never proven: false.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT false;

-- Links that set a password: `reset` (30 minutes, "Forgot your password?") and `invitation`
-- (72 hours, mailed to a user created without a password). `sent_to`: the address the link was
-- mailed to; using the link proves it, if it is still the account's address.
ALTER TABLE password_reset_tokens
    ADD COLUMN purpose TEXT NOT NULL DEFAULT 'reset' CHECK (purpose IN ('reset', 'invitation')),
    ADD COLUMN sent_to TEXT;

-- A new email address waits here until the link mailed to it is used (24 hours, single use, stored
-- as SHA-256; a newer change and any cut-off of the user kill older links).
CREATE TABLE email_change_tokens (
    token_hash BYTEA PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    new_email  TEXT NOT NULL CHECK (char_length(new_email) <= 254),
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX email_change_tokens_user_idx ON email_change_tokens (user_id, created_at);

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
    'profile_changed', 'email_change_requested', 'email_changed', 'invitation_sent'));
