//! The one authorization rule. The API answers a denial with 401/403 JSON, the website with a
//! redirect to the login page or the 403 page; both ask this module whether access is allowed.

use crate::domain::{RoleName, ScopeName, ScopeSet};

/// What an endpoint or page needs.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// Checked for bearer tokens; a browser session acts with everything its user's roles allow.
    pub scope: Option<&'static str>,
    pub role: Option<&'static str>,
    /// The endpoint acts for a person (their profile, their items): a client's own token, which has
    /// no person, is refused whatever its scopes.
    pub person: bool,
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
    /// A client's own token at an endpoint about a person.
    NotAPerson,
    /// The request needs an OAuth access token: a personal access token cannot do it (make another).
    AccessTokenRequired,
}

impl Requirement {
    /// What most endpoints need: a person's credential with `scope` (any kind of bearer credential).
    const fn for_people(scope: &'static str, role: Option<&'static str>) -> Requirement {
        Requirement { scope: Some(scope), role, person: true, personal_tokens: true }
    }

    pub const PROFILE: Requirement = Requirement::for_people(ScopeName::PROFILE, None);
    /// OpenID Connect's userinfo: a person's token with `openid`.
    pub const OPENID: Requirement = Requirement::for_people(ScopeName::OPENID, None);
    pub const ITEMS_WRITE: Requirement = Requirement::for_people(ScopeName::ITEMS_WRITE, None);
    pub const ADMIN_STATS: Requirement = Requirement::for_people(ScopeName::ADMIN_STATS, Some(RoleName::ADMIN));
    /// RFC 7662 introspection, for other services: a registered client with the scope, or a user of
    /// role `service` (with an access token or a personal access token), whose role is checked again
    /// at every call (a service whose role is taken away stops introspecting at once, whatever its
    /// token says).
    pub const INTROSPECT: Requirement = Requirement {
        scope: Some(ScopeName::TOKENS_INTROSPECT),
        role: Some(RoleName::SERVICE),
        person: false,
        personal_tokens: true,
    };
    pub const ADMIN_USERS: Requirement = Requirement::for_people(ScopeName::ADMIN_USERS, Some(RoleName::ADMIN));
    /// The admin pages (a browser session has no scopes: the role decides).
    pub const ADMIN_PAGES: Requirement =
        Requirement { scope: None, role: Some(RoleName::ADMIN), person: true, personal_tokens: true };
    /// Making a personal access token: a person's own credential (an access token with `profile`, or
    /// their browser session), never another personal access token, so a leaked one cannot breed
    /// replacements that outlive its revocation.
    pub const CREATE_PERSONAL_TOKEN: Requirement =
        Requirement { scope: Some(ScopeName::PROFILE), role: None, person: true, personal_tokens: false };

    /// The rule for a person's bearer credential: its kind first (no scope would make it
    /// acceptable), then its scopes and the user's roles.
    pub fn check_bearer(&self, kind: CredentialKind, roles: &[String], scopes: &ScopeSet) -> Result<(), Denial> {
        if kind == CredentialKind::PersonalToken && !self.personal_tokens {
            return Err(Denial::AccessTokenRequired);
        }
        self.check(roles, Some(scopes))
    }

    /// The rule for a registered client's own token: only what is not about a person, and then the
    /// scope as for anyone (a role is asked of people; a client has none, and its scopes were granted
    /// by an admin when it was registered).
    pub fn check_client(&self, scopes: &ScopeSet) -> Result<(), Denial> {
        if self.person {
            return Err(Denial::NotAPerson);
        }
        Requirement { role: None, ..*self }.check(&[], Some(scopes))
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
    fn introspection_needs_the_service_role_now_not_only_the_scope() {
        let service = vec!["service".to_owned()];
        let demoted = vec!["user".to_owned()];
        let scope = ScopeSet::parse("tokens:introspect").unwrap();
        assert_eq!(Requirement::INTROSPECT.check(&service, Some(&scope)), Ok(()));
        assert_eq!(Requirement::INTROSPECT.check(&demoted, Some(&scope)), Err(Denial::MissingRole));
    }

    #[test]
    fn a_client_token_reaches_only_what_is_not_about_a_person_and_needs_no_role() {
        let all = ScopeSet::parse("profile items:write admin:stats admin:users tokens:introspect").unwrap();
        let none = ScopeSet::default();
        let cases = [
            (Requirement::PROFILE, &all, Err(Denial::NotAPerson)),
            (Requirement::ITEMS_WRITE, &all, Err(Denial::NotAPerson)),
            (Requirement::ADMIN_USERS, &all, Err(Denial::NotAPerson)),
            (Requirement::INTROSPECT, &all, Ok(())),
            (Requirement::INTROSPECT, &none, Err(Denial::MissingScope("tokens:introspect"))),
        ];
        for (rule, scopes, expected) in cases {
            assert_eq!(rule.check_client(scopes), expected, "{rule:?}");
        }
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
