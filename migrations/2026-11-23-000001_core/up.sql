-- Roles and the scopes each role may be granted. Seeded here; afterwards they are data an operator may edit.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    description TEXT NOT NULL DEFAULT ''
);

-- Scope names follow RFC 6749 §3.3 scope-token, narrowed to the characters we use.
CREATE TABLE scopes (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_:.-]{0,63}$'),
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE role_scopes (
    role_name  TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    scope_name TEXT NOT NULL REFERENCES scopes (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (role_name, scope_name)
);

CREATE TABLE users (
    id                 UUID PRIMARY KEY,
    username           TEXT NOT NULL CHECK (char_length(username) BETWEEN 1 AND 64),
    email              TEXT CHECK (char_length(email) <= 254),
    full_name          TEXT CHECK (char_length(full_name) <= 200),
    password_hash      TEXT NOT NULL,
    is_active          BOOLEAN NOT NULL DEFAULT TRUE,
    -- Access tokens issued before this instant are refused (password change, sign out everywhere).
    tokens_valid_after TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at      TIMESTAMPTZ
);
-- Usernames are unique without regard to case: "Alice" and "alice" are one account.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TABLE user_roles (
    user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_name TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (user_id, role_name)
);

CREATE TABLE items (
    id         UUID PRIMARY KEY,
    owner_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      TEXT NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body       TEXT NOT NULL DEFAULT '' CHECK (char_length(body) <= 10000),
    public     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX items_owner_idx ON items (owner_id, created_at);
CREATE INDEX items_public_idx ON items (created_at) WHERE public;

-- The audit trail: one row for every authentication event, successful or not.
CREATE TABLE auth_events (
    id                 BIGSERIAL PRIMARY KEY,
    occurred_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind               TEXT NOT NULL CHECK (kind IN (
                           'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
                           'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
                           'deactivated', 'activated')),
    user_id            UUID REFERENCES users (id) ON DELETE SET NULL,
    attempted_username TEXT,
    client_addr        TEXT,
    channel            TEXT NOT NULL CHECK (channel IN ('web', 'api', 'cli')),
    detail             TEXT
);
CREATE INDEX auth_events_occurred_at_idx ON auth_events (occurred_at);
CREATE INDEX auth_events_user_idx ON auth_events (user_id, occurred_at);

INSERT INTO roles (name, description) VALUES
    ('user', 'A person or program that signs in'),
    ('admin', 'May see statistics and manage users');

INSERT INTO scopes (name, description) VALUES
    ('profile', 'Read your own profile'),
    ('items:read', 'Read your items'),
    ('items:write', 'Create items'),
    ('admin:stats', 'Read service statistics'),
    ('admin:users', 'Manage users');

INSERT INTO role_scopes (role_name, scope_name) VALUES
    ('user', 'profile'), ('user', 'items:read'), ('user', 'items:write'),
    ('admin', 'profile'), ('admin', 'items:read'), ('admin', 'items:write'),
    ('admin', 'admin:stats'), ('admin', 'admin:users');
