//! Who an interaction acts for.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AccountId, TeamId, UserId};

/// Who an interaction acts for: an account (the tenancy boundary), an optional
/// team inside it, and a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The account: the tenancy boundary.
    pub account: AccountId,
    /// The team the interaction runs for, if any.
    pub team: Option<TeamId>,
    /// The user.
    pub user: UserId,
}

impl Principal {
    /// A principal for a user of an account, with no team.
    pub fn new(account: AccountId, user: UserId) -> Self {
        Self {
            account,
            team: None,
            user,
        }
    }

    /// The same principal acting for `team`.
    pub fn with_team(mut self, team: TeamId) -> Self {
        self.team = Some(team);
        self
    }

    /// The one principal of a single-user embedding (a CLI, a desktop app):
    /// fixed ids, so that every run of the program finds the same sessions.
    pub fn local() -> Self {
        Self::new(
            AccountId::from_uuid(Uuid::from_u128(1)),
            UserId::from_uuid(Uuid::from_u128(1)),
        )
    }
}
