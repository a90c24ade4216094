DELETE FROM auth_events WHERE kind IN ('consent_granted', 'consent_revoked', 'code_reused', 'device_decided');
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind_check CHECK (kind IN (
    'login_ok', 'login_failed', 'token_issued', 'refresh', 'reuse_detected',
    'revoke', 'logout', 'lockout', 'sign_out_all', 'password_changed',
    'deactivated', 'activated', 'user_created', 'roles_changed', 'session_ended',
    'client_created', 'client_secret_rotated', 'client_removed', 'client_auth_failed',
    'pat_created', 'pat_revoked',
    'second_factor_added', 'second_factor_removed', 'second_factor_used', 'second_factor_failed',
    'recovery_codes_generated', 'second_factors_reset',
    'password_reset_requested',
    'profile_changed', 'email_change_requested', 'email_changed', 'invitation_sent'));
DROP TABLE device_codes;
DROP TABLE authorization_codes;
ALTER TABLE refresh_tokens DROP COLUMN access_jti, DROP COLUMN access_expires_at;
DROP TABLE oauth_consents;
DROP INDEX refresh_families_client_idx;
ALTER TABLE refresh_families DROP COLUMN client_id;
DELETE FROM role_scopes WHERE scope_name IN ('openid', 'email');
DELETE FROM scopes WHERE name IN ('openid', 'email');
DELETE FROM signing_keys WHERE purpose = 'id_token' OR alg = 'RS256';
ALTER TABLE signing_keys DROP COLUMN purpose;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_alg_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_alg_check CHECK (alg IN ('ES256', 'EdDSA', 'HS256'));
