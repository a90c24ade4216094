DELETE FROM auth_events WHERE kind IN ('profile_changed', 'email_change_requested', 'email_changed', 'invitation_sent');
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed',
    'pat_created', 'pat_revoked',
    'second_factor_added', 'second_factor_removed', 'second_factor_used', 'second_factor_failed',
    'recovery_codes_generated', 'second_factors_reset',
    'password_reset_requested'));
DROP TABLE email_change_tokens;
DELETE FROM password_reset_tokens WHERE purpose = 'invitation';
ALTER TABLE password_reset_tokens DROP COLUMN purpose, DROP COLUMN sent_to;
ALTER TABLE users DROP COLUMN email_verified;
