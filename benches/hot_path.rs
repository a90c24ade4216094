//! What one `/api/users/me` request costs in the parts this service controls, measured without the
//! noise of a shared machine's network and scheduler (`scripts/bench` measures the whole): the
//! metrics a request records, and a token's signature check against a cached one. Also what a
//! sign-in's second step adds in CPU (the target: under 1 ms).
//!
//! `cargo bench --bench hot_path`

// A benchmark may stop on what it did not expect, like a test.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::auth::keys;
use gatehouse::config::SigningAlgorithm;
use gatehouse::metrics::{Metrics, RequestLabels, RouteLabels};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

/// What `routes::metrics::record` does per request: two labelled series and a histogram, with the
/// route pattern copied into the labels (the method label is one of a fixed set).
fn metrics_per_request(c: &mut Criterion) {
    let metrics = Metrics::new();
    c.bench_function("metrics recorded for one request", |b| {
        b.iter(|| {
            let route = black_box("/api/users/me").to_owned();
            let method: &'static str = black_box("GET");
            metrics.http_request_duration.get_or_create(&RouteLabels { route: route.clone() }).observe(0.000_4);
            metrics.http_requests.get_or_create(&RequestLabels { route, method, status: 200 }).inc();
        })
    });
}

fn claims() -> serde_json::Value {
    serde_json::json!({"iss": "http://gatehouse.bench", "aud": "http://gatehouse.bench", "sub": uuid::Uuid::nil(),
        "exp": 4_000_000_000_i64, "iat": 1_700_000_000, "nbf": 1_700_000_000, "jti": uuid::Uuid::nil(),
        "scope": "profile", "preferred_username": "bench", "roles": ["user"]})
}

/// The signature checks a token's first request costs, against the cache lookup its later requests cost.
fn signature_checks(c: &mut Criterion) {
    let key = keys::generate(SigningAlgorithm::Es256).expect("an ES256 key");
    let encoding = EncodingKey::from_ec_der(&key.private_der);
    let decoding = DecodingKey::from_jwk(&key.public_jwk).expect("its public key");
    let es256 = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &encoding).expect("a token");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["http://gatehouse.bench"]);
    c.bench_function("ES256 signature check (a token's first request)", |b| {
        b.iter(|| jsonwebtoken::decode::<serde_json::Value>(black_box(&es256), &decoding, &validation).expect("valid"))
    });

    // A forged token: a known key's header and real claims, but a signature that is random bytes of
    // the right length. Refusing it costs one failed verification: the price of a forgery flood.
    let (signing_input, _) = es256.rsplit_once('.').expect("three parts");
    let forged_signature = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect::<Vec<u8>>(),
    );
    let forged = format!("{signing_input}.{forged_signature}");
    c.bench_function("ES256 check of a forged token (refused)", |b| {
        b.iter(|| {
            let refused = jsonwebtoken::decode::<serde_json::Value>(black_box(&forged), &decoding, &validation);
            assert!(refused.is_err());
        })
    });

    let secret = b"bench-jwt-secret-that-is-long-enough-0123456789";
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(secret).expect("a key"),
    )
    .expect("a token");
    let hs_decoding = DecodingKey::from_secret(secret).expect("a key");
    let mut hs_validation = Validation::new(Algorithm::HS256);
    hs_validation.set_audience(&["http://gatehouse.bench"]);
    c.bench_function("HS256 signature check", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&hs256), &hs_decoding, &hs_validation).expect("valid")
        })
    });

    // The cache of verified tokens is a map keyed by the whole token (SipHash, full comparison).
    let cache: std::collections::HashMap<Box<str>, u32> = (0..1000)
        .map(|i| (format!("{es256}{i}").into_boxed_str(), i))
        .chain(std::iter::once((es256.clone().into_boxed_str(), 1000)))
        .collect();
    c.bench_function("verified-token cache hit (later requests)", |b| b.iter(|| cache.get(black_box(es256.as_str()))));
}

/// What a second step adds to a sign-in's CPU, beyond the password's bcrypt: opening the sealed app
/// secret and judging the code against three time steps (a recovery code: one SHA-256). The database
/// write that spends the step is one conditional UPDATE, measured by `scripts/bench`, not here.
fn second_factor(c: &mut Criterion) {
    use gatehouse::auth::second_factor::{StoredApp, TotpSealer, judge_code, recovery, totp};
    let sealer = TotpSealer::new(&"bench-jwt-secret-that-is-long-enough-0123456789".to_owned().into());
    let user = uuid::Uuid::now_v7();
    let secret = totp::new_secret();
    let sealed = sealer.seal(user, &secret).expect("sealed");
    let now = chrono::Utc::now();
    let code = totp::code_at(&secret, u64::try_from(now.timestamp()).expect("after 1970")).expect("a code");
    c.bench_function("second step: open the app secret and judge a TOTP code", |b| {
        b.iter(|| {
            let app = StoredApp { secret: sealer.open(user, black_box(&sealed)).expect("opens"), last_used_step: None };
            judge_code(user, Some(&app), Some(black_box(&code)), now)
        })
    });
    let recovery_code = recovery::generate().remove(0);
    c.bench_function("second step: judge a recovery code", |b| {
        b.iter(|| judge_code(user, None, Some(black_box(&recovery_code)), now))
    });
}

criterion_group!(hot_path, metrics_per_request, signature_checks, second_factor);
criterion_main!(hot_path);
