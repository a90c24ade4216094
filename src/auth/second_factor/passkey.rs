//! Passkeys (WebAuthn, through webauthn-rs): the relying party, and the three ceremonies: adding a
//! passkey, using one as a sign-in's second step, and signing in with one alone (a discoverable
//! passkey with user verification). Ceremony state is serialised to JSON and kept in PostgreSQL
//! (`db::passkeys`), so a ceremony begun on one instance finishes on another; nothing here keeps state.

use std::time::Duration;

use serde_json::Value;
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Webauthn,
    WebauthnBuilder,
};

/// A ceremony lives this long: the browser's own timeout, and the stored state's.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// Why a ceremony failed. The browser is told only that it did.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("the relying party could not be set up: {0}")]
    Setup(String),
    #[error("the browser's answer is not a WebAuthn credential")]
    Malformed,
    #[error("the passkey's answer does not verify: {0}")]
    Refused(String),
    #[error("the stored ceremony or passkey cannot be read")]
    Stored,
}

/// The relying party: gatehouse as WebAuthn sees it (RP ID and origin).
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl RelyingParty {
    pub fn new(rp_id: &str, origin: &str, name: &str) -> Result<Self, PasskeyError> {
        let origin = Url::parse(origin).map_err(|err| PasskeyError::Setup(err.to_string()))?;
        let webauthn = WebauthnBuilder::new(rp_id, &origin)
            .and_then(|builder| builder.rp_name(name).timeout(CEREMONY_TTL).build())
            .map_err(|err| PasskeyError::Setup(err.to_string()))?;
        Ok(Self { webauthn })
    }

    /// Options for the browser to make a passkey for `user_id`, and the state to keep. The passkey is
    /// asked to be discoverable (a "resident key"), so it can later sign in without a username.
    pub fn begin_registration(
        &self,
        user_id: Uuid,
        username: &str,
        display_name: &str,
        existing: &[Passkey],
    ) -> Result<(Value, Value), PasskeyError> {
        let exclude = existing.iter().map(|passkey| passkey.cred_id().clone()).collect::<Vec<_>>();
        let (options, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn
            .start_passkey_registration(user_id, username, display_name, Some(exclude))
            .map_err(|err| PasskeyError::Setup(err.to_string()))?;
        let mut options = to_json(&options)?;
        // What the browser is asked for (the kept state does not depend on it).
        options["publicKey"]["authenticatorSelection"]["residentKey"] = Value::from("required");
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = Value::from(true);
        Ok((options, to_json(&state)?))
    }

    /// Checks the browser's new credential against the kept state: the passkey to store.
    pub fn finish_registration(&self, credential: &Value, state: &Value) -> Result<Passkey, PasskeyError> {
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        let state: PasskeyRegistration = from_json(state)?;
        self.webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|err| PasskeyError::Refused(err.to_string()))
    }

    /// Options for a second step with one of `passkeys` (user verification required).
    pub fn begin_second_step(&self, passkeys: &[Passkey]) -> Result<(Value, Value), PasskeyError> {
        let (options, state): (RequestChallengeResponse, PasskeyAuthentication) =
            self.webauthn.start_passkey_authentication(passkeys).map_err(|err| PasskeyError::Setup(err.to_string()))?;
        Ok((to_json(&options)?, to_json(&state)?))
    }

    /// Checks an assertion of a second step; returns the passkey it used, updated (its counter).
    pub fn finish_second_step(
        &self,
        credential: &Value,
        state: &Value,
        passkeys: &[Passkey],
    ) -> Result<Passkey, PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        let state: PasskeyAuthentication = from_json(state)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&credential, &state)
            .map_err(|err| PasskeyError::Refused(err.to_string()))?;
        let mut used = passkeys
            .iter()
            .find(|passkey| passkey.cred_id() == result.cred_id())
            .cloned()
            .ok_or_else(|| PasskeyError::Refused("not one of the user's passkeys".to_owned()))?;
        used.update_credential(&result);
        Ok(used)
    }

    /// Options for signing in with a discoverable passkey: no username, user verification required.
    pub fn begin_sign_in(&self) -> Result<(Value, Value), PasskeyError> {
        let (mut options, state): (RequestChallengeResponse, DiscoverableAuthentication) =
            self.webauthn.start_discoverable_authentication().map_err(|err| PasskeyError::Setup(err.to_string()))?;
        // A button starts it, not the browser's autofill: no conditional mediation.
        options.mediation = None;
        Ok((to_json(&options)?, to_json(&state)?))
    }

    /// The credential id an assertion names (to find the stored passkey, and its user).
    pub fn credential_of(credential: &Value) -> Result<Vec<u8>, PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        Ok(credential.get_credential_id().to_vec())
    }

    /// Checks a discoverable sign-in's assertion with the passkey it names; returns it, updated.
    pub fn finish_sign_in(&self, credential: &Value, state: &Value, stored: &Passkey) -> Result<Passkey, PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        let state: DiscoverableAuthentication = from_json(state)?;
        let result = self
            .webauthn
            .finish_discoverable_authentication(&credential, state, &[DiscoverableKey::from(stored)])
            .map_err(|err| PasskeyError::Refused(err.to_string()))?;
        let mut used = stored.clone();
        used.update_credential(&result);
        Ok(used)
    }
}

/// A stored passkey's JSON, read back.
pub fn stored(json: &Value) -> Result<Passkey, PasskeyError> {
    from_json(json)
}

pub fn to_stored(passkey: &Passkey) -> Result<Value, PasskeyError> {
    to_json(passkey)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, PasskeyError> {
    serde_json::to_value(value).map_err(|_| PasskeyError::Stored)
}

fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, PasskeyError> {
    serde_json::from_value(value.clone()).map_err(|_| PasskeyError::Stored)
}

/// A passkey's name: trimmed, 1 to 100 characters, no control characters.
pub fn name(raw: &str) -> Option<String> {
    let name = raw.trim();
    (!name.is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_asks_for_a_discoverable_user_verified_passkey_of_this_relying_party() {
        let rp = RelyingParty::new("localhost", "http://localhost:8080", "gatehouse").unwrap();
        let (options, state) = rp.begin_registration(Uuid::new_v4(), "alice", "Alice", &[]).unwrap();
        let public_key = &options["publicKey"];
        assert_eq!(public_key["rp"]["id"], "localhost");
        assert_eq!(public_key["authenticatorSelection"]["residentKey"], "required");
        assert_eq!(public_key["authenticatorSelection"]["userVerification"], "required");
        assert!(public_key["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{public_key}");
        assert!(!state.is_null());
        // The stored state reads back; a browser answer that is not a credential is refused.
        assert!(matches!(rp.finish_registration(&serde_json::json!({"id": 1}), &state), Err(PasskeyError::Malformed)));
        let (options, _) = rp.begin_sign_in().unwrap();
        assert!(options["mediation"].is_null(), "a button, not autofill: {options}");
        assert_eq!(options["publicKey"]["userVerification"], "required");
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(name("  my phone "), Some("my phone".to_owned()));
        assert_eq!(name(" "), None);
        assert_eq!(name(&"x".repeat(101)), None);
        assert_eq!(name("a\u{7}b"), None);
    }
}
