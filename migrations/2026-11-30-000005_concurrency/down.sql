ALTER TABLE sessions
    DROP COLUMN user_agent,
    DROP COLUMN client_addr,
    DROP COLUMN last_seen_at,
    DROP COLUMN id,
    ALTER COLUMN user_id DROP NOT NULL;

DROP TABLE login_throttle;

ALTER TABLE refresh_tokens
    ADD COLUMN user_id    UUID REFERENCES users (id) ON DELETE CASCADE,
    ADD COLUMN revoked_at TIMESTAMPTZ,
    DROP CONSTRAINT refresh_tokens_family_fkey;
UPDATE refresh_tokens t SET user_id = f.user_id, revoked_at = f.revoked_at
    FROM refresh_families f WHERE f.id = t.family_id;
ALTER TABLE refresh_tokens ALTER COLUMN user_id SET NOT NULL;
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
DROP TABLE refresh_families;

ALTER TABLE users
    DROP COLUMN claims_expire_at,
    DROP COLUMN check_claims;

DROP INDEX auth_events_kind_idx;
UPDATE auth_events SET detail = reason WHERE kind = 'login_failed' AND reason IS NOT NULL;
ALTER TABLE auth_events DROP COLUMN reason;
