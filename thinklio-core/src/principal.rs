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

/// Who acts on a tenant's data in a call of the runtime's API: a user,
/// with the rights the directory gives them, or the host acting for one
/// account as a whole. No actor ever reaches another account's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Actor {
    /// A user: their own data, the data of the team they act for, and
    /// (with the directory enforced) what their role in the account allows.
    User(Principal),
    /// The host acting for an account as a whole (an admin key of an HTTP
    /// host, an operator's command line): anything within that account.
    Account(AccountId),
}

impl Actor {
    /// The account the actor acts in.
    pub fn account(&self) -> AccountId {
        match self {
            Actor::User(p) => p.account,
            Actor::Account(a) => *a,
        }
    }

    /// The user acting, if a user acts (`None` for the host).
    pub fn user(&self) -> Option<crate::ids::UserId> {
        match self {
            Actor::User(p) => Some(p.user),
            Actor::Account(_) => None,
        }
    }
}

impl From<Principal> for Actor {
    fn from(p: Principal) -> Self {
        Actor::User(p)
    }
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Self {
        Actor::User(*p)
    }
}

/// An account, a team or a user: where an assignment makes an agent
/// available, and whose spending a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum Scope {
    /// An account: every user of it.
    Account(AccountId),
    /// A team: its members, acting for it.
    Team(TeamId),
    /// One user.
    User(UserId),
}

impl Scope {
    /// The scope stored as its [`kind`](Self::kind) and [`id`](Self::id).
    pub fn parse(kind: &str, id: &str) -> Result<Self, crate::StoreError> {
        let bad = || crate::StoreError::Corrupt(format!("scope `{kind}:{id}`"));
        Ok(match kind {
            "account" => Scope::Account(id.parse().map_err(|_| bad())?),
            "team" => Scope::Team(id.parse().map_err(|_| bad())?),
            "user" => Scope::User(id.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }

    /// Whether `principal` falls in this scope.
    pub fn covers(&self, principal: &Principal) -> bool {
        match self {
            Scope::Account(a) => *a == principal.account,
            Scope::Team(t) => principal.team == Some(*t),
            Scope::User(u) => *u == principal.user,
        }
    }

    /// `account`, `team` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Account(_) => "account",
            Scope::Team(_) => "team",
            Scope::User(_) => "user",
        }
    }

    /// The scope's id as text.
    pub fn id(&self) -> String {
        match self {
            Scope::Account(a) => a.to_string(),
            Scope::Team(t) => t.to_string(),
            Scope::User(u) => u.to_string(),
        }
    }
}
