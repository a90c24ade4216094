DELETE FROM auth_events WHERE kind IN ('client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed');
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended'));
DROP TABLE oauth_client_secrets;
DROP TABLE oauth_clients;
