-- Refresh tokens: opaque to clients, stored here only as SHA-256 hashes. Every use rotates the token
-- within its family; presenting a token that was already rotated revokes the whole family.
CREATE TABLE refresh_tokens (
    id         UUID PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    scope      TEXT NOT NULL,
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Access tokens revoked before their expiry (RFC 7009), by `jti`; rows can go once `expires_at` passes.
CREATE TABLE revoked_access_tokens (
    jti        UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per-account brute-force protection, kept in the database so that every instance sees the same count.
ALTER TABLE users
    ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    ADD COLUMN lockouts      INTEGER NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
    ADD COLUMN locked_until  TIMESTAMPTZ;
