//! Refresh-token rotation (RFC 6749 §6 with reuse detection): what presenting a refresh token means.

use chrono::{DateTime, Utc};

use crate::domain::ScopeSet;

/// The presented refresh token, read under its family's lock.
#[derive(Debug, Clone)]
pub struct PresentedToken<'a> {
    pub scope: &'a ScopeSet,
    pub expires_at: DateTime<Utc>,
    /// Already exchanged once.
    pub used: bool,
}

/// The token's family and user, read under their locks.
#[derive(Debug, Clone, Copy)]
pub struct FamilyState {
    pub revoked: bool,
    /// The family's maximum age.
    pub expires_at: DateTime<Utc>,
    /// When the credential check that began the family began.
    pub auth_time: DateTime<Utc>,
    pub user_active: bool,
    /// The user's invalidation cut-off (password change, deactivation, sign-out-everywhere).
    pub tokens_valid_after: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationDecision {
    /// Unknown to the family's rules: expired, revoked, or cut off. Nothing changes.
    Refuse,
    /// Presented a second time: it leaked, or the client is confused. The family ends now.
    Reuse,
    /// The request asked for scopes the token never had (these).
    Widened(ScopeSet),
    /// Exchange it for a new token with these scopes: the requested ones (or the token's own),
    /// cut to what the user's roles allow now.
    Rotate(ScopeSet),
}

/// What presenting `token` at `now` does. `requested`: narrower scopes, or `None` for the token's
/// own; `allowed_now`: every scope the user's roles allow at this moment.
pub fn decide_rotation(
    token: &PresentedToken<'_>,
    family: &FamilyState,
    requested: Option<&ScopeSet>,
    allowed_now: &ScopeSet,
    now: DateTime<Utc>,
) -> RotationDecision {
    // A revoked family is dead whatever is presented: reuse of its tokens is not news.
    if family.revoked {
        return RotationDecision::Refuse;
    }
    // Reuse is judged before expiry: an old stolen token presented late still ends the family.
    if token.used {
        return RotationDecision::Reuse;
    }
    if token.expires_at <= now || family.expires_at <= now {
        return RotationDecision::Refuse;
    }
    if !family.user_active || family.auth_time < family.tokens_valid_after {
        return RotationDecision::Refuse;
    }
    let wanted = requested.unwrap_or(token.scope);
    if !wanted.is_subset(token.scope) {
        return RotationDecision::Widened(wanted.difference(token.scope));
    }
    // Roles may have changed since the first grant: never hand out what they no longer allow.
    RotationDecision::Rotate(wanted.iter().filter(|scope| allowed_now.contains(scope.as_str())).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default() + chrono::Duration::minutes(minutes)
    }

    fn scopes(list: &str) -> ScopeSet {
        ScopeSet::parse(list).unwrap()
    }

    fn live_family() -> FamilyState {
        FamilyState {
            revoked: false,
            expires_at: at(1000),
            auth_time: at(0),
            user_active: true,
            tokens_valid_after: at(-10),
        }
    }

    /// A case: its name, the token, its family, the requested scopes, what the roles allow now, the decision.
    type Case<'a> =
        (&'a str, &'a PresentedToken<'a>, FamilyState, Option<&'a ScopeSet>, &'a ScopeSet, RotationDecision);

    #[test]
    fn rotation_follows_the_table() {
        let own = scopes("profile items:read");
        let fresh = PresentedToken { scope: &own, expires_at: at(100), used: false };
        let used = PresentedToken { used: true, ..fresh.clone() };
        let expired = PresentedToken { expires_at: at(10), ..fresh.clone() };
        let used_and_expired = PresentedToken { used: true, ..expired.clone() };
        let revoked = FamilyState { revoked: true, ..live_family() };
        let aged = FamilyState { expires_at: at(10), ..live_family() };
        let inactive = FamilyState { user_active: false, ..live_family() };
        let cut_off = FamilyState { tokens_valid_after: at(1), ..live_family() };
        let all = scopes("profile items:read items:write");
        let narrower = scopes("profile");
        let wider = scopes("profile items:write");
        use RotationDecision::*;
        let now = at(20);
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("a fresh token rotates with its own scopes", &fresh, live_family(), None, &all, Rotate(own.clone())),
            ("a narrower request narrows", &fresh, live_family(), Some(&narrower), &all, Rotate(narrower.clone())),
            ("a wider request is refused, naming the extra", &fresh, live_family(), Some(&wider), &all, Widened(scopes("items:write"))),
            ("a role lost since cuts the scopes", &fresh, live_family(), None, &narrower, Rotate(narrower.clone())),
            ("a used token ends the family", &used, live_family(), None, &all, Reuse),
            ("a used and expired token still ends the family", &used_and_expired, live_family(), None, &all, Reuse),
            ("a revoked family refuses, even reuse", &used, revoked, None, &all, Refuse),
            ("an expired token is refused", &expired, live_family(), None, &all, Refuse),
            ("a family past its maximum age is refused", &fresh, aged, None, &all, Refuse),
            ("an inactive user is refused", &fresh, inactive, None, &all, Refuse),
            ("a cut-off after the family began refuses", &fresh, cut_off, None, &all, Refuse),
        ];
        for (case, token, family, requested, allowed, expected) in cases {
            assert_eq!(decide_rotation(token, &family, requested, allowed, now), expected, "{case}");
        }
    }

    #[test]
    fn expiry_is_exclusive_at_the_instant() {
        let own = scopes("profile");
        let token = PresentedToken { scope: &own, expires_at: at(20), used: false };
        assert_eq!(decide_rotation(&token, &live_family(), None, &own, at(20)), RotationDecision::Refuse);
        assert_eq!(decide_rotation(&token, &live_family(), None, &own, at(19)), RotationDecision::Rotate(own.clone()));
    }
}
