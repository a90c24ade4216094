//! The rules that two requests could break together, decided as pure functions of rows that `db`
//! loaded under their locks and of `now`. `db` loads, calls the rule, and writes what it decided;
//! each rule's unit tests are a table of cases that needs no database.

pub mod admin;
pub mod device;
pub mod lockout;
pub mod rotation;

pub use admin::{AccountState, AdminContext, ChangeDecision, RequestedChange, decide_change};
pub use lockout::{
    ClaimDecision, LockState, LockoutPolicy, decide_claim, decide_failure, decide_release, decide_success,
};
pub use rotation::{FamilyState, PresentedToken, RotationDecision, decide_rotation};
