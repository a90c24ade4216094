//! A token request, validated: what `POST /token` was asked to do.

use secrecy::SecretString;

use super::GrantError;
use crate::domain::GrantType;
use crate::domain::ScopeSet;
use crate::domain::form::{FormError, FormFields};

pub enum TokenRequest {
    Password {
        username: String,
        password: SecretString,
        /// A second factor's code (an app code or a recovery code), for a user who has one.
        otp: Option<SecretString>,
        scope: ScopeSet,
    },
    RefreshToken {
        refresh_token: SecretString,
        scope: Option<ScopeSet>,
    },
    /// RFC 6749 §4.4: the client asks for a token of its own (it authenticates separately).
    ClientCredentials {
        scope: Option<ScopeSet>,
    },
    /// RFC 6749 §4.1.3 with RFC 7636's verifier.
    AuthorizationCode {
        code: SecretString,
        redirect_uri: Option<String>,
        code_verifier: Option<SecretString>,
    },
    /// RFC 8628 §3.4: a device polls for the tokens its person allowed.
    DeviceCode {
        device_code: SecretString,
    },
}

impl From<FormError> for GrantError {
    fn from(err: FormError) -> Self {
        GrantError::InvalidRequest(err.to_string())
    }
}

impl TokenRequest {
    /// `strict`: `grant_type` must be present (FastAPI's `OAuth2PasswordRequestFormStrict`).
    pub fn from_form(form: &FormFields, strict: bool) -> Result<Self, GrantError> {
        let grant_type = match form.get("grant_type") {
            Some(grant_type) => grant_type,
            None if strict => return Err(GrantError::InvalidRequest("grant_type is required".to_owned())),
            None => "password",
        };
        let scope = form
            .get("scope")
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|err| GrantError::InvalidScope(err.to_string()))?;
        match grant_type {
            "password" => {
                let username = required(form, "username")?;
                let password = required(form, "password")?;
                Ok(TokenRequest::Password {
                    username: username.to_owned(),
                    password: SecretString::from(password),
                    otp: form.get("otp").map(SecretString::from),
                    scope: scope.unwrap_or_default(),
                })
            }
            "refresh_token" => {
                let refresh_token = required(form, "refresh_token")?;
                Ok(TokenRequest::RefreshToken { refresh_token: SecretString::from(refresh_token), scope })
            }
            "client_credentials" => Ok(TokenRequest::ClientCredentials { scope }),
            "authorization_code" => Ok(TokenRequest::AuthorizationCode {
                code: SecretString::from(required(form, "code")?),
                redirect_uri: form.get("redirect_uri").map(str::to_owned),
                code_verifier: form.get("code_verifier").map(SecretString::from),
            }),
            "urn:ietf:params:oauth:grant-type:device_code" => {
                Ok(TokenRequest::DeviceCode { device_code: SecretString::from(required(form, "device_code")?) })
            }
            _ => Err(GrantError::UnsupportedGrantType),
        }
    }

    /// The grant, as a client's registration names it.
    pub fn grant_type(&self) -> GrantType {
        match self {
            TokenRequest::Password { .. } => GrantType::Password,
            TokenRequest::RefreshToken { .. } => GrantType::RefreshToken,
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
            TokenRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            TokenRequest::DeviceCode { .. } => GrantType::DeviceCode,
        }
    }
}

fn required<'a>(form: &'a FormFields, name: &str) -> Result<&'a str, GrantError> {
    form.get(name).ok_or_else(|| GrantError::InvalidRequest(format!("{name} is required")))
}
