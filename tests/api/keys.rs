//! Signing keys other services can verify: the JWKS, algorithms and their confusion, rotation across
//! instances, a master secret that cannot read the keys, and introspection (RFC 7662).

use base64::Engine as _;
use chrono::Utc;
use diesel::RunQueryDsl;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::Jwk};
use reqwest::header;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{JWT_SECRET, PAIR_ISSUER, TestApp, TestUser, assert_bearer_error, spawn_app_with, spawn_pair};

const ME: &str = "/api/users/me";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token", error_description="*"#;

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn jwks(app: &TestApp) -> (reqwest::header::HeaderMap, Value) {
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.json().await.unwrap())
}

/// RFC 7638, computed here from the JWK's members (not by the server's own code).
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "OKP" => {
            format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, jwk["crv"].as_str().unwrap(), jwk["x"].as_str().unwrap())
        }
        other => panic!("unexpected kty {other}"),
    };
    b64(&sha2::Sha256::digest(canonical.as_bytes()))
}

/// Verifies `token` the way another service would: with the published JWKS only.
fn verify_with_jwks(set: &Value, token: &str, issuer: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = jwt_part(token, 0)["kid"].as_str().unwrap().to_owned();
    let jwk_json =
        set["keys"].as_array().unwrap().iter().find(|key| key["kid"] == kid.as_str()).expect("the kid is published");
    let jwk: Jwk = serde_json::from_value(jwk_json.clone()).unwrap();
    let alg: Algorithm = jwk_json["alg"].as_str().unwrap().parse().unwrap();
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk)?, &validation).map(|data| data.claims)
}

/// The current signing key's PKCS#8 private key, decrypted with the test secret (only a holder of the
/// master secret and the database can do this).
pub(crate) fn private_key_of(app: &TestApp, kid: &str) -> Vec<u8> {
    #[derive(diesel::QueryableByName)]
    struct Sealed {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        private_key: Vec<u8>,
    }
    let sealed: Sealed = diesel::sql_query("SELECT private_key FROM signing_keys WHERE kid = $1")
        .bind::<diesel::sql_types::Text, _>(kid)
        .get_result(&mut app.db.conn())
        .unwrap();
    let cipher = gatehouse::auth::keys::KeyCipher::new(&JWT_SECRET.into());
    cipher.open(kid, &sealed.private_key).unwrap().to_vec()
}

pub(crate) fn execute(app: &TestApp, sql: &str) {
    diesel::sql_query(sql).execute(&mut app.db.conn()).unwrap();
}

/// Makes every instance of `apps` read the keys again now (they would within a minute).
pub(crate) fn reload(apps: &[&TestApp]) {
    for app in apps {
        app.state.grants.keys.reload(&mut app.db.conn(), Utc::now()).unwrap();
    }
}

#[tokio::test]
async fn the_jwks_publishes_the_es256_key_that_signs_tokens_and_nothing_private() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("profile")).await;
    let (headers, set) = jwks(&app).await;
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{set}");
    let key = &keys[0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"), Some("sig"))
    );
    for private in ["d", "k", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none(), "{private} must never be published: {key}");
    }
    assert_eq!(key["kid"], thumbprint(key), "the kid is the RFC 7638 thumbprint");
    let header = jwt_part(&token, 0);
    assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("ES256"), key["kid"].as_str()));
    let claims = verify_with_jwks(&set, &token, &app.address).unwrap();
    assert_eq!(claims["sub"], alice.id.to_string());
}

#[tokio::test]
async fn eddsa_keys_are_published_as_okp_and_hs256_publishes_nothing() {
    let app = spawn_app_with(&[("GATEHOUSE_SIGNING_ALG", "EdDSA")]).await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    let (_, set) = jwks(&app).await;
    let key = &set["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(key["kid"], thumbprint(key));
    assert_eq!(jwt_part(&token, 0)["alg"], "EdDSA");
    verify_with_jwks(&set, &token, &app.address).unwrap();
    assert_eq!(app.get(ME, Some(&token)).await.status(), 200);

    let hs = spawn_app_with(&[("GATEHOUSE_SIGNING_ALG", "HS256")]).await;
    let alice = hs.alice();
    let token = hs.access_token(&alice, None).await;
    assert_eq!(jwks(&hs).await.1, json!({"keys": []}), "a symmetric key is never published");
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"].as_str().unwrap(), gatehouse::auth::keys::hs256_kid(&JWT_SECRET.into()).unwrap());
    assert_eq!(hs.get(ME, Some(&token)).await.status(), 200);
}

/// A token like the server's, signed with its own current key, with `extra` merged into the header.
fn forged_with_real_key(app: &TestApp, token: &str, header_extra: Value) -> String {
    let header = jwt_part(token, 0);
    let kid = header["kid"].as_str().unwrap();
    let mut merged = header.as_object().unwrap().clone();
    merged.extend(header_extra.as_object().unwrap().clone());
    let signing_input =
        format!("{}.{}", b64(Value::Object(merged).to_string().as_bytes()), token.split('.').nth(1).unwrap());
    let key = EncodingKey::from_ec_der(&private_key_of(app, kid));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn algorithm_confusion_and_self_chosen_keys_are_refused() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("profile")).await;
    let (_, set) = jwks(&app).await;
    let public = &set["keys"][0];
    let kid = public["kid"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();

    // The control: the server's own key, re-signed by the test with no extra header, is accepted.
    assert_eq!(app.get(ME, Some(&forged_with_real_key(&app, &token, json!({})))).await.status(), 200);

    // HS256 "signed" with the public key (its JWK, its x, its x‖y) as the HMAC secret.
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(public["x"].as_str().unwrap()).unwrap();
    let y = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(public["y"].as_str().unwrap()).unwrap();
    for secret in [public.to_string().into_bytes(), x.clone(), [x, y].concat()] {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.to_owned());
        let claims = jwt_part(&token, 1);
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert_bearer_error(app.get(ME, Some(&forged)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    }
    // alg none, with and without our kid.
    for header in [json!({"alg": "none", "typ": "at+jwt", "kid": kid}), json!({"alg": "none", "typ": "at+jwt"})] {
        let forged = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        assert_bearer_error(app.get(ME, Some(&forged)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    }
    // A kid that is not ours, and a key of the attacker's own carried in the header or by URL, even
    // with a signature that our own key made.
    let not_ours = forged_with_real_key(&app, &token, json!({"kid": "someone-elses-key"}));
    assert_bearer_error(app.get(ME, Some(&not_ours)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    for extra in [
        json!({"jku": "https://attacker.example/jwks.json"}),
        json!({"jwk": public}),
        json!({"x5u": "https://attacker.example/cert.pem"}),
        json!({"crit": ["exp"]}),
    ] {
        let forged = forged_with_real_key(&app, &token, extra.clone());
        assert_bearer_error(app.get(ME, Some(&forged)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    }
}

#[tokio::test]
async fn a_cached_signature_does_not_keep_a_revoked_token_alive() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("profile")).await;
    for _ in 0..3 {
        assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    }
    assert_eq!(app.revoke(&token, None).await.status(), 200);
    assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

#[tokio::test]
async fn after_switching_from_hs256_to_es256_old_tokens_work_until_they_expire_and_no_longer() {
    // One issuer for both lives of the server (it defaults to the address, which a restart changes).
    const ISSUER: (&str, &str) = ("GATEHOUSE_ISSUER", "http://gatehouse.test");
    let hs = spawn_app_with(&[("GATEHOUSE_SIGNING_ALG", "HS256"), ISSUER]).await;
    let alice = hs.alice();
    let old = hs.access_token(&alice, Some("profile")).await;
    let db = std::sync::Arc::clone(&hs.db);
    drop(hs);

    // The same database, restarted with the default algorithm: its key is published first (a
    // verifier may have cached the empty set HS256 served), HS256 signs until the delay has passed.
    let es = crate::helpers::spawn_instance_on(db, &[ISSUER]).await;
    let (_, set) = jwks(&es).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1, "{set}");
    let waiting = es.access_token(&alice, Some("profile")).await;
    assert_eq!(jwt_part(&waiting, 0)["alg"], "HS256", "not before the publication delay");
    execute(&es, "UPDATE signing_keys SET activates_at = now() WHERE alg = 'ES256'");
    reload(&[&es]);
    let new = es.access_token(&alice, Some("profile")).await;
    assert_eq!(jwt_part(&new, 0)["alg"], "ES256", "the new algorithm signs after it");
    assert_eq!(jwt_part(&new, 0)["kid"], set["keys"][0]["kid"]);
    assert_eq!(es.get(ME, Some(&old)).await.status(), 200, "the previous algorithm's token is still good");
    assert_eq!(es.get(ME, Some(&new)).await.status(), 200);

    // One access-token lifetime (plus the margin) after the switch, the HS256 key is gone.
    execute(&es, "UPDATE signing_keys SET activates_at = activates_at - interval '25 minutes'");
    reload(&[&es]);
    assert_bearer_error(es.get(ME, Some(&old)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;

    // And back to the same HS256 secret while its old row is still stored: it signs again at once.
    let db = std::sync::Arc::clone(&es.db);
    drop(es);
    let hs_again = crate::helpers::spawn_instance_on(db, &[("GATEHOUSE_SIGNING_ALG", "HS256"), ISSUER]).await;
    let newest = hs_again.access_token(&alice, Some("profile")).await;
    assert_eq!(jwt_part(&newest, 0)["alg"], "HS256", "the secret switched back to signs at once");
    assert_eq!(hs_again.get(ME, Some(&newest)).await.status(), 200);
    assert_eq!(hs_again.get(ME, Some(&new)).await.status(), 200, "the ES256 token lives out its time");
}

#[tokio::test]
async fn a_rotation_on_one_instance_is_published_everywhere_before_it_signs_and_old_tokens_live_out_their_time() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let before = a.access_token(&alice, Some("profile")).await;
    let old_kid = jwt_part(&before, 0)["kid"].as_str().unwrap().to_owned();

    // `gatehouse keys rotate` on instance a's machine.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", &a.db.url)
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("published ES256 key "));
    reload(&[&a, &b]);
    let listing = keys_list(&a);
    assert!(line_of(&listing, &old_kid).contains(" current "), "{listing}");
    assert_eq!(listing.lines().filter(|line| line.contains(" next ")).count(), 1, "{listing}");

    // Published by both instances, not yet signing.
    let published: Vec<String> =
        jwks(&b).await.1["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(published.len(), 2);
    let new_kid = published.iter().find(|kid| **kid != old_kid).unwrap().clone();
    assert_eq!(jwt_part(&b.access_token(&alice, None).await, 0)["kid"], old_kid.as_str());

    // The publication delay passes: the new key signs on both instances; the old key's tokens still work.
    execute(&a, &format!("UPDATE signing_keys SET activates_at = now() WHERE kid = '{new_kid}'"));
    reload(&[&a, &b]);
    for app in [&a, &b] {
        let after = app.access_token(&alice, Some("profile")).await;
        assert_eq!(jwt_part(&after, 0)["kid"], new_kid.as_str());
        let response = app.get(ME, Some(&before)).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
    assert_eq!(jwks(&a).await.1["keys"].as_array().unwrap().len(), 2, "the retired key stays published");
    let listing = keys_list(&a);
    assert!(line_of(&listing, &old_kid).contains(" retired "), "{listing}");
    assert!(line_of(&listing, &new_kid).contains(" current "), "{listing}");

    // Once its tokens have expired, the retired key leaves the set and its tokens are refused.
    execute(&a, "UPDATE signing_keys SET activates_at = activates_at - interval '25 minutes'");
    reload(&[&a, &b]);
    let (_, set) = jwks(&b).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    assert_eq!(set["keys"][0]["kid"], new_kid.as_str());
    assert_bearer_error(b.get(ME, Some(&before)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;

    // `keys list` shows the set: the expired key has left it.
    let listing = keys_list(&a);
    assert!(line_of(&listing, &new_kid).contains(" ES256  access "), "{listing}");
    assert!(!listing.contains(&old_kid), "{listing}");
}

/// `gatehouse keys list` on `app`'s database.
fn keys_list(app: &TestApp) -> String {
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["keys", "list"])
        .env("DATABASE_URL", &app.db.url)
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    String::from_utf8_lossy(&list.stdout).into_owned()
}

fn line_of<'a>(listing: &'a str, kid: &str) -> &'a str {
    listing.lines().find(|line| line.starts_with(kid)).unwrap_or_else(|| panic!("no {kid} in {listing}"))
}

#[tokio::test]
async fn a_key_that_signs_at_once_on_one_instance_is_accepted_at_once_on_the_others() {
    // As when an HS256 secret is switched back to (its key signs at once): instance a makes and
    // loads a key that signs now; b and c have not reloaded since, and must not refuse its
    // tokens, on /api or at /introspect.
    let (a, b) = spawn_pair(&[]).await;
    let c = crate::helpers::spawn_instance_on(std::sync::Arc::clone(&a.db), &[("GATEHOUSE_ISSUER", PAIR_ISSUER)]).await;
    let d = crate::helpers::spawn_instance_on(std::sync::Arc::clone(&a.db), &[("GATEHOUSE_ISSUER", PAIR_ISSUER)]).await;
    let alice = a.alice();
    let caller = b.access_token(&service_account(&b), Some("tokens:introspect")).await;
    let made = a.state.grants.keys.rotate_now(&mut a.db.conn(), Utc::now()).unwrap().unwrap();
    execute(&a, &format!("UPDATE signing_keys SET activates_at = now() WHERE kid = '{}'", made.kid));
    reload(&[&a]);
    let token = a.access_token(&alice, Some("profile")).await;
    assert_eq!(jwt_part(&token, 0)["kid"], made.kid.as_str());

    let introspected: Value = introspect(&b, Some(&caller), &[("token", &token)]).await.json().await.unwrap();
    assert_eq!(introspected["active"], true, "b loads the key the token names");
    assert_eq!(c.get(ME, Some(&token)).await.status(), 200, "so does c");
    // A fourth instance that has not loaded the key revokes its token rather than ignoring it.
    let revoked = a.access_token(&alice, Some("profile")).await;
    assert_eq!(d.revoke(&revoked, None).await.status(), 200);
    assert_bearer_error(a.get(ME, Some(&revoked)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    // A made-up kid is refused (and costs at most one reload a second).
    let forged = forged_with_real_key(&a, &token, json!({"kid": "no-such-key"}));
    assert_bearer_error(c.get(ME, Some(&forged)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

#[tokio::test]
async fn no_private_key_material_is_stored_in_plaintext_or_published() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    let kid = jwt_part(&token, 0)["kid"].as_str().unwrap().to_owned();
    let der = private_key_of(&app, &kid);
    // The private scalar is the 32 bytes after the PKCS#8/SEC1 prefix of a P-256 key.
    let scalar = p256::ecdsa::SigningKey::from_pkcs8_der(&der).unwrap().to_bytes().to_vec();
    #[derive(diesel::QueryableByName)]
    struct Dump {
        #[diesel(sql_type = diesel::sql_types::Text)]
        dump: String,
    }
    let dump: Dump = diesel::sql_query(
        "SELECT string_agg(kid || alg || coalesce(public_jwk::text, '') || coalesce(encode(private_key, 'hex'), ''), '|') AS dump FROM signing_keys",
    )
    .get_result(&mut app.db.conn())
    .unwrap();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(!dump.dump.contains(&hex(&scalar)) && !dump.dump.contains(&hex(&der)), "plaintext key in the database");
    assert!(!dump.dump.contains(&b64(&scalar)));
    let (_, set) = jwks(&app).await;
    assert!(!set.to_string().contains(&b64(&scalar)));
    let metadata = app.get("/.well-known/oauth-authorization-server", None).await.text().await.unwrap();
    assert!(!metadata.contains(&b64(&scalar)));
}

use p256::pkcs8::DecodePrivateKey as _;

#[tokio::test]
async fn a_master_secret_that_cannot_decrypt_the_keys_stops_serve_with_one_line_and_dev_replaces_them() {
    let app = crate::helpers::spawn_app().await;
    let serve = |secret: Option<&str>, dev: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command.arg("serve").args(["--bind", "127.0.0.1:0"]).env("DATABASE_URL", &app.db.url).env_remove("RUST_LOG");
        if dev {
            command.arg("--dev");
        }
        match secret {
            Some(secret) => command.env("GATEHOUSE_JWT_SECRET", secret),
            None => command.env_remove("GATEHOUSE_JWT_SECRET"),
        };
        command
    };
    let output = serve(Some("a-different-secret-that-is-long-enough-0123456789"), false).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot decrypt the signing key") && stderr.contains("gatehouse keys re-encrypt"),
        "{stderr}"
    );

    // --dev with a throwaway secret replaces the keys it cannot read, and says so: in a database of
    // its own (marked as --dev's), never in another one.
    execute(&app, &format!("COMMENT ON DATABASE {} IS '{}'", app.db.name, gatehouse::db::dev::MARK));
    let mut dev =
        serve(None, true).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = dev.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("replaced them with new ones"))
    });
    let line = tokio::task::spawn_blocking(move || said.join().unwrap()).await.unwrap();
    let _ = dev.kill();
    let _ = dev.wait();
    assert!(line.is_some(), "--dev says it replaced the keys");
}

#[tokio::test]
async fn keys_re_encrypted_under_a_new_secret_serve_with_it() {
    let app = crate::helpers::spawn_app().await;
    let new_secret = "the-new-master-secret-that-is-long-enough-012345";
    let cli = |args: &[&str], secret: &str, old: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command.args(args).env("DATABASE_URL", &app.db.url).env("GATEHOUSE_JWT_SECRET", secret);
        if let Some(old) = old {
            command.env("GATEHOUSE_OLD_JWT_SECRET", old);
        }
        command.output().unwrap()
    };
    // An authenticator app's secret, sealed under the old secret, moves with the keys.
    use gatehouse::auth::second_factor::{TotpSealer, totp};
    let alice = app.alice();
    let app_secret = totp::new_secret();
    let sealed = TotpSealer::new(&JWT_SECRET.to_owned().into()).seal(alice.id, &app_secret).unwrap();
    assert!(gatehouse::db::second_factors::begin_enrolment(&mut app.db.conn(), alice.id, &sealed).unwrap());
    let listed = |secret: &str| String::from_utf8_lossy(&cli(&["keys", "list"], secret, None).stdout).into_owned();
    assert!(listed(new_secret).contains(" cannot-decrypt "), "not readable yet: {}", listed(new_secret));
    let reencrypted = cli(&["keys", "re-encrypt"], new_secret, Some(JWT_SECRET));
    assert!(reencrypted.status.success(), "{}", String::from_utf8_lossy(&reencrypted.stderr));
    assert_eq!(
        String::from_utf8_lossy(&reencrypted.stdout),
        "re-encrypted 1 signing key(s) and 1 authenticator-app secret(s) under the current GATEHOUSE_JWT_SECRET\n"
    );
    let stored = gatehouse::db::second_factors::all_sealed(&mut app.db.conn()).unwrap();
    let opened = TotpSealer::new(&new_secret.to_owned().into()).open(alice.id, &stored[0].1).unwrap();
    assert_eq!(opened.as_slice(), app_secret.as_slice());
    assert!(listed(new_secret).contains(" decrypts "), "{}", listed(new_secret));
    assert!(listed(JWT_SECRET).contains(" cannot-decrypt "), "the old secret no longer reads them");
}

// --- Introspection (RFC 7662) ---

fn service_account(app: &TestApp) -> TestUser {
    app.create_user("billing-service", "billing-service-password", &["service", "user"])
}

async fn introspect(app: &TestApp, caller: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.post(app.url("/introspect")).form(form);
    if let Some(caller) = caller {
        request = request.bearer_auth(caller);
    }
    request.send().await.unwrap()
}

async fn inactive(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"active": false}), "nothing more than that");
}

#[tokio::test]
async fn a_service_introspects_live_tokens_and_learns_nothing_of_dead_ones() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let service = service_account(&app);
    let caller = app.access_token(&service, Some("tokens:introspect")).await;
    let tokens = app.login(&alice, Some("profile items:read")).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let response = introspect(&app, Some(&caller), &[("token", access)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    let claims = jwt_part(access, 1);
    assert_eq!(body["active"], true);
    assert_eq!((body["token_type"].as_str(), body["token_use"].as_str()), (Some("bearer"), Some("access_token")));
    assert_eq!(body["scope"], "items:read profile");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["sub"], alice.id.to_string());
    assert_eq!((&body["exp"], &body["iat"], &body["iss"]), (&claims["exp"], &claims["iat"], &claims["iss"]));

    let body: Value = introspect(&app, Some(&caller), &[("token", refresh), ("token_type_hint", "refresh_token")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((body["active"].as_bool(), body["token_use"].as_str()), (Some(true), Some("refresh_token")));
    assert_eq!(body["scope"], "items:read profile");
    assert_eq!(body["username"], "alice");

    // Dead, malformed and foreign tokens: `{"active": false}` and nothing else.
    inactive(introspect(&app, Some(&caller), &[("token", "not-a-token")]).await).await;
    let foreign = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"someone else's secret, long enough 0123").unwrap(),
    )
    .unwrap();
    inactive(introspect(&app, Some(&caller), &[("token", &foreign)]).await).await;
    assert_eq!(app.revoke(access, None).await.status(), 200);
    inactive(introspect(&app, Some(&caller), &[("token", access)]).await).await;
    assert_eq!(app.refresh(refresh, None).await.status(), 200, "rotated: the presented token is used up");
    inactive(introspect(&app, Some(&caller), &[("token", refresh), ("token_type_hint", "refresh_token")]).await).await;
    // A deactivated user's tokens are dead too.
    let bob = app.create_user("bob", "bob-password", &["user"]);
    let bobs = app.access_token(&bob, None).await;
    let deactivate = gatehouse::db::users::AccountChange { roles: None, active: Some(false) };
    let event = gatehouse::db::auth_events::NewEvent::new(
        gatehouse::domain::EventKind::Deactivated,
        gatehouse::domain::Channel::Cli,
    );
    gatehouse::db::users::change(&mut app.db.conn(), "bob", &deactivate, &event, None).unwrap();
    inactive(introspect(&app, Some(&caller), &[("token", &bobs)]).await).await;
}

#[tokio::test]
async fn introspection_needs_a_caller_token_with_the_introspect_scope() {
    let app = crate::helpers::spawn_app().await;
    let alice = app.alice();
    let admin = app.admin();
    let access = app.access_token(&alice, None).await;

    let response = introspect(&app, None, &[("token", &access)]).await;
    assert_bearer_error(response, 401, Some("Bearer"), "unauthorized").await;
    let response = introspect(&app, Some("garbage.token.here"), &[("token", &access)]).await;
    assert_bearer_error(response, 401, Some(INVALID_TOKEN), "invalid_token").await;
    // An admin's token has every admin scope, but not this one.
    let admins = app.access_token(&admin, None).await;
    let response = introspect(&app, Some(&admins), &[("token", &access)]).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="tokens:introspect""#),
        "insufficient_scope",
    )
    .await;
    // A service token without the scope requested is refused the same way.
    let service = service_account(&app);
    let narrow = app.access_token(&service, Some("profile")).await;
    assert_eq!(introspect(&app, Some(&narrow), &[("token", &access)]).await.status(), 403);
    // A well-authenticated request without a token is a bad request.
    let caller = app.access_token(&service, Some("tokens:introspect")).await;
    let response = introspect(&app, Some(&caller), &[("token_type_hint", "access_token")]).await;
    assert_bearer_error(response, 400, None, "invalid_request").await;
    // The role is checked at every call: a service whose role is taken away stops at once,
    // though its token still carries the scope.
    assert_eq!(introspect(&app, Some(&caller), &[("token", &access)]).await.status(), 200);
    execute(&app, "DELETE FROM user_roles WHERE role_name = 'service'");
    let response = introspect(&app, Some(&caller), &[("token", &access)]).await;
    assert_bearer_error(response, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
}

#[tokio::test]
async fn instances_starting_together_make_one_key_and_racing_rotations_make_one_successor() {
    use gatehouse::auth::keys::{KeyPolicy, KeyRing, Undecryptable};
    use gatehouse::config::SigningAlgorithm;
    let db = crate::helpers::TestDb::create();
    let count = |db: &crate::helpers::TestDb| {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query("SELECT count(*) AS n FROM signing_keys").get_result::<Count>(&mut db.conn()).unwrap().n
    };
    let policy = KeyPolicy {
        alg: SigningAlgorithm::Es256,
        rotation: Some(chrono::Duration::days(30)),
        access_token_ttl: chrono::Duration::minutes(15),
    };
    let racing = |work: fn(&str, KeyPolicy)| {
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (url, start) = (db.url.clone(), std::sync::Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    work(&url, policy);
                })
            })
            .collect();
        threads.into_iter().for_each(|thread| thread.join().unwrap());
    };
    fn load(url: &str, policy: KeyPolicy) -> KeyRing {
        use diesel::Connection as _;
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        KeyRing::load(&mut conn, policy, "http://gatehouse.test", &JWT_SECRET.into(), Undecryptable::Refuse, Utc::now())
            .unwrap()
    }
    // Six instances start at once on an empty database: one key, and every one of them signs with it.
    racing(|url, policy| {
        let ring = load(url, policy);
        assert_eq!(ring.jwks(Utc::now()).keys.len(), 1, "loaded after the first key existed");
    });
    assert_eq!(count(&db), 1);
    // Six operators run `keys rotate` at once: one successor.
    racing(|url, policy| {
        use diesel::Connection as _;
        let ring = load(url, policy);
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        ring.rotate_now(&mut conn, Utc::now()).unwrap();
    });
    assert_eq!(count(&db), 2);
}

// --- Nothing is committed unless the answer that reports it can be sent ---

#[tokio::test]
async fn a_database_upgraded_from_before_keys_had_ids_signs_from_the_first_request() {
    // What a round-1 deployment's migration leaves: one legacy HS256 row, and users.
    let db = crate::helpers::TestDb::create();
    {
        let mut conn = db.conn();
        diesel::sql_query("DELETE FROM signing_keys").execute(&mut conn).unwrap();
        diesel::sql_query(
            "INSERT INTO signing_keys (kid, alg, activates_at) VALUES ('hs256-legacy', 'HS256', now() - interval '1 day')",
        )
        .execute(&mut conn)
        .unwrap();
    }
    let app = crate::helpers::spawn_app_on(db, &[]).await;
    let alice = app.alice();
    // The ES256 key waits out its publication delay; the secret signs meanwhile.
    let tokens = app.login(&alice, Some("profile")).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(jwt_part(access, 0)["alg"], "HS256");
    assert_eq!(app.get(ME, Some(access)).await.status(), 200);
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(refreshed.status(), 200);
    let listing = keys_list(&app);
    assert_eq!(listing.lines().filter(|line| line.contains(" ES256  access   next ")).count(), 1, "{listing}");
    assert_eq!(listing.lines().filter(|line| line.contains(" HS256  access   current ")).count(), 1, "{listing}");
}

#[tokio::test]
async fn a_refresh_that_cannot_be_signed_changes_nothing_and_can_be_retried() {
    let app = spawn_app_with(&[]).await;
    let alice = app.alice();
    let tokens = app.login(&alice, None).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let families_before = app.events().len();
    // No key can sign on this instance (as with a key it cannot use).
    app.state.grants.keys.unload();
    let failed = app.refresh(refresh, None).await;
    assert_eq!(failed.status(), 500);
    let failed_login =
        app.post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password")]).await;
    assert_eq!(failed_login.status(), 500);
    // Nothing was stored: no rotation, no new family, no event.
    assert_eq!(app.events().len(), families_before, "{:?}", app.event_kinds());
    assert_eq!(
        scalar_count(&app, "SELECT count(*) AS n FROM refresh_tokens WHERE used_at IS NOT NULL"),
        0,
        "the presented token is still unused"
    );
    assert_eq!(scalar_count(&app, "SELECT count(*) AS n FROM refresh_families"), 1);
    // The keys come back: the client's retry with the same token works, and is not "reuse".
    reload(&[&app]);
    let retried = app.refresh(refresh, None).await;
    assert_eq!(retried.status(), 200, "{:?}", retried.text().await);
    assert!(!app.event_kinds().contains(&"reuse_detected".to_owned()));
}

#[test]
fn listing_the_keys_changes_nothing() {
    // A database with no keys at all, and a CLI whose environment asks for another algorithm:
    // listing makes no key.
    let db = crate::helpers::TestDb::create();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["keys", "list"])
        .env("DATABASE_URL", &db.url)
        .env("GATEHOUSE_SIGNING_ALG", "EdDSA")
        .env_remove("GATEHOUSE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut conn = db.conn();
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let keys: Count = diesel::sql_query("SELECT count(*) AS n FROM signing_keys").get_result(&mut conn).unwrap();
    assert_eq!(keys.n, 0);
}

fn scalar_count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Count>(&mut app.db.conn()).unwrap().n
}

#[tokio::test]
async fn every_instance_reloads_the_keys_by_itself_at_its_interval() {
    // b is never told to reload: its own timer picks up the key a published.
    let (a, b) = spawn_pair(&[("GATEHOUSE_KEY_RELOAD_EVERY", "1s")]).await;
    let made = a.state.grants.keys.rotate_now(&mut a.db.conn(), Utc::now()).unwrap().unwrap();
    let started = std::time::Instant::now();
    loop {
        let (_, set) = jwks(&b).await;
        if set["keys"].as_array().unwrap().iter().any(|key| key["kid"] == made.kid.as_str()) {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "b never published the new key: {set}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
