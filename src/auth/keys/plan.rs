//! The timeline: each key's state at an instant, and what rotation must do, decided as pure
//! functions of the stored keys' times (their tests need no database).

use chrono::{DateTime, Utc};
use diesel::PgConnection;

use crate::config::SigningAlgorithm;
use crate::db::{self, signing_keys::StoredKey};

use super::*;

/// What the keys must look like: the algorithm new keys use, and how often they change.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    pub alg: SigningAlgorithm,
    /// `None`: no automatic rotation.
    pub rotation: Option<chrono::Duration>,
    pub access_token_ttl: chrono::Duration,
}

impl KeyPolicy {
    /// How long past its retirement a key is still accepted and published.
    pub(super) fn grace(&self) -> chrono::Duration {
        self.access_token_ttl + RETIREMENT_MARGIN
    }
}

/// Where a key is in its life at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Current,
    /// Superseded at `since`; accepted and published until `until`.
    Retired {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Past its retirement (at `since`) and grace: no longer accepted.
    Expired {
        since: DateTime<Utc>,
    },
}

impl KeyState {
    pub fn name(&self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired { .. } => "retired",
            KeyState::Expired { .. } => "expired",
        }
    }

    /// Next, current or retired: in the set (published, and its tokens accepted).
    pub fn is_accepted(&self) -> bool {
        !matches!(self, KeyState::Expired { .. })
    }
}

/// A key's identity and times, as the timeline needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTimes {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    pub purpose: KeyPurpose,
}

/// One timeline of keys: the access-token keys (whatever their algorithm: a change of algorithm
/// is a rotation within the lane), or the ID-token keys of one algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Access,
    IdToken(SigningAlgorithm),
}

impl Lane {
    pub fn of(key: &KeyTimes) -> Lane {
        match key.purpose {
            KeyPurpose::Access => Lane::Access,
            KeyPurpose::IdToken => Lane::IdToken(key.alg),
        }
    }

    /// Every lane a deployment keeps.
    pub fn all() -> impl Iterator<Item = Lane> {
        std::iter::once(Lane::Access).chain(ID_TOKEN_ALGS.into_iter().map(Lane::IdToken))
    }

    /// The policy of this lane, given the access tokens' one: an ID-token lane keeps its algorithm
    /// and rotates as often (ID tokens live as long as access tokens).
    pub fn policy(self, access: &KeyPolicy) -> KeyPolicy {
        match self {
            Lane::Access => *access,
            Lane::IdToken(alg) => KeyPolicy { alg, ..*access },
        }
    }

    pub fn purpose(self) -> KeyPurpose {
        match self {
            Lane::Access => KeyPurpose::Access,
            Lane::IdToken(_) => KeyPurpose::IdToken,
        }
    }
}

/// Each key's state at `now`; `keys` sorted by activation.
pub fn states(keys: &[KeyTimes], policy: &KeyPolicy, now: DateTime<Utc>) -> Vec<KeyState> {
    let current = keys.iter().rposition(|key| key.activates_at <= now);
    keys.iter()
        .enumerate()
        .map(|(index, key)| match current {
            _ if key.activates_at > now => KeyState::Next,
            Some(current) if index == current => KeyState::Current,
            _ => {
                // Superseded when the key after it activated (every key before `current` has one).
                let since = keys.get(index + 1).map_or(now, |successor| successor.activates_at);
                let until = since + policy.grace();
                if until > now { KeyState::Retired { since, until } } else { KeyState::Expired { since } }
            }
        })
        .collect()
}

/// A change rotation must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create { alg: SigningAlgorithm, activates_at: DateTime<Utc> },
    Delete { kid: String },
}

/// What to do at `now` so that the keys follow `policy`; `hs256` is the kid of the configured secret.
pub fn plan(keys: &[KeyTimes], policy: &KeyPolicy, hs256: &str, now: DateTime<Utc>) -> Vec<Step> {
    let states = states(keys, policy, now);
    let mut steps: Vec<Step> = keys
        .iter()
        .zip(&states)
        .filter(
            |(_, state)| matches!(state, KeyState::Expired { since } if *since + policy.grace() + DELETE_AFTER <= now),
        )
        .map(|(key, _)| Step::Delete { kid: key.kid.clone() })
        .collect();
    let current = keys.iter().zip(&states).find(|(_, state)| **state == KeyState::Current).map(|(key, _)| key);
    let pending = keys.iter().zip(&states).any(|(key, state)| *state == KeyState::Next && key.alg == policy.alg);
    // An HS256 row signs only if it is this secret's: the legacy row (tokens from before keys had
    // ids) and another secret's row never sign here.
    let can_sign = |key: &KeyTimes| key.alg != SigningAlgorithm::Hs256 || key.kid == hs256;
    let serves_policy = |key: &KeyTimes| key.alg == policy.alg && can_sign(key);
    // No moment without a key allowed to sign: while an asymmetric key waits out its publication
    // delay behind a current key that cannot sign here (a database upgraded from before keys had
    // ids), the configured secret signs (HS256 publishes nothing, so it may sign at once).
    // With no current key at all, a waiting key is a gap only if it is far off: one that activates
    // about now is the first key another instance made a moment ago (its clock read a little later
    // than ours), not a reason for a second key.
    let first_waits_long = keys
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state == KeyState::Next)
        .map(|(key, _)| key.activates_at)
        .min()
        .is_some_and(|at| at > now + chrono::Duration::from_std(RELOAD_EVERY).unwrap_or(chrono::Duration::minutes(1)));
    let gap = current.map_or(first_waits_long, |current| !can_sign(current));
    if gap && policy.alg != SigningAlgorithm::Hs256 {
        steps.push(Step::Create { alg: SigningAlgorithm::Hs256, activates_at: now });
    }
    match current {
        // Nothing yet (a new deployment): the first key signs at once; nobody can have cached a set.
        None if !pending => steps.push(Step::Create { alg: policy.alg, activates_at: now }),
        Some(current) if !serves_policy(current) && !pending => {
            // A new algorithm (or HS256 secret). HS256 publishes nothing: it may sign at once (the
            // other instances load it when its first token reaches them). An asymmetric key is
            // published first, also after HS256: a verifier may hold the empty set HS256 served.
            let immediate = policy.alg == SigningAlgorithm::Hs256;
            let activates_at = if immediate { now } else { now + PUBLICATION_DELAY };
            steps.push(Step::Create { alg: policy.alg, activates_at });
        }
        Some(current) if !pending && policy.alg != SigningAlgorithm::Hs256 => {
            if let Some(period) = policy.rotation
                && current.activates_at + period <= now
            {
                steps.push(Step::Create { alg: policy.alg, activates_at: now + PUBLICATION_DELAY });
            }
        }
        _ => {}
    }
    steps
}

/// The stored keys with their states at `now` (each within its lane), oldest activation first;
/// read only: nothing is made, rotated or decrypted.
pub fn stored_timeline(
    conn: &mut PgConnection,
    policy: &KeyPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<(KeyTimes, KeyState)>, KeyError> {
    let times: Vec<KeyTimes> = db::signing_keys::all(conn)?.iter().filter_map(times_of).collect();
    let mut timeline = Vec::with_capacity(times.len());
    for lane in Lane::all() {
        let keys: Vec<KeyTimes> = times.iter().filter(|key| Lane::of(key) == lane).cloned().collect();
        let states = states(&keys, &lane.policy(policy), now);
        timeline.extend(keys.into_iter().zip(states));
    }
    timeline.sort_by(|(a, _), (b, _)| a.activates_at.cmp(&b.activates_at).then_with(|| a.kid.cmp(&b.kid)));
    Ok(timeline)
}

pub(super) fn times_of(stored: &StoredKey) -> Option<KeyTimes> {
    Some(KeyTimes {
        kid: stored.kid.clone(),
        alg: SigningAlgorithm::parse_stored(&stored.alg)?,
        created_at: stored.created_at,
        activates_at: stored.activates_at,
        purpose: KeyPurpose::parse(&stored.purpose)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: chrono::Duration = chrono::Duration::minutes(15);

    fn policy(alg: SigningAlgorithm) -> KeyPolicy {
        KeyPolicy { alg, rotation: Some(chrono::Duration::days(30)), access_token_ttl: TTL }
    }

    fn key(kid: &str, alg: SigningAlgorithm, activates_at: DateTime<Utc>) -> KeyTimes {
        KeyTimes {
            kid: kid.into(),
            alg,
            created_at: activates_at - PUBLICATION_DELAY,
            activates_at,
            purpose: KeyPurpose::Access,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    const ES: SigningAlgorithm = SigningAlgorithm::Es256;

    #[test]
    fn a_new_deployment_gets_a_key_that_signs_at_once() {
        assert_eq!(plan(&[], &policy(ES), "hs", t0()), vec![Step::Create { alg: ES, activates_at: t0() }]);
    }

    #[test]
    fn a_key_of_the_rotation_age_gets_a_successor_published_before_it_signs() {
        let keys = [key("a", ES, t0())];
        assert_eq!(plan(&keys, &policy(ES), "hs", t0() + chrono::Duration::days(29)), vec![]);
        let at = t0() + chrono::Duration::days(30);
        let steps = plan(&keys, &policy(ES), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }]);
        // Once it exists, nothing more is due, and rotation off means no successor at all.
        let with_next = [key("a", ES, t0()), key("b", ES, at + PUBLICATION_DELAY)];
        assert_eq!(plan(&with_next, &policy(ES), "hs", at + chrono::Duration::minutes(1)), vec![]);
        let off = KeyPolicy { rotation: None, ..policy(ES) };
        assert_eq!(plan(&keys, &off, "hs", t0() + chrono::Duration::days(300)), vec![]);
    }

    #[test]
    fn a_retired_key_stays_until_every_token_it_signed_has_expired() {
        let switch = t0() + chrono::Duration::days(30);
        let keys = [key("a", ES, t0()), key("b", ES, switch)];
        let p = policy(ES);
        let at = |offset: chrono::Duration| states(&keys, &p, switch + offset);
        assert_eq!(states(&keys, &p, switch - chrono::Duration::seconds(1)), vec![KeyState::Current, KeyState::Next]);
        let until = switch + TTL + RETIREMENT_MARGIN;
        assert_eq!(at(chrono::Duration::zero()), vec![KeyState::Retired { since: switch, until }, KeyState::Current]);
        assert_eq!(at(TTL), vec![KeyState::Retired { since: switch, until }, KeyState::Current]);
        assert_eq!(at(TTL + RETIREMENT_MARGIN), vec![KeyState::Expired { since: switch }, KeyState::Current]);
        // Its row goes a day later.
        let later = switch + TTL + RETIREMENT_MARGIN + DELETE_AFTER;
        assert_eq!(plan(&keys, &p, "hs", later), vec![Step::Delete { kid: "a".into() }]);
    }

    #[test]
    fn switching_from_hs256_publishes_the_new_key_first_and_back_signs_at_once() {
        let keys = [key("hs", SigningAlgorithm::Hs256, t0())];
        let at = t0() + chrono::Duration::hours(1);
        let steps = plan(&keys, &policy(ES), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }]);
        let both = [key("hs", SigningAlgorithm::Hs256, t0()), key("es", ES, at)];
        let hs = policy(SigningAlgorithm::Hs256);
        assert_eq!(plan(&both, &hs, "hs", at), vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]);
    }

    #[test]
    fn switching_between_published_algorithms_publishes_the_new_key_first() {
        let keys = [key("es", ES, t0())];
        let at = t0() + chrono::Duration::hours(1);
        let steps = plan(&keys, &policy(SigningAlgorithm::EdDsa), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: SigningAlgorithm::EdDsa, activates_at: at + PUBLICATION_DELAY }]);
    }

    #[test]
    fn the_secret_signs_while_the_first_published_key_waits_behind_the_legacy_row() {
        let legacy = [key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0())];
        let at = t0() + chrono::Duration::days(3);
        let steps = plan(&legacy, &policy(ES), "hs", at);
        assert_eq!(
            steps,
            vec![
                Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at },
                Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }
            ]
        );
        // A database that an earlier version left with only the waiting key behind the legacy row.
        let waiting = [key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0()), key("es", ES, at + PUBLICATION_DELAY)];
        assert_eq!(
            plan(&waiting, &policy(ES), "hs", at),
            vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]
        );
        // Once the secret's row is current, nothing more until the published key takes over.
        let bridged = [
            key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0()),
            key("hs", SigningAlgorithm::Hs256, at),
            key("es", ES, at + PUBLICATION_DELAY),
        ];
        assert_eq!(plan(&bridged, &policy(ES), "hs", at + chrono::Duration::minutes(1)), vec![]);
        // Under HS256 the secret's own row is made at once, as before: no second step.
        let hs = policy(SigningAlgorithm::Hs256);
        assert_eq!(plan(&legacy, &hs, "hs", at), vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]);
    }

    #[test]
    fn a_first_key_made_a_moment_ago_by_another_instance_is_no_gap() {
        // Instance B read its clock a little before A made the first key, which activates at A's now.
        let made_by_a = [key("es", ES, t0() + chrono::Duration::milliseconds(300))];
        assert_eq!(plan(&made_by_a, &policy(ES), "hs", t0()), vec![]);
        // A key that waits out a publication delay with nothing current is one.
        let far = [key("es", ES, t0() + PUBLICATION_DELAY)];
        assert_eq!(
            plan(&far, &policy(ES), "hs", t0()),
            vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: t0() }]
        );
    }

    #[test]
    fn every_instant_has_a_key_that_signs() {
        // Walk a day in 10-minute steps over a handful of starting sets: after applying the plan at
        // each instant, some key that this instance can sign with is current.
        let starts: Vec<Vec<KeyTimes>> = vec![
            vec![],
            vec![key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0())],
            vec![key("other-secret", SigningAlgorithm::Hs256, t0())],
            vec![key("hs", SigningAlgorithm::Hs256, t0())],
            vec![key("es", ES, t0())],
        ];
        for alg in [ES, SigningAlgorithm::EdDsa, SigningAlgorithm::Hs256] {
            for start in &starts {
                let mut keys = start.clone();
                let mut now = t0() + chrono::Duration::minutes(1);
                for _ in 0..144 {
                    for step in plan(&keys, &policy(alg), "hs", now) {
                        match step {
                            Step::Create { alg, activates_at } => {
                                let kid = if alg == SigningAlgorithm::Hs256 {
                                    "hs".to_owned()
                                } else {
                                    format!("{alg:?}{now}")
                                };
                                keys.retain(|key| key.kid != kid);
                                keys.push(KeyTimes {
                                    kid,
                                    alg,
                                    created_at: now,
                                    activates_at,
                                    purpose: KeyPurpose::Access,
                                });
                            }
                            Step::Delete { kid } => keys.retain(|key| key.kid != kid),
                        }
                    }
                    keys.sort_by_key(|key| key.activates_at);
                    let current = keys.iter().rev().find(|key| key.activates_at <= now);
                    assert!(
                        current.is_some_and(|key| key.alg != SigningAlgorithm::Hs256 || key.kid == "hs"),
                        "{alg:?} from {start:?} at {now}: {keys:?}"
                    );
                    now += chrono::Duration::minutes(10);
                }
            }
        }
    }

    #[test]
    fn an_id_token_lane_follows_the_access_policy_with_its_own_algorithm() {
        let access = policy(ES);
        let lane = Lane::IdToken(SigningAlgorithm::Rs256);
        assert_eq!(lane.policy(&access).alg, SigningAlgorithm::Rs256);
        assert_eq!(lane.policy(&access).rotation, access.rotation);
        // Its first key signs at once; a month later its successor is published first, like any key.
        let first = plan(&[], &lane.policy(&access), "hs", t0());
        assert_eq!(first, vec![Step::Create { alg: SigningAlgorithm::Rs256, activates_at: t0() }]);
        let rsa = KeyTimes { purpose: KeyPurpose::IdToken, ..key("rsa", SigningAlgorithm::Rs256, t0()) };
        assert_eq!(Lane::of(&rsa), lane);
        let at = t0() + chrono::Duration::days(30);
        let next = plan(std::slice::from_ref(&rsa), &lane.policy(&access), "hs", at);
        assert_eq!(next, vec![Step::Create { alg: SigningAlgorithm::Rs256, activates_at: at + PUBLICATION_DELAY }]);
    }

    #[test]
    fn a_new_hs256_secret_is_a_new_key() {
        let keys = [key("old-secret", SigningAlgorithm::Hs256, t0())];
        let hs = policy(SigningAlgorithm::Hs256);
        let steps = plan(&keys, &hs, "new-secret", t0());
        assert_eq!(steps, vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: t0() }]);
    }
}
