ALTER TABLE auth_events DROP COLUMN request_id;
