//! The one authorization rule. The API answers a denial with 401/403 JSON, the website with a
//! redirect to the login page or the 403 page; both ask this module whether access is allowed.

use crate::domain::{RoleName, ScopeName, ScopeSet};

/// What an endpoint or page needs.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// Checked for bearer tokens; a browser session acts with everything its user's roles allow.
    pub scope: Option<&'static str>,
    pub role: Option<&'static str>,
    /// Whether a personal access token may be the credential (every request but making new ones).
    pub personal_tokens: bool,
}

/// The kind of bearer credential a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    AccessToken,
    PersonalToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingScope(&'static str),
    MissingRole,
    /// The request needs an OAuth access token: a personal access token cannot do it (make another).
    AccessTokenRequired,
}

impl Requirement {
    pub const PROFILE: Requirement = Requirement { scope: Some(ScopeName::PROFILE), role: None, personal_tokens: true };
    pub const ITEMS_WRITE: Requirement =
        Requirement { scope: Some(ScopeName::ITEMS_WRITE), role: None, personal_tokens: true };
    pub const ADMIN_STATS: Requirement =
        Requirement { scope: Some(ScopeName::ADMIN_STATS), role: Some(RoleName::ADMIN), personal_tokens: true };
    /// RFC 7662 introspection, for other services.
    pub const INTROSPECT: Requirement =
        Requirement { scope: Some(ScopeName::TOKENS_INTROSPECT), role: None, personal_tokens: true };
    pub const ADMIN_USERS: Requirement =
        Requirement { scope: Some(ScopeName::ADMIN_USERS), role: Some(RoleName::ADMIN), personal_tokens: true };
    /// The admin pages (a browser session has no scopes: the role decides).
    pub const ADMIN_PAGES: Requirement =
        Requirement { scope: None, role: Some(RoleName::ADMIN), personal_tokens: true };
    /// Making a personal access token: a person's own credential (an access token with `profile`, or
    /// their browser session), never another personal access token, so a leaked one cannot breed
    /// replacements that outlive its revocation.
    pub const CREATE_PERSONAL_TOKEN: Requirement =
        Requirement { scope: Some(ScopeName::PROFILE), role: None, personal_tokens: false };

    /// The rule for a bearer credential: its kind first (no scope would make it acceptable), then
    /// its scopes and the user's roles.
    pub fn check_bearer(&self, kind: CredentialKind, roles: &[String], scopes: &ScopeSet) -> Result<(), Denial> {
        if kind == CredentialKind::PersonalToken && !self.personal_tokens {
            return Err(Denial::AccessTokenRequired);
        }
        self.check(roles, Some(scopes))
    }

    /// `scopes` is `None` for a browser session.
    pub fn check(&self, roles: &[String], scopes: Option<&ScopeSet>) -> Result<(), Denial> {
        if let (Some(scope), Some(granted)) = (self.scope, scopes)
            && !granted.contains(scope)
        {
            return Err(Denial::MissingScope(scope));
        }
        if let Some(role) = self.role
            && !roles.iter().any(|r| r == role)
        {
            return Err(Denial::MissingRole);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_stats_needs_the_scope_on_tokens_and_the_role_everywhere() {
        let admin = vec!["admin".to_owned()];
        let user = vec!["user".to_owned()];
        let with_scope = ScopeSet::parse("admin:stats").unwrap();
        let without = ScopeSet::parse("profile").unwrap();
        let rule = Requirement::ADMIN_STATS;
        assert_eq!(rule.check(&admin, Some(&with_scope)), Ok(()));
        assert_eq!(rule.check(&admin, Some(&without)), Err(Denial::MissingScope("admin:stats")));
        assert_eq!(rule.check(&user, Some(&with_scope)), Err(Denial::MissingRole));
        assert_eq!(rule.check(&admin, None), Ok(()));
        assert_eq!(rule.check(&user, None), Err(Denial::MissingRole));
    }

    #[test]
    fn a_personal_access_token_cannot_make_personal_access_tokens_whatever_its_scopes() {
        let user = vec!["user".to_owned()];
        let profile = ScopeSet::parse("profile").unwrap();
        let none = ScopeSet::default();
        let (create, profile_rule) = (Requirement::CREATE_PERSONAL_TOKEN, Requirement::PROFILE);
        let (access, personal) = (CredentialKind::AccessToken, CredentialKind::PersonalToken);
        let cases = [
            (create, access, &profile, Ok(())),
            (create, personal, &profile, Err(Denial::AccessTokenRequired)),
            (create, personal, &none, Err(Denial::AccessTokenRequired)),
            (create, access, &none, Err(Denial::MissingScope("profile"))),
            (profile_rule, personal, &profile, Ok(())),
            (profile_rule, personal, &none, Err(Denial::MissingScope("profile"))),
        ];
        for (rule, kind, scopes, expected) in cases {
            assert_eq!(rule.check_bearer(kind, &user, scopes), expected, "{rule:?} {kind:?} {scopes:?}");
        }
    }
}
