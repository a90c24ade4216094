use std::collections::BTreeSet;
use std::fmt;

/// One scope token (RFC 6749 §3.3). Which scopes exist is data in the `scopes` table; this type only
/// guarantees the syntax, so a request with a malformed scope is refused before any lookup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a valid scope")]
pub struct ScopeNameError(pub String);

impl ScopeName {
    pub const PROFILE: &'static str = "profile";
    pub const ITEMS_READ: &'static str = "items:read";
    pub const ITEMS_WRITE: &'static str = "items:write";
    pub const ADMIN_STATS: &'static str = "admin:stats";
    pub const ADMIN_USERS: &'static str = "admin:users";
    pub const TOKENS_INTROSPECT: &'static str = "tokens:introspect";
    pub const OPENID: &'static str = "openid";
    pub const EMAIL: &'static str = "email";

    /// The scopes the migrations seed, with the descriptions the API documentation shows.
    pub const DESCRIBED: [(&'static str, &'static str); 8] = [
        (Self::PROFILE, "Read your own profile; sign out everywhere"),
        (Self::ITEMS_READ, "Read your items"),
        (Self::ITEMS_WRITE, "Create items"),
        (Self::ADMIN_STATS, "Read service statistics (role admin)"),
        (Self::ADMIN_USERS, "Manage users (role admin)"),
        (Self::TOKENS_INTROSPECT, "Introspect tokens at /introspect (role service)"),
        (Self::OPENID, "Sign in to an app (OpenID Connect): /userinfo and ID tokens"),
        (Self::EMAIL, "Your email address and whether it is verified (OpenID Connect)"),
    ];

    pub fn parse(raw: &str) -> Result<Self, ScopeNameError> {
        // scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), and we keep them short.
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if valid { Ok(Self(raw.to_owned())) } else { Err(ScopeNameError(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes, written as RFC 6749's space-separated list in a stable order (also how it is stored).
#[derive(Clone, Debug, Default, PartialEq, Eq, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub struct ScopeSet(BTreeSet<ScopeName>);

impl ScopeSet {
    /// Parses a `scope` parameter: space-separated tokens; repeated spaces and duplicates are tolerated.
    pub fn parse(raw: &str) -> Result<Self, ScopeNameError> {
        raw.split(' ').filter(|part| !part.is_empty()).map(ScopeName::parse).collect()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The members of both.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The members of `self` that `other` lacks.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ScopeName> {
        self.0.iter()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().map(|s| s.0.clone()).collect()
    }
}

impl std::str::FromStr for ScopeSet {
    type Err = ScopeNameError;

    fn from_str(raw: &str) -> Result<Self, ScopeNameError> {
        Self::parse(raw)
    }
}

impl FromIterator<ScopeName> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = ScopeName>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_list_round_trips_in_stable_order() {
        let set = ScopeSet::parse("items:read  profile items:read").unwrap();
        assert_eq!(set.to_string(), "items:read profile");
        assert!(set.contains("profile"));
    }

    #[test]
    fn characters_outside_rfc6749_are_refused() {
        assert!(ScopeSet::parse("profile \"x\"").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("tab\there").is_err());
        assert!(ScopeSet::parse("").unwrap().is_empty());
    }
}
