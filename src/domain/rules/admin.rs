//! Administrative changes to an account (roles, active flag): what a change does, and when it is
//! refused. `db::users::change` loads the account and the admin count under the admin lock, asks
//! [`decide_change`], and writes what it says.

use crate::domain::RoleName;

/// The account as it is, read under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub active: bool,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
}

/// What was asked (`None`: leave it as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedChange {
    pub roles: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// What else the rule needs, read under the same lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminContext {
    /// Active admins other than the account being changed.
    pub other_active_admins: i64,
    /// The acting admin still is an active admin (`true` for the operator at the command line).
    pub actor_still_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeDecision {
    /// It would leave no active admin. Named before [`ChangeDecision::ActorNotAdmin`]: of two
    /// admins demoting each other at once, the second hears why.
    LastAdmin,
    /// The acting admin was demoted or deactivated after their request was authorized.
    ActorNotAdmin,
    /// Write this (each `None`: unchanged).
    Apply {
        /// The new active flag; a deactivation also ends every token and session (so reactivating
        /// later brings none back).
        active: Option<bool>,
        /// The new roles, sorted.
        roles: Option<Vec<String>>,
    },
}

fn is_admin(roles: &[String]) -> bool {
    roles.iter().any(|role| role == RoleName::ADMIN)
}

pub fn decide_change(before: &AccountState, change: &RequestedChange, context: &AdminContext) -> ChangeDecision {
    let mut roles_after = change.roles.clone().unwrap_or_else(|| before.roles.clone());
    roles_after.sort();
    roles_after.dedup();
    let active_after = change.active.unwrap_or(before.active);
    let admin_before = before.active && is_admin(&before.roles);
    let admin_after = active_after && is_admin(&roles_after);
    if admin_before && !admin_after && context.other_active_admins == 0 {
        return ChangeDecision::LastAdmin;
    }
    if !context.actor_still_admin {
        return ChangeDecision::ActorNotAdmin;
    }
    ChangeDecision::Apply {
        active: (active_after != before.active).then_some(active_after),
        roles: (roles_after != before.roles).then_some(roles_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(active: bool, roles: &[&str]) -> AccountState {
        AccountState { active, roles: roles.iter().map(|r| (*r).to_owned()).collect() }
    }

    fn roles(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|r| (*r).to_owned()).collect())
    }

    const ALONE: AdminContext = AdminContext { other_active_admins: 0, actor_still_admin: true };
    const NOT_ALONE: AdminContext = AdminContext { other_active_admins: 1, actor_still_admin: true };
    const DEMOTED_ACTOR: AdminContext = AdminContext { other_active_admins: 1, actor_still_admin: false };

    #[test]
    fn changes_follow_the_table() {
        let admin = || account(true, &["admin", "user"]);
        let user = || account(true, &["user"]);
        use ChangeDecision::*;
        #[rustfmt::skip]
        let cases: Vec<(&str, AccountState, RequestedChange, AdminContext, ChangeDecision)> = vec![
            ("the last admin cannot lose the role", admin(), RequestedChange { roles: roles(&["user"]), active: None }, ALONE, LastAdmin),
            ("the last admin cannot be deactivated", admin(), RequestedChange { roles: None, active: Some(false) }, ALONE, LastAdmin),
            ("another admin makes it fine", admin(), RequestedChange { roles: roles(&["user"]), active: None }, NOT_ALONE,
                Apply { active: None, roles: roles(&["user"]) }),
            ("the last admin keeps the role while others change", admin(), RequestedChange { roles: roles(&["user", "admin", "admin"]), active: Some(true) }, ALONE,
                Apply { active: None, roles: None }),
            ("a user's change never meets the guard", user(), RequestedChange { roles: roles(&[]), active: Some(false) }, ALONE,
                Apply { active: Some(false), roles: roles(&[]) }),
            ("an inactive admin is no admin to lose", account(false, &["admin"]), RequestedChange { roles: roles(&[]), active: None }, ALONE,
                Apply { active: None, roles: roles(&[]) }),
            ("a demoted actor writes nothing", user(), RequestedChange { roles: roles(&["admin", "user"]), active: None }, DEMOTED_ACTOR, ActorNotAdmin),
            ("the last admin is named before the demoted actor", admin(), RequestedChange { roles: roles(&[]), active: None },
                AdminContext { other_active_admins: 0, actor_still_admin: false }, LastAdmin),
            ("roles come sorted", user(), RequestedChange { roles: roles(&["user", "admin"]), active: None }, ALONE,
                Apply { active: None, roles: roles(&["admin", "user"]) }),
            ("reactivation", account(false, &["user"]), RequestedChange { roles: None, active: Some(true) }, ALONE,
                Apply { active: Some(true), roles: None }),
        ];
        for (case, before, change, context, expected) in cases {
            assert_eq!(decide_change(&before, &change, &context), expected, "{case}");
        }
    }
}
