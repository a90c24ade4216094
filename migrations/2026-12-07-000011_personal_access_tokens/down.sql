DELETE FROM auth_events WHERE kind IN ('pat_created', 'pat_revoked');
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed'));

DROP TABLE personal_access_tokens;
