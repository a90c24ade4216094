//! Settings from the environment (and an optional `.env` file, loaded by `main`).
//!
//! Every variable of the contract's configuration table is read here and nowhere else, so a typo in
//! a value stops the process with one line naming the variable instead of surfacing later.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// bcrypt accepts costs 4..=31; anything above 16 would make a single login take minutes.
const BCRYPT_COST_RANGE: std::ops::RangeInclusive<u32> = 4..=16;
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "GATEHOUSE_JWT_SECRET is not set: set it to at least {MIN_SECRET_BYTES} random bytes, or run `gatehouse serve --dev` for an ephemeral one"
    )]
    MissingJwtSecret,
}

/// The algorithm access tokens are signed with (`GATEHOUSE_SIGNING_ALG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256: asymmetric, published in the JWKS. The default.
    Es256,
    /// Ed25519: asymmetric, published in the JWKS.
    EdDsa,
    /// HMAC-SHA256 with `GATEHOUSE_JWT_SECRET`: only holders of the secret can verify; nothing is published.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys): ID tokens only, where OpenID Connect makes it
    /// the default every relying party supports; access tokens keep the smaller, faster keys above.
    Rs256,
}

impl SigningAlgorithm {
    /// The choices for access tokens (`GATEHOUSE_SIGNING_ALG`).
    pub const ALL: [SigningAlgorithm; 3] = [Self::Es256, Self::EdDsa, Self::Hs256];
    /// Every algorithm a stored key may have.
    pub const STORED: [SigningAlgorithm; 4] = [Self::Es256, Self::EdDsa, Self::Hs256, Self::Rs256];

    /// The JOSE name (RFC 7518, RFC 8037), as tokens and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
        }
    }

    /// An access-token algorithm, as a setting names it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// A stored key's algorithm (exactly as written).
    pub fn parse_stored(text: &str) -> Option<Self> {
        Self::STORED.into_iter().find(|alg| alg.as_str() == text)
    }
}

/// `DATABASE_URL` when unset: the local socket, database `gatehouse`.
const DEFAULT_DATABASE_URL: &str = "postgres:///gatehouse";

#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: SecretString,
    pub bind: SocketAddr,
    /// Explicit `GATEHOUSE_ISSUER`; when absent the issuer follows the address actually bound.
    pub issuer: Option<String>,
    pub jwt_secret: Option<SecretString>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub bcrypt_cost: u32,
    pub session_key: Option<SecretString>,
    pub strict_grant_type: bool,
    /// `GATEHOUSE_PASSWORD_GRANT` (default on): off, the password grant answers
    /// `unsupported_grant_type` unless a registered client allowed it asks.
    pub password_grant: bool,
    /// `GATEHOUSE_SECOND_FACTOR` (default `optional`): whom a second factor is required of.
    pub second_factor: SecondFactorPolicy,
    /// `GATEHOUSE_WEBAUTHN_RP_ID` and `GATEHOUSE_WEBAUTHN_ORIGIN`: the passkeys' relying party, when
    /// it is not the issuer's host and origin.
    pub webauthn_rp_id: Option<String>,
    pub webauthn_origin: Option<String>,
    /// `GATEHOUSE_SMTP_URL`: where mail goes (`smtp://host:port`, `smtp://user:pass@host:587?tls=starttls`,
    /// `smtps://host:465`). Without it there is no mail feature, except under `--dev`, which prints mails.
    pub smtp_url: Option<SecretString>,
    /// `GATEHOUSE_MAIL_FROM`: the sender of every mail (required with `GATEHOUSE_SMTP_URL`).
    pub mail_from: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Password attempts (`/token`, `/login`) one client address may make per minute; 0 turns it off.
    pub login_rate_per_minute: u32,
    /// A refresh-token family ends this long after the password grant that began it.
    pub refresh_family_max_age: Duration,
    /// Password verifications that may wait for a hashing thread; `None`: about five seconds of work.
    pub hash_queue: Option<usize>,
    pub signing_alg: SigningAlgorithm,
    /// Age at which a new signing key takes over; `None`: no automatic rotation.
    pub key_rotation: Option<Duration>,
    /// Where `GET /metrics` is served; `None`: nowhere. Never the public listener.
    pub metrics_bind: Option<SocketAddr>,
    /// `GATEHOUSE_METRICS_PUBLIC`: the metrics listener may bind an address other than loopback.
    pub metrics_public: bool,
    /// `GATEHOUSE_KEY_RELOAD_EVERY`: how often each instance reads the signing keys again (and
    /// rotates them when due); at most a minute, which the publication delay of new keys assumes.
    pub key_reload_every: Duration,
    /// `GATEHOUSE_PURGE_EVERY`: how often expired tokens, sessions and throttle state are deleted.
    pub purge_every: Duration,
    /// `--dev`: ephemeral secret, cookies without `Secure`, demo users.
    pub dev_mode: bool,
    /// `DATABASE_URL` was set (rather than defaulted): `--dev` then uses it as told.
    pub database_url_given: bool,
}

impl Settings {
    /// Reads the process environment.
    /// Where `serve --dev` keeps its demo data unless `DATABASE_URL` says otherwise: never the
    /// database a real deployment uses by default.
    pub const DEV_DATABASE_URL: &'static str = "postgres:///gatehouse_dev";

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can supply variables without touching the process.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let database_url_given = get("DATABASE_URL").is_some();
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let bind = match get("GATEHOUSE_BIND") {
            Some(value) => parse_bind(&value)?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let issuer = get("GATEHOUSE_ISSUER").map(|value| parse_issuer(&value)).transpose()?;
        let jwt_secret =
            get("GATEHOUSE_JWT_SECRET").map(|value| parse_secret("GATEHOUSE_JWT_SECRET", value)).transpose()?;
        let session_key =
            get("GATEHOUSE_SESSION_KEY").map(|value| parse_secret("GATEHOUSE_SESSION_KEY", value)).transpose()?;
        let access_token_ttl = parse_ttl("GATEHOUSE_ACCESS_TOKEN_TTL", get("GATEHOUSE_ACCESS_TOKEN_TTL"), "15m")?;
        let refresh_token_ttl = parse_ttl("GATEHOUSE_REFRESH_TOKEN_TTL", get("GATEHOUSE_REFRESH_TOKEN_TTL"), "14d")?;
        let refresh_family_max_age =
            parse_ttl("GATEHOUSE_REFRESH_FAMILY_MAX_AGE", get("GATEHOUSE_REFRESH_FAMILY_MAX_AGE"), "90d")?;
        let hash_queue = get("GATEHOUSE_HASH_QUEUE")
            .map(|value| {
                value.trim().parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid("GATEHOUSE_HASH_QUEUE", format!("`{value}` is not a whole number of at least 1"))
                })
            })
            .transpose()?;
        let bcrypt_cost = match get("GATEHOUSE_BCRYPT_COST") {
            Some(value) => parse_bcrypt_cost(&value)?,
            None => bcrypt::DEFAULT_COST,
        };
        let strict_grant_type = match get("GATEHOUSE_STRICT_GRANT_TYPE") {
            Some(value) => parse_bool("GATEHOUSE_STRICT_GRANT_TYPE", &value)?,
            None => false,
        };
        let password_grant = match get("GATEHOUSE_PASSWORD_GRANT") {
            Some(value) => parse_bool("GATEHOUSE_PASSWORD_GRANT", &value)?,
            None => true,
        };
        let second_factor = match get("GATEHOUSE_SECOND_FACTOR") {
            Some(value) => SecondFactorPolicy::parse(&value)
                .ok_or_else(|| invalid("GATEHOUSE_SECOND_FACTOR", "must be optional, admins or everyone"))?,
            None => SecondFactorPolicy::Optional,
        };
        let webauthn_rp_id =
            get("GATEHOUSE_WEBAUTHN_RP_ID").map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        let webauthn_origin = match get("GATEHOUSE_WEBAUTHN_ORIGIN").map(|value| value.trim().to_owned()) {
            Some(origin) if !origin.is_empty() => {
                let url = url::Url::parse(&origin)
                    .map_err(|_| invalid("GATEHOUSE_WEBAUTHN_ORIGIN", format!("`{origin}` is not a URL")))?;
                Some(url.origin().ascii_serialization())
            }
            _ => None,
        };
        let smtp_url = get("GATEHOUSE_SMTP_URL").map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(invalid("GATEHOUSE_SMTP_URL", "must start with smtp:// or smtps://"));
        }
        let mail_from = get("GATEHOUSE_MAIL_FROM").map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        if smtp_url.is_some() && mail_from.is_none() {
            return Err(invalid(
                "GATEHOUSE_MAIL_FROM",
                "is required with GATEHOUSE_SMTP_URL (the sender of every mail)",
            ));
        }
        let smtp_url = smtp_url.map(SecretString::from);
        let trusted_proxies = match get("GATEHOUSE_TRUSTED_PROXIES") {
            Some(value) => parse_proxies(&value)?,
            None => Vec::new(),
        };

        let login_rate_per_minute = match get("GATEHOUSE_LOGIN_RATE_PER_MINUTE") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| invalid("GATEHOUSE_LOGIN_RATE_PER_MINUTE", format!("`{value}` is not a whole number")))?,
            None => 30,
        };
        let signing_alg = match get("GATEHOUSE_SIGNING_ALG") {
            Some(value) => SigningAlgorithm::parse(&value).ok_or_else(|| {
                invalid("GATEHOUSE_SIGNING_ALG", format!("`{value}` is not one of ES256, EdDSA, HS256"))
            })?,
            None => SigningAlgorithm::Es256,
        };
        // `0`, or any zero duration (`0s`, `0d`), turns rotation off.
        let rotation_off = |value: &str| value == "0" || humantime::parse_duration(value).is_ok_and(|d| d.is_zero());
        let key_rotation = match get("GATEHOUSE_KEY_ROTATION").as_deref().map(str::trim) {
            Some(value) if rotation_off(value) => None,
            other => Some(parse_duration("GATEHOUSE_KEY_ROTATION", other.map(str::to_owned), "30d", 60)?),
        };
        let metrics_bind = get("GATEHOUSE_METRICS_BIND")
            .map(|value| {
                value.trim().parse::<SocketAddr>().map_err(|_| {
                    invalid("GATEHOUSE_METRICS_BIND", format!("`{value}` is not an address like 127.0.0.1:9100"))
                })
            })
            .transpose()?;
        let key_reload_every =
            parse_duration("GATEHOUSE_KEY_RELOAD_EVERY", get("GATEHOUSE_KEY_RELOAD_EVERY"), "60s", 1)?;
        if key_reload_every > Duration::from_secs(60) {
            return Err(invalid(
                "GATEHOUSE_KEY_RELOAD_EVERY",
                "must be at most 60s: new keys are published on the assumption that every instance reloads within a minute",
            ));
        }
        let purge_every = parse_duration("GATEHOUSE_PURGE_EVERY", get("GATEHOUSE_PURGE_EVERY"), "1h", 1)?;
        let metrics_public = match get("GATEHOUSE_METRICS_PUBLIC") {
            Some(value) => parse_bool("GATEHOUSE_METRICS_PUBLIC", &value)?,
            None => false,
        };

        Ok(Settings {
            database_url: SecretString::from(database_url),
            bind,
            issuer,
            jwt_secret,
            access_token_ttl,
            refresh_token_ttl,
            bcrypt_cost,
            session_key,
            strict_grant_type,
            password_grant,
            second_factor,
            webauthn_rp_id,
            webauthn_origin,
            smtp_url,
            mail_from,
            trusted_proxies,
            login_rate_per_minute,
            refresh_family_max_age,
            hash_queue,
            signing_alg,
            key_rotation,
            metrics_bind,
            metrics_public,
            key_reload_every,
            purge_every,
            dev_mode: false,
            database_url_given,
        })
    }

    /// Refuses settings that only make sense together: `/metrics` on the public listener.
    pub fn check_consistency(&self) -> Result<(), ConfigError> {
        if self.metrics_bind.is_some_and(|metrics| metrics == self.bind && metrics.port() != 0) {
            return Err(invalid(
                "GATEHOUSE_METRICS_BIND",
                "must differ from GATEHOUSE_BIND: metrics are never served on the public listener",
            ));
        }
        // The metrics tell load and failure rates: only the machine itself (a local scraper or
        // agent) sees them unless the operator says otherwise.
        if self.metrics_bind.is_some_and(|metrics| !metrics.ip().is_loopback()) && !self.metrics_public {
            return Err(invalid(
                "GATEHOUSE_METRICS_BIND",
                "is not a loopback address: set GATEHOUSE_METRICS_PUBLIC=true to serve metrics to other machines",
            ));
        }
        Ok(())
    }

    /// The issuer to put in tokens and metadata once the listener's real address is known.
    /// `--dev` without an issuer says `http://localhost:<port>` (a name, not an address, so the demo
    /// has passkeys: WebAuthn needs a domain); otherwise the address actually bound.
    pub fn issuer_for(&self, bound: SocketAddr) -> String {
        match &self.issuer {
            Some(issuer) => issuer.clone(),
            None if self.dev_mode && bound.ip().is_loopback() => format!("http://localhost:{}", bound.port()),
            None => format!("http://{bound}"),
        }
    }

    /// The WebAuthn relying party (RP ID and origin) for `issuer`: `GATEHOUSE_WEBAUTHN_RP_ID` and
    /// `GATEHOUSE_WEBAUTHN_ORIGIN` when set, else the issuer's host and origin. `None` (passkeys off)
    /// when the issuer's host is an IP address and no RP ID is set: WebAuthn has no RP ID for one.
    pub fn webauthn_for(&self, issuer: &str) -> Option<(String, String)> {
        let url = url::Url::parse(issuer).ok();
        let rp_id = match &self.webauthn_rp_id {
            Some(rp_id) => rp_id.clone(),
            None => match url.as_ref()?.host()? {
                url::Host::Domain(domain) => domain.to_owned(),
                url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
            },
        };
        let origin = match &self.webauthn_origin {
            Some(origin) => origin.clone(),
            None => url.as_ref()?.origin().ascii_serialization(),
        };
        Some((rp_id, origin))
    }

    /// The HS256 key; with `--dev` and no configured secret, a fresh random one for this process only.
    pub fn resolve_jwt_secret(&self) -> Result<SecretString, ConfigError> {
        match (&self.jwt_secret, self.dev_mode) {
            (Some(secret), _) => Ok(secret.clone()),
            (None, true) => Ok(crate::random::token(48).into()),
            (None, false) => Err(ConfigError::MissingJwtSecret),
        }
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

pub fn parse_bind(value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid("GATEHOUSE_BIND", format!("`{value}` is not an address like 127.0.0.1:8080")))
}

fn parse_issuer(value: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(value.trim())
        .map_err(|err| invalid("GATEHOUSE_ISSUER", format!("`{value}` is not a URL ({err})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("GATEHOUSE_ISSUER", "must be an http(s) URL without query or fragment (RFC 8414 §2)"));
    }
    // RFC 8414 builds metadata URLs by appending paths, so a trailing slash would double up.
    Ok(value.trim().trim_end_matches('/').to_owned())
}

fn parse_secret(name: &'static str, value: String) -> Result<SecretString, ConfigError> {
    if value.len() < MIN_SECRET_BYTES {
        return Err(invalid(name, format!("must be at least {MIN_SECRET_BYTES} bytes")));
    }
    Ok(SecretString::from(value))
}

fn parse_ttl(name: &'static str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    parse_duration(name, value, default, 1)
}

/// A duration like `15m` or `14d`, from `min_secs` seconds to a year.
fn parse_duration(
    name: &'static str,
    value: Option<String>,
    default: &str,
    min_secs: u64,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let ttl = humantime::parse_duration(text.trim())
        .map_err(|err| invalid(name, format!("`{text}` is not a duration like 15m or 14d ({err})")))?;
    if ttl < Duration::from_secs(min_secs) {
        let least = if min_secs == 1 { "one second".to_owned() } else { format!("{min_secs} seconds") };
        return Err(invalid(name, format!("must be at least {least}")));
    }
    if ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err(invalid(name, "must be at most a year"));
    }
    Ok(ttl)
}

fn parse_bcrypt_cost(value: &str) -> Result<u32, ConfigError> {
    value.trim().parse().ok().filter(|cost| BCRYPT_COST_RANGE.contains(cost)).ok_or_else(|| {
        invalid(
            "GATEHOUSE_BCRYPT_COST",
            format!(
                "`{value}` is not a whole number from {} to {}",
                BCRYPT_COST_RANGE.start(),
                BCRYPT_COST_RANGE.end()
            ),
        )
    })
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, format!("`{value}` is not true or false"))),
    }
}

fn parse_proxies(value: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    value
        .split([',', ' '])
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnet::IpNet>()
                .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| invalid("GATEHOUSE_TRUSTED_PROXIES", format!("`{part}` is not an address or CIDR")))
        })
        .collect()
}

impl Settings {
    /// For log lines: the database URL with its password masked.
    pub fn database_url_for_display(&self) -> String {
        mask_database_password(self.database_url.expose_secret())
    }
}

/// Masks a password in a connection string, wherever libpq would read one: the userinfo of a URL,
/// a `password=` query parameter, or a `password=` pair of a `key=value` string.
pub fn mask_database_password(raw: &str) -> String {
    const MASK: &str = "***";
    if raw.contains("://") {
        let Ok(mut parsed) = url::Url::parse(raw) else { return "<unparseable DATABASE_URL>".to_owned() };
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some(MASK));
        }
        if parsed.query_pairs().any(|(name, _)| name == "password") {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(name, value)| {
                    let value = if name == "password" { MASK.to_owned() } else { value.into_owned() };
                    (name.into_owned(), value)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    // `host=… password='a \' b' dbname=…`: a value may be single-quoted, with \' and \\ escaped inside.
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find("password") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let key_starts_word = before.is_empty() || before.ends_with(char::is_whitespace);
        let value = after["password".len()..].trim_start();
        let Some(value) = value.strip_prefix('=').filter(|_| key_starts_word) else {
            out.push_str("password");
            rest = &after["password".len()..];
            continue;
        };
        let value = value.trim_start();
        out.push_str("password=");
        out.push_str(MASK);
        rest = skip_value(value);
    }
    out.push_str(rest);
    out
}

/// What follows one libpq `key=value` value.
fn skip_value(value: &str) -> &str {
    let Some(quoted) = value.strip_prefix('\'') else {
        return value.find(char::is_whitespace).map_or("", |end| &value[end..]);
    };
    let mut chars = quoted.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => return &quoted[index + 1..],
            _ => {}
        }
    }
    ""
}

/// `GATEHOUSE_SECOND_FACTOR`: whom a second factor is required of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecondFactorPolicy {
    #[default]
    Optional,
    Admins,
    Everyone,
}

impl SecondFactorPolicy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "optional" => Some(Self::Optional),
            "admins" => Some(Self::Admins),
            "everyone" => Some(Self::Everyone),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Optional => "optional",
            Self::Admins => "admins",
            Self::Everyone => "everyone",
        }
    }

    /// Whether a user (an admin or not) must have a second factor before anything else.
    pub fn covers(self, is_admin: bool) -> bool {
        match self {
            Self::Optional => false,
            Self::Admins => is_admin,
            Self::Everyone => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn the_second_factor_policy_and_the_passkeys_relying_party() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.second_factor, SecondFactorPolicy::Optional);
        assert_eq!(
            settings(&[("GATEHOUSE_SECOND_FACTOR", "admins")]).unwrap().second_factor,
            SecondFactorPolicy::Admins
        );
        assert!(settings(&[("GATEHOUSE_SECOND_FACTOR", "always")]).is_err());
        // From the issuer: its host and origin; an IP address gives none (passkeys off).
        let pair = |rp: &str, origin: &str| Some((rp.to_owned(), origin.to_owned()));
        assert_eq!(s.webauthn_for("https://auth.example.com/"), pair("auth.example.com", "https://auth.example.com"));
        assert_eq!(s.webauthn_for("http://localhost:8080"), pair("localhost", "http://localhost:8080"));
        assert_eq!(s.webauthn_for("http://127.0.0.1:8080"), None);
        assert_eq!(s.webauthn_for("http://[::1]:8080"), None);
        // Set explicitly: they win, also over an IP-address issuer.
        let set = settings(&[
            ("GATEHOUSE_WEBAUTHN_RP_ID", "example.com"),
            ("GATEHOUSE_WEBAUTHN_ORIGIN", "https://login.example.com/"),
        ])
        .unwrap();
        assert_eq!(set.webauthn_for("http://10.0.0.1:8080"), pair("example.com", "https://login.example.com"));
        assert!(settings(&[("GATEHOUSE_WEBAUTHN_ORIGIN", "not a url")]).is_err());
        // `--dev` names localhost, so the demo has passkeys.
        let mut dev = settings(&[]).unwrap();
        dev.dev_mode = true;
        assert_eq!(dev.issuer_for(dev.bind), "http://localhost:8080");
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url.expose_secret(), "postgres:///gatehouse");
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(14 * 24 * 3600));
        assert_eq!(s.bcrypt_cost, 12);
        assert!(!s.strict_grant_type);
        assert!(s.password_grant, "the password grant is on unless turned off");
        assert!(!settings(&[("GATEHOUSE_PASSWORD_GRANT", "off")]).unwrap().password_grant);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.issuer_for(s.bind), "http://127.0.0.1:8080");
        assert_eq!(s.signing_alg, SigningAlgorithm::Es256);
        assert_eq!(s.key_rotation, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(s.refresh_family_max_age, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(s.hash_queue, None);
        assert_eq!(s.metrics_bind, None);
    }

    #[test]
    fn metrics_are_never_served_on_the_public_listener() {
        let s =
            settings(&[("GATEHOUSE_BIND", "127.0.0.1:8080"), ("GATEHOUSE_METRICS_BIND", "127.0.0.1:8080")]).unwrap();
        assert_eq!(
            s.check_consistency().unwrap_err().to_string(),
            "GATEHOUSE_METRICS_BIND is not valid: must differ from GATEHOUSE_BIND: metrics are never served on the public listener"
        );
        let s = settings(&[("GATEHOUSE_METRICS_BIND", "127.0.0.1:9100")]).unwrap();
        assert!(s.check_consistency().is_ok());
    }

    #[test]
    fn the_background_intervals_are_settings_and_key_reloads_stay_within_a_minute() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.key_reload_every, s.purge_every), (Duration::from_secs(60), Duration::from_secs(3600)));
        let s = settings(&[("GATEHOUSE_KEY_RELOAD_EVERY", "2s"), ("GATEHOUSE_PURGE_EVERY", "5m")]).unwrap();
        assert_eq!((s.key_reload_every, s.purge_every), (Duration::from_secs(2), Duration::from_secs(300)));
        let err = settings(&[("GATEHOUSE_KEY_RELOAD_EVERY", "2m")]).unwrap_err().to_string();
        assert!(err.starts_with("GATEHOUSE_KEY_RELOAD_EVERY is not valid: must be at most 60s"), "{err}");
        assert!(settings(&[("GATEHOUSE_PURGE_EVERY", "0s")]).is_err());
    }

    #[test]
    fn metrics_stay_on_loopback_unless_made_public() {
        for addr in ["0.0.0.0:9100", "10.1.2.3:9100", "[::]:9100"] {
            let s = settings(&[("GATEHOUSE_METRICS_BIND", addr)]).unwrap();
            assert_eq!(
                s.check_consistency().unwrap_err().to_string(),
                "GATEHOUSE_METRICS_BIND is not valid: is not a loopback address: set GATEHOUSE_METRICS_PUBLIC=true to serve metrics to other machines",
                "{addr}"
            );
            let public = settings(&[("GATEHOUSE_METRICS_BIND", addr), ("GATEHOUSE_METRICS_PUBLIC", "true")]).unwrap();
            assert!(public.check_consistency().is_ok(), "{addr}");
        }
        let v6 = settings(&[("GATEHOUSE_METRICS_BIND", "[::1]:9100")]).unwrap();
        assert!(v6.check_consistency().is_ok());
    }

    #[test]
    fn the_signing_algorithm_and_rotation_are_configurable() {
        let s = settings(&[("GATEHOUSE_SIGNING_ALG", "eddsa"), ("GATEHOUSE_KEY_ROTATION", "0")]).unwrap();
        assert_eq!((s.signing_alg, s.key_rotation), (SigningAlgorithm::EdDsa, None));
        for off in ["0s", "0d"] {
            assert_eq!(settings(&[("GATEHOUSE_KEY_ROTATION", off)]).unwrap().key_rotation, None, "{off}");
        }
        let s = settings(&[("GATEHOUSE_SIGNING_ALG", "HS256"), ("GATEHOUSE_KEY_ROTATION", "7d")]).unwrap();
        assert_eq!((s.signing_alg, s.key_rotation), (SigningAlgorithm::Hs256, Some(Duration::from_secs(7 * 86400))));
        let err = settings(&[("GATEHOUSE_SIGNING_ALG", "RS256")]).unwrap_err().to_string();
        assert_eq!(err, "GATEHOUSE_SIGNING_ALG is not valid: `RS256` is not one of ES256, EdDSA, HS256");
    }

    #[test]
    fn a_short_jwt_secret_is_refused_with_one_clear_line() {
        let err = settings(&[("GATEHOUSE_JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(err.to_string(), "GATEHOUSE_JWT_SECRET is not valid: must be at least 32 bytes");
    }

    #[test]
    fn serve_without_secret_refuses_unless_dev() {
        let mut s = settings(&[]).unwrap();
        assert!(matches!(s.resolve_jwt_secret(), Err(ConfigError::MissingJwtSecret)));
        s.dev_mode = true;
        assert!(s.resolve_jwt_secret().unwrap().expose_secret().len() >= MIN_SECRET_BYTES);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("GATEHOUSE_BIND", "nope"),
            ("GATEHOUSE_ACCESS_TOKEN_TTL", "soon"),
            ("GATEHOUSE_BCRYPT_COST", "40"),
            ("GATEHOUSE_STRICT_GRANT_TYPE", "maybe"),
            ("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("GATEHOUSE_ISSUER", "ftp://x"),
            ("GATEHOUSE_KEY_ROTATION", "30s"),
            ("GATEHOUSE_REFRESH_FAMILY_MAX_AGE", "forever"),
            ("GATEHOUSE_HASH_QUEUE", "0"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn a_database_password_is_masked_wherever_libpq_would_read_it() {
        assert_eq!(mask_database_password("postgres://app:s3cret@db:5432/gh"), "postgres://app:***@db:5432/gh");
        assert_eq!(
            mask_database_password("postgres://db/gh?sslmode=require&password=s3cret"),
            "postgres://db/gh?sslmode=require&password=***"
        );
        assert_eq!(mask_database_password("postgres:///gatehouse"), "postgres:///gatehouse");
        assert_eq!(mask_database_password("host=db password=s3cret dbname=gh"), "host=db password=*** dbname=gh");
        assert_eq!(mask_database_password(r"host=db password = 'a \' b' dbname=gh"), "host=db password=*** dbname=gh");
        assert_eq!(mask_database_password("dbname=password_db"), "dbname=password_db");
        assert_eq!(mask_database_password("host=x password='unterminated s3cret"), "host=x password=***");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidrs() {
        let s = settings(&[("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
    }
}
