-- Passkeys (WebAuthn): a person's second factor, or their whole sign-in when discoverable.
-- `passkey` is webauthn-rs's serialised credential (public key, counter, flags): no secret.
CREATE TABLE passkeys (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- One credential belongs to one account, ever (WebAuthn §7.1 step 22).
    credential_id BYTEA NOT NULL UNIQUE,
    name          TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    passkey       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX passkeys_user_idx ON passkeys (user_id, created_at);

-- A ceremony begun and not finished: the challenge and what it expects, in PostgreSQL so that any
-- instance may finish it. Finishing deletes the row (single use); it expires after five minutes.
CREATE TABLE webauthn_ceremonies (
    id         UUID PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('register', 'second_step', 'sign_in')),
    -- The person it is for: none for a passkey sign-in (the passkey says who).
    user_id    UUID REFERENCES users (id) ON DELETE CASCADE,
    state      JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry_idx ON webauthn_ceremonies (expires_at);
