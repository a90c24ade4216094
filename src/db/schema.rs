// @generated automatically by Diesel CLI.

diesel::table! {
    account_counts (name) {
        name -> Text,
        value -> Int8,
    }
}

diesel::table! {
    auth_events (id) {
        id -> Int8,
        occurred_at -> Timestamptz,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        attempted_username -> Nullable<Text>,
        client_addr -> Nullable<Text>,
        channel -> Text,
        detail -> Nullable<Text>,
        reason -> Nullable<Text>,
        actor_id -> Nullable<Uuid>,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Bytea,
        client_id -> Text,
        user_id -> Uuid,
        redirect_uri -> Text,
        redirect_uri_given -> Bool,
        code_challenge -> Text,
        nonce -> Nullable<Text>,
        scope -> Text,
        auth_time -> Timestamptz,
        amr -> Array<Nullable<Text>>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        family_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    device_codes (device_code_hash) {
        device_code_hash -> Bytea,
        user_code -> Text,
        client_id -> Text,
        scope -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        interval_secs -> Int4,
        last_polled_at -> Nullable<Timestamptz>,
        user_id -> Nullable<Uuid>,
        decision -> Nullable<Text>,
        auth_time -> Nullable<Timestamptz>,
        amr -> Nullable<Array<Nullable<Text>>>,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    email_change_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        new_email -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    event_hours (hour, kind, slot) {
        hour -> Timestamptz,
        kind -> Text,
        slot -> Int2,
        count -> Int8,
    }
}

diesel::table! {
    items (id) {
        id -> Uuid,
        owner_id -> Uuid,
        title -> Text,
        body -> Text,
        public -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    login_throttle (bucket) {
        bucket -> Text,
        tat -> Timestamptz,
        last_allowed -> Bool,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> Uuid,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        recipient -> Text,
        subject -> Text,
        body_text -> Nullable<Text>,
        body_html -> Nullable<Text>,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_client_secrets (id) {
        id -> Uuid,
        client_id -> Text,
        secret_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_clients (client_id) {
        client_id -> Text,
        name -> Text,
        kind -> Text,
        scope -> Text,
        redirect_uris -> Array<Nullable<Text>>,
        post_logout_redirect_uris -> Array<Nullable<Text>>,
        first_party -> Bool,
        grant_types -> Array<Nullable<Text>>,
        id_token_alg -> Text,
        created_at -> Timestamptz,
        removed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_consents (user_id, client_id) {
        user_id -> Uuid,
        client_id -> Text,
        scope -> Text,
        granted_at -> Timestamptz,
    }
}

diesel::table! {
    passkeys (id) {
        id -> Uuid,
        user_id -> Uuid,
        credential_id -> Bytea,
        name -> Text,
        passkey -> Jsonb,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    password_reset_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        purpose -> Text,
        sent_to -> Nullable<Text>,
    }
}

diesel::table! {
    personal_access_tokens (id) {
        id -> Uuid,
        user_id -> Uuid,
        name -> Text,
        token_hash -> Bytea,
        scope -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        last_used_address -> Nullable<Text>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    recovery_codes (user_id, code_hash) {
        user_id -> Uuid,
        code_hash -> Bytea,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_families (id) {
        id -> Uuid,
        user_id -> Uuid,
        scope -> Text,
        auth_time -> Timestamptz,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        client_addr -> Nullable<Text>,
        amr -> Array<Nullable<Text>>,
        client_id -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        token_hash -> Bytea,
        scope -> Text,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        access_jti -> Nullable<Uuid>,
        access_expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    revoked_access_tokens (jti) {
        jti -> Uuid,
        user_id -> Uuid,
        expires_at -> Timestamptz,
        revoked_at -> Timestamptz,
    }
}

diesel::table! {
    role_scopes (role_name, scope_name) {
        role_name -> Text,
        scope_name -> Text,
    }
}

diesel::table! {
    roles (name) {
        name -> Text,
        description -> Text,
    }
}

diesel::table! {
    scopes (name) {
        name -> Text,
        description -> Text,
    }
}

diesel::table! {
    sessions (key_hash) {
        key_hash -> Bytea,
        user_id -> Uuid,
        state -> Jsonb,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        absolute_expires_at -> Timestamptz,
        id -> Uuid,
        last_seen_at -> Timestamptz,
        client_addr -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    sign_in_hours (hour) {
        hour -> Timestamptz,
        ok -> Int8,
        failed -> Int8,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        public_jwk -> Nullable<Jsonb>,
        private_key -> Nullable<Bytea>,
        created_at -> Timestamptz,
        activates_at -> Timestamptz,
        purpose -> Text,
    }
}

diesel::table! {
    user_roles (user_id, role_name) {
        user_id -> Uuid,
        role_name -> Text,
    }
}

diesel::table! {
    user_totp (user_id) {
        user_id -> Uuid,
        secret_sealed -> Bytea,
        confirmed_at -> Nullable<Timestamptz>,
        last_used_step -> Nullable<Int8>,
        enrol_failures -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        username -> Text,
        email -> Nullable<Text>,
        full_name -> Nullable<Text>,
        password_hash -> Text,
        is_active -> Bool,
        tokens_valid_after -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_login_at -> Nullable<Timestamptz>,
        failed_logins -> Int4,
        lockouts -> Int4,
        locked_until -> Nullable<Timestamptz>,
        check_claims -> Int4,
        claims_expire_at -> Nullable<Timestamptz>,
        username_key -> Nullable<Text>,
        email_verified -> Bool,
    }
}

diesel::table! {
    webauthn_ceremonies (id) {
        id -> Uuid,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        state -> Jsonb,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(authorization_codes -> oauth_clients (client_id));
diesel::joinable!(authorization_codes -> users (user_id));
diesel::joinable!(device_codes -> oauth_clients (client_id));
diesel::joinable!(device_codes -> users (user_id));
diesel::joinable!(email_change_tokens -> users (user_id));
diesel::joinable!(items -> users (owner_id));
diesel::joinable!(mail_outbox -> users (user_id));
diesel::joinable!(oauth_client_secrets -> oauth_clients (client_id));
diesel::joinable!(oauth_consents -> oauth_clients (client_id));
diesel::joinable!(oauth_consents -> users (user_id));
diesel::joinable!(passkeys -> users (user_id));
diesel::joinable!(password_reset_tokens -> users (user_id));
diesel::joinable!(personal_access_tokens -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(refresh_families -> oauth_clients (client_id));
diesel::joinable!(refresh_families -> users (user_id));
diesel::joinable!(refresh_tokens -> refresh_families (family_id));
diesel::joinable!(revoked_access_tokens -> users (user_id));
diesel::joinable!(role_scopes -> roles (role_name));
diesel::joinable!(role_scopes -> scopes (scope_name));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(user_roles -> roles (role_name));
diesel::joinable!(user_roles -> users (user_id));
diesel::joinable!(user_totp -> users (user_id));
diesel::joinable!(webauthn_ceremonies -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    account_counts,
    auth_events,
    authorization_codes,
    device_codes,
    email_change_tokens,
    event_hours,
    items,
    login_throttle,
    mail_outbox,
    oauth_client_secrets,
    oauth_clients,
    oauth_consents,
    passkeys,
    password_reset_tokens,
    personal_access_tokens,
    recovery_codes,
    refresh_families,
    refresh_tokens,
    revoked_access_tokens,
    role_scopes,
    roles,
    scopes,
    sessions,
    sign_in_hours,
    signing_keys,
    user_roles,
    user_totp,
    users,
    webauthn_ceremonies,
);
