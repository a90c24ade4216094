use std::fmt;

/// A role name as stored in the `roles` table (which roles exist is data, checked against the database).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a role name (lowercase letters, digits, _ and -, starting with a letter)")]
pub struct RoleNameError(pub String);

impl RoleName {
    /// The role that the admin pages and `/api/admin/*` require.
    pub const ADMIN: &'static str = "admin";
    /// The role of other services: it grants `tokens:introspect`.
    pub const SERVICE: &'static str = "service";

    pub fn parse(raw: &str) -> Result<Self, RoleNameError> {
        let valid = raw.len() <= 32
            && raw.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid { Ok(Self(raw.to_owned())) } else { Err(RoleNameError(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which scopes each role allows: the role definitions, read once at start (they change only with a
/// migration). Which roles a user holds is never cached.
#[derive(Debug, Clone, Default)]
pub struct RoleScopes(std::collections::HashMap<String, super::ScopeSet>);

impl RoleScopes {
    /// From `(role, scope names)` pairs as stored; a name that is not a scope token grants nothing.
    pub fn new(by_role: std::collections::HashMap<String, Vec<String>>) -> Self {
        Self(
            by_role
                .into_iter()
                .map(|(role, scopes)| {
                    let scopes = scopes.iter().filter_map(|name| super::ScopeName::parse(name).ok()).collect();
                    (role, scopes)
                })
                .collect(),
        )
    }

    /// Every scope one of `roles` allows.
    pub fn allowed_for(&self, roles: &[String]) -> super::ScopeSet {
        roles.iter().filter_map(|role| self.0.get(role)).flat_map(|scopes| scopes.iter().cloned()).collect()
    }
}

#[cfg(test)]
mod role_scopes_tests {
    use super::*;

    #[test]
    fn a_users_roles_allow_the_union_of_their_scopes() {
        let map = RoleScopes::new(
            [
                ("user".to_owned(), vec!["profile".to_owned(), "items:read".to_owned()]),
                ("admin".to_owned(), vec!["admin:users".to_owned(), "profile".to_owned()]),
            ]
            .into_iter()
            .collect(),
        );
        let roles = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(map.allowed_for(&roles(&["user"])).to_string(), "items:read profile");
        assert_eq!(map.allowed_for(&roles(&["user", "admin"])).to_string(), "admin:users items:read profile");
        assert_eq!(map.allowed_for(&roles(&["unknown"])).to_string(), "");
        assert_eq!(map.allowed_for(&[]).to_string(), "");
    }
}
