-- Round 2: every guarantee holds for requests that race, on any number of instances sharing this database.

-- Why a sign-in failed gets its own typed column (it used to be the free-text detail).
ALTER TABLE auth_events
    ADD COLUMN reason TEXT CHECK (reason IN ('unknown_user', 'wrong_password', 'locked', 'inactive_user'));
UPDATE auth_events SET reason = detail, detail = NULL
    WHERE kind = 'login_failed' AND detail IN ('unknown_user', 'wrong_password', 'locked', 'inactive_user');
CREATE INDEX auth_events_kind_idx ON auth_events (kind, occurred_at);

-- Lockout that cannot be raced: a sign-in claims its verification before bcrypt runs. At most
-- (threshold - failed_logins) claims are live at once; claims expire together at claims_expire_at,
-- so an instance that dies mid-check cannot hold an account's claims for good.
ALTER TABLE users
    ADD COLUMN check_claims     INTEGER NOT NULL DEFAULT 0 CHECK (check_claims >= 0),
    ADD COLUMN claims_expire_at TIMESTAMPTZ;

-- Refresh-token families: the unit of revocation. Rotation and revocation both lock the family row,
-- so a revoked family never keeps a child that a concurrent refresh was creating.
CREATE TABLE refresh_families (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The scopes of the family's newest token.
    scope        TEXT NOT NULL,
    -- When the credential check of the password grant that began the family began.
    auth_time    TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The family ends here however often it is rotated (GATEHOUSE_REFRESH_FAMILY_MAX_AGE after auth_time).
    expires_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    client_addr  TEXT
);
CREATE INDEX refresh_families_user_idx ON refresh_families (user_id);

INSERT INTO refresh_families (id, user_id, scope, auth_time, created_at, expires_at, last_used_at, revoked_at)
SELECT family_id,
       (array_agg(user_id ORDER BY issued_at))[1],
       (array_agg(scope ORDER BY issued_at DESC))[1],
       min(issued_at),
       min(issued_at),
       min(issued_at) + interval '90 days',
       max(used_at),
       max(revoked_at)
FROM refresh_tokens
GROUP BY family_id;

ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_family_fkey FOREIGN KEY (family_id) REFERENCES refresh_families (id) ON DELETE CASCADE,
    DROP COLUMN revoked_at,
    DROP COLUMN user_id;

-- The per-address sign-in budget, shared by every instance: one GCRA state per address (IPv6: per /64).
-- UNLOGGED: it is a rate limiter's scratch state, not worth a WAL write per attempt; a crash forgets it.
CREATE UNLOGGED TABLE login_throttle (
    bucket       TEXT PRIMARY KEY,
    -- The "theoretical arrival time" of the generic cell rate algorithm.
    tat          TIMESTAMPTZ NOT NULL,
    -- Whether the latest attempt was let through.
    last_allowed BOOLEAN NOT NULL DEFAULT TRUE
);

-- Only signed-in browsers have a row now: an anonymous visitor's CSRF token lives in a signed cookie.
DELETE FROM sessions WHERE user_id IS NULL;
ALTER TABLE sessions
    ALTER COLUMN user_id SET NOT NULL,
    ADD COLUMN id           UUID NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    ADD COLUMN last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN client_addr  TEXT,
    ADD COLUMN user_agent   TEXT;
