//! Values parsed and validated at the edge: once one of these exists, it is known to be well formed;
//! and, in [`rules`], the decisions made over rows loaded under their locks. Nothing here knows
//! about HTTP or the database's connections.

mod account;
mod address;
mod client;
mod event;
pub mod form;
mod item;
mod password;
mod role;
pub mod rules;
mod scope;
mod username;

pub use account::{Email, EmailError, FullName, FullNameError};
pub use address::AddressBucket;
pub use client::{
    ClientDraft, ClientField, ClientKind, GrantType, IdTokenAlg, InvalidClient, StoredSecret, ValidClient,
    default_grants,
};
pub use event::{Channel, EventKind, FailureReason, UnknownName};
pub use item::{ItemDraft, ItemDraftError};
pub use password::{NewPassword, PasswordError, WeakPassword};
pub use role::{RoleName, RoleNameError, RoleScopes};
pub use scope::{ScopeName, ScopeNameError, ScopeSet};
pub use username::{Username, UsernameError};
