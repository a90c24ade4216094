-- Browser sessions, kept server-side so they can be ended for real (logout, deactivation, password
-- change, "sign out everywhere") and shared by several instances. The cookie carries only a random
-- key; this table stores its SHA-256.
CREATE TABLE sessions (
    key_hash            BYTEA PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    -- Set once someone signed in with this session, so all of a user's sessions can be ended together.
    user_id             UUID REFERENCES users (id) ON DELETE CASCADE,
    state               JSONB NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Idle timeout: pushed forward on activity.
    expires_at          TIMESTAMPTZ NOT NULL,
    -- Absolute timeout: never moves.
    absolute_expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
