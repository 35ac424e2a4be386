//! A durable per-user todo list: the store behind the built-in `todo_*`
//! capabilities. Every call names its owner (account and user); a user
//! never sees or changes another user's items.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, UserId};
use crate::time::Timestamp;

/// An item of a user's todo list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    /// Its number in the owner's list, from 1.
    pub number: i64,
    /// The owner's account.
    pub account: AccountId,
    /// The owner.
    pub user: UserId,
    /// What to do.
    pub text: String,
    /// When it was done, if it was.
    pub done_at: Option<Timestamp>,
    /// When it was added.
    pub created_at: Timestamp,
}
