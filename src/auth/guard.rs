//! The one authorization rule. The API answers a denial with 401/403 JSON, the website with a
//! redirect to the login page or the 403 page; both ask this module whether access is allowed.

use crate::domain::{RoleName, ScopeName, ScopeSet};

/// What an endpoint or page needs.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// Checked for bearer tokens; a browser session acts with everything its user's roles allow.
    pub scope: Option<&'static str>,
    pub role: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingScope(&'static str),
    MissingRole,
}

impl Requirement {
    pub const PROFILE: Requirement = Requirement { scope: Some(ScopeName::PROFILE), role: None };
    pub const ITEMS_WRITE: Requirement = Requirement { scope: Some(ScopeName::ITEMS_WRITE), role: None };
    pub const ADMIN_STATS: Requirement =
        Requirement { scope: Some(ScopeName::ADMIN_STATS), role: Some(RoleName::ADMIN) };
    /// RFC 7662 introspection, for other services: the role is checked again at every call, so a
    /// service whose role is taken away stops introspecting at once, whatever its token says.
    pub const INTROSPECT: Requirement =
        Requirement { scope: Some(ScopeName::TOKENS_INTROSPECT), role: Some(RoleName::SERVICE) };
    pub const ADMIN_USERS: Requirement =
        Requirement { scope: Some(ScopeName::ADMIN_USERS), role: Some(RoleName::ADMIN) };
    /// The admin pages (a browser session has no scopes: the role decides).
    pub const ADMIN_PAGES: Requirement = Requirement { scope: None, role: Some(RoleName::ADMIN) };

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
}
