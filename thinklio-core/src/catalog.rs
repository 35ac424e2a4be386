//! Agents as data: definitions kept in the store, each change a new
//! version, with a lifecycle.
//!
//! An agent put through [`Directory::put_agent`](crate::runtime::Directory::put_agent)
//! is stored ([`AgentStore`](crate::store::AgentStore)): its definition as
//! JSON, a version number that every change raises, the account that owns
//! it and its [`AgentState`]. Every runtime on the store serves it (on a
//! shared store each new message reads its current version, so a change
//! made through one process is served by all at their next message), and
//! each interaction records the version it runs with
//! ([`Interaction::agent_version`](crate::Interaction::agent_version)), so
//! a resumed run keeps the definition it started with. Agents registered
//! in code are not stored, and stay read-only to the API.

use serde::{Deserialize, Serialize};

use crate::agent::AgentDefinition;
use crate::ids::{AccountId, AgentId, UserId};
use crate::time::Timestamp;

/// Where a stored agent stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentState {
    /// Takes messages.
    #[default]
    Active,
    /// Refuses new messages (`agent.paused`) until resumed; what it
    /// started goes on, and its sessions and history stay.
    Paused,
    /// Takes no new work, for good (`agent.archived`); its history stays.
    Archived,
}

crate::step::str_enum!(AgentState, "agent state",
    AgentState::Active => "active",
    AgentState::Paused => "paused",
    AgentState::Archived => "archived",
);

/// A stored agent: its current definition and where it stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredAgent {
    /// The definition of its current version.
    pub definition: AgentDefinition,
    /// The account that owns it.
    pub account: AccountId,
    /// Its current version, from 1.
    pub version: u32,
    /// Where it stands.
    pub state: AgentState,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When its definition or state last changed.
    pub updated_at: Timestamp,
}

impl StoredAgent {
    /// Its id.
    pub fn id(&self) -> &AgentId {
        &self.definition.id
    }
}

/// One version of a stored agent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentVersion {
    /// The agent.
    pub agent_id: AgentId,
    /// The version, from 1.
    pub version: u32,
    /// The definition it had.
    pub definition: AgentDefinition,
    /// Who wrote it (`None`: the host, acting for the account).
    pub by: Option<UserId>,
    /// When.
    pub at: Timestamp,
}

/// A definition to store as an agent's next version.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewAgentVersion {
    /// The account it belongs to: an agent stays with the account that
    /// first stored it.
    pub account: AccountId,
    /// The definition.
    pub definition: AgentDefinition,
    /// Who writes it.
    pub by: Option<UserId>,
    /// When set, the write succeeds only if this is the current version
    /// (0: the agent must not exist yet): two editors cannot overwrite
    /// each other's change unseen.
    pub expected_version: Option<u32>,
}

impl NewAgentVersion {
    /// The next version of `definition` for `account`, written by `by`.
    pub fn new(account: AccountId, definition: AgentDefinition, by: Option<UserId>) -> Self {
        Self {
            account,
            definition,
            by,
            expected_version: None,
        }
    }

    /// Only if the agent's current version is `version` (0: a new agent).
    pub fn expecting(mut self, version: u32) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// The rule both stores apply before writing: given the agent as
    /// stored (its owner, version and state), the version to write, or
    /// why not (a [`StoreError::Conflict`](crate::StoreError::Conflict)).
    pub fn next_version(
        &self,
        current: Option<(AccountId, u32, AgentState)>,
    ) -> Result<u32, crate::StoreError> {
        let id = &self.definition.id;
        let (version, state) = match current {
            Some((owner, _, _)) if owner != self.account => {
                return Err(crate::StoreError::Conflict(format!(
                    "agent `{id}` belongs to another account"
                )));
            }
            Some((_, version, state)) => (version, Some(state)),
            None => (0, None),
        };
        if let Some(expected) = self.expected_version
            && expected != version
        {
            return Err(crate::StoreError::Conflict(format!(
                "agent `{id}` is at version {version}, not {expected}: read it again and redo the change"
            )));
        }
        if state == Some(AgentState::Archived) {
            return Err(crate::StoreError::Conflict(format!(
                "agent `{id}` is archived and changes no more"
            )));
        }
        Ok(version + 1)
    }

    /// The definition as stored: JSON.
    pub fn definition_json(&self) -> String {
        serde_json::to_string(&self.definition).unwrap_or_default()
    }
}
