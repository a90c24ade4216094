//! `gatehouse keys …`: the signing keys.

use chrono::Utc;
use clap::Subcommand;
use diesel::{Connection as _, PgConnection};
use secrecy::SecretString;

use super::CliError;
use crate::auth::keys::{self, KeyPolicy, KeyRing, KeyState, Lane, Undecryptable};
use crate::auth::second_factor;
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys: kid, algorithm, purpose (access, id_token), state (next, current, retired), when made, when it signs, when it retires.
    List,
    /// Publish a new key of GATEHOUSE_SIGNING_ALG now; it signs once verifiers have had time to fetch it.
    Rotate,
    /// Re-encrypt the stored private keys under the current GATEHOUSE_JWT_SECRET, after rotating the
    /// secret. The previous secret comes from GATEHOUSE_OLD_JWT_SECRET, or the first line of standard input.
    ReEncrypt,
}

/// Why `keys re-encrypt` wrote nothing.
#[derive(Debug, thiserror::Error)]
enum ReencryptFailure {
    #[error(transparent)]
    SigningKeys(#[from] keys::KeyError),
    #[error(transparent)]
    AppSecrets(#[from] second_factor::ReencryptError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

pub(super) fn run(conn: &mut PgConnection, settings: &Settings, command: KeysCommand) -> Result<(), CliError> {
    let policy = KeyPolicy {
        alg: settings.signing_alg,
        rotation: settings.key_rotation.and_then(|period| chrono::Duration::from_std(period).ok()),
        access_token_ttl: chrono::Duration::from_std(settings.access_token_ttl)
            .unwrap_or(chrono::Duration::minutes(15)),
    };
    let now = Utc::now();
    if let KeysCommand::List = command {
        // Listing only reads: it neither makes nor rotates keys (the CLI's environment may differ
        // from the servers'), and needs no secret.
        let timeline = keys::stored_timeline(conn, &policy, now).map_err(|err| CliError::from_error(&err))?;
        // With a secret configured, say whether it can decrypt each key (nothing is written).
        let readable = match settings.resolve_jwt_secret() {
            Ok(secret) => Some(keys::readable_with(conn, &secret).map_err(|err| CliError::from_error(&err))?),
            Err(_) => None,
        };
        print_timeline(&timeline, readable.as_ref());
        return Ok(());
    }
    let secret = settings.resolve_jwt_secret().map_err(CliError::from_display)?;
    if let KeysCommand::ReEncrypt = command {
        let old = old_secret()?;
        // Signing keys and authenticator-app secrets together: all under the new secret, or none.
        let (keys, apps) = conn
            .transaction::<_, ReencryptFailure, _>(|conn| {
                Ok((keys::reencrypt(conn, &old, &secret)?, second_factor::reencrypt(conn, &old, &secret)?))
            })
            .map_err(|err| CliError::from_error(&err))?;
        println!(
            "re-encrypted {keys} signing key(s) and {apps} authenticator-app secret(s) under the current GATEHOUSE_JWT_SECRET"
        );
        return Ok(());
    }
    let issuer = settings.issuer_for(settings.bind);
    let ring = KeyRing::load(conn, policy, &issuer, &secret, Undecryptable::Refuse, now)
        .map_err(|err| CliError::from_error(&err))?;
    match command {
        KeysCommand::Rotate => match ring.rotate_now(conn, now).map_err(|err| CliError::from_error(&err))? {
            Some(key) => println!(
                "published {} key {}; it signs from {} (verifiers have a JWKS max-age to fetch it first)",
                key.alg.as_str(),
                key.kid,
                stamp(key.activates_at)
            ),
            None => println!("nothing to do: a new key is already waiting to sign, or HS256 has no keys to rotate"),
        },
        KeysCommand::List | KeysCommand::ReEncrypt => {}
    }
    Ok(())
}

fn print_timeline(timeline: &[(keys::KeyTimes, KeyState)], readable: Option<&std::collections::HashMap<String, bool>>) {
    println!(
        "{:<44} {:<6} {:<8} {:<8} {:<21} {:<21} {:<14} RETIRES",
        "KID", "ALG", "PURPOSE", "STATE", "CREATED", "SIGNS FROM", "SECRET"
    );
    // The keys of the set: next, current and retired. An expired key (its tokens all gone) has
    // left the set; only its row waits a day for deletion.
    let timeline: Vec<_> = timeline.iter().filter(|(_, state)| state.is_accepted()).collect();
    for (index, (key, state)) in timeline.iter().enumerate() {
        let retires = match state {
            KeyState::Retired { since, until } => format!("{} (accepted until {})", stamp(*since), stamp(*until)),
            KeyState::Expired { since } => stamp(*since),
            // The activation of the next key of its lane (its purpose, and for ID tokens its
            // algorithm: each lane has a timeline of its own), if one is waiting.
            _ => timeline[index + 1..]
                .iter()
                .find(|(next, _)| Lane::of(next) == Lane::of(key))
                .map_or_else(|| "-".to_owned(), |(next, _)| stamp(next.activates_at)),
        };
        // Whether the configured GATEHOUSE_JWT_SECRET decrypts it ("-": HS256, or no secret given).
        let secret = match readable.and_then(|readable| readable.get(&key.kid)) {
            Some(true) => "decrypts",
            Some(false) => "cannot-decrypt",
            None => "-",
        };
        println!(
            "{:<44} {:<6} {:<8} {:<8} {:<21} {:<21} {:<14} {}",
            key.kid,
            key.alg.as_str(),
            key.purpose.as_str(),
            state.name(),
            stamp(key.created_at),
            stamp(key.activates_at),
            secret,
            retires
        );
    }
}

fn stamp(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn old_secret() -> Result<SecretString, CliError> {
    use std::io::BufRead as _;
    if let Ok(old) = std::env::var("GATEHOUSE_OLD_JWT_SECRET")
        && !old.is_empty()
    {
        return Ok(old.into());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|err| CliError(format!("cannot read the previous secret from standard input: {err}")))?;
    let old = line.trim_end_matches(['\n', '\r']).to_owned();
    if old.is_empty() {
        return Err(CliError("give the previous secret in GATEHOUSE_OLD_JWT_SECRET or on standard input".to_owned()));
    }
    Ok(old.into())
}
