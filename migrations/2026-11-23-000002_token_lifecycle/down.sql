ALTER TABLE users
    DROP COLUMN locked_until,
    DROP COLUMN lockouts,
    DROP COLUMN failed_logins;
DROP TABLE revoked_access_tokens;
DROP TABLE refresh_tokens;
