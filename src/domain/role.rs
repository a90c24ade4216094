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
