//! The directory: accounts, teams, users with roles, which account owns each
//! agent, and assignments that make agents available at account, team or
//! user scope, optionally narrowing their capabilities.
//!
//! With [`RuntimeConfig::enforce_directory`](crate::RuntimeConfig) on, every
//! runtime call that acts for a principal is checked against it: the user
//! must be a member of the account (and of the team it acts for), the agent
//! must belong to that account and be assigned to the principal, and the
//! capabilities the agent may use are its own, narrowed by every applicable
//! assignment and by the account's policy. Assignments only ever narrow.

use crate::error::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::capability::TrustLevel;
use crate::ids::{AccountId, AgentId, TeamId, UserId};
use crate::knowledge::Cardinality;
use crate::principal::{Principal, Scope};

/// A user's role in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    /// Reads only.
    Viewer,
    /// Changes data, agents included.
    Editor,
    /// Manages the account's settings and members.
    Admin,
    /// Owns the account.
    Owner,
}

crate::step::str_enum!(AccountRole, "account role",
    AccountRole::Viewer => "viewer",
    AccountRole::Editor => "editor",
    AccountRole::Admin => "admin",
    AccountRole::Owner => "owner",
);

/// An account's policy over the capabilities of all its agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPolicy {
    /// When set, only these capabilities may be used by the account's agents.
    pub allow: Option<BTreeSet<String>>,
    /// These capabilities may never be used by the account's agents.
    pub deny: BTreeSet<String>,
    /// The deepest delegation chain allowed in the account, if limited.
    pub max_delegation_depth: Option<u32>,
    /// The highest trust level any agent may have while it serves the
    /// account (a higher one is capped to it at run time), and the highest
    /// an editor may give an agent through
    /// [`Directory::put_agent`](crate::runtime::Directory::put_agent). Unset, agents of
    /// the host keep their level and agents put through the runtime get at
    /// most [`AccountPolicy::DEFAULT_TRUST_CEILING`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_trust_level: Option<TrustLevel>,
    /// Predicates the account declares single- or many-valued, overriding
    /// the built-in list ([`SINGLE_VALUED`](crate::knowledge::SINGLE_VALUED))
    /// and what the extractor says; compared as
    /// [`predicate_key`](crate::knowledge::predicate_key) writes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cardinality: BTreeMap<String, Cardinality>,
    /// The least careful approval mode any agent may run in while it serves
    /// the account: an agent's own mode is narrowed to it (the most careful
    /// wins). Unset, agents keep their mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<crate::approval::ApprovalMode>,
    /// The least role that may decide about calls proposed in other
    /// users' sessions (the session's own user always may). Unset, an
    /// admin (or the owner). Applies with the directory enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_role: Option<AccountRole>,
}

impl AccountPolicy {
    /// The highest trust level an agent put through the runtime API may
    /// have when the account's policy names none.
    pub const DEFAULT_TRUST_CEILING: TrustLevel = TrustLevel::Standard;

    /// Whether the policy lets `capability` be used.
    pub fn allows(&self, capability: &str) -> bool {
        !self.deny.contains(capability)
            && self.allow.as_ref().is_none_or(|a| a.contains(capability))
    }

    /// Why an agent definition written by a member of the account goes
    /// beyond this policy, if it does: a trust level above the ceiling, or
    /// a capability the policy does not allow.
    pub fn refuses_agent(&self, agent: &crate::agent::AgentDefinition) -> Option<String> {
        let ceiling = self.max_trust_level.unwrap_or(Self::DEFAULT_TRUST_CEILING);
        if agent.trust_level > ceiling {
            return Some(format!(
                "trust level {:?} is above the account's ceiling {ceiling:?}",
                agent.trust_level
            ));
        }
        let refused: Vec<&str> = agent
            .capabilities
            .iter()
            .filter(|c| !self.allows(c))
            .map(String::as_str)
            .collect();
        (!refused.is_empty())
            .then(|| format!("the account's policy does not allow {}", refused.join(", ")))
    }
}

/// An agent made available at a scope, optionally narrowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The agent.
    pub agent_id: AgentId,
    /// Where it is available.
    pub scope: Scope,
    /// When set, the agent may use only these of its capabilities here.
    pub capabilities: Option<BTreeSet<String>>,
    /// When set, the least careful approval mode the agent may run in here
    /// (the most careful of the agent's, the assignments' and the
    /// account's wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<crate::approval::ApprovalMode>,
}

/// What the directory says about a principal and an agent, for one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The account's policy.
    pub policy: AccountPolicy,
    /// The assignments of the agent that apply to the principal.
    pub assignments: Vec<Assignment>,
}

impl Access {
    /// The most careful approval mode the policy and the assignments set,
    /// if any sets one.
    pub fn approval_ceiling(&self) -> Option<crate::approval::ApprovalMode> {
        self.assignments
            .iter()
            .filter_map(|a| a.approval_mode)
            .chain(self.policy.approval_mode)
            .min()
    }

    /// Whether `capability` survives every applicable narrowing and the policy.
    pub fn allows(&self, capability: &str) -> bool {
        self.policy.allows(capability)
            && self.assignments.iter().all(|a| {
                a.capabilities
                    .as_ref()
                    .is_none_or(|c| c.contains(capability))
            })
    }
}

/// Why the directory refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The user is not a member of the account.
    #[error("user {user} is not a member of account {account}")]
    NotAMember {
        /// The user.
        user: UserId,
        /// The account.
        account: AccountId,
    },
    /// The principal acts for a team it is not in, or of another account.
    #[error("user {user} is not a member of team {team} of account {account}")]
    NotInTeam {
        /// The user.
        user: UserId,
        /// The team.
        team: TeamId,
        /// The account.
        account: AccountId,
    },
    /// The agent belongs to no account or to another one.
    #[error("agent `{agent}` does not belong to account {account}")]
    ForeignAgent {
        /// The agent.
        agent: AgentId,
        /// The principal's account.
        account: AccountId,
    },
    /// The template belongs to another account.
    #[error("template `{template}` does not belong to account {account}")]
    ForeignTemplate {
        /// The template.
        template: crate::ids::TemplateId,
        /// The actor's account.
        account: AccountId,
    },
    /// No assignment makes the agent available to the principal.
    #[error("agent `{agent}` is not assigned to this user, their team or their account")]
    NotAssigned {
        /// The agent.
        agent: AgentId,
    },
    /// The agent was registered by the host in code: it is read-only
    /// through the runtime API.
    #[error("agent `{agent}` belongs to the host and cannot be changed through the runtime API")]
    HostAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The agent definition goes beyond the account's policy.
    #[error("agent `{agent}` goes beyond the account's policy: {reason}")]
    BeyondPolicy {
        /// The agent.
        agent: AgentId,
        /// What the policy does not allow.
        reason: String,
    },
    /// The data belongs to another account than the actor's.
    #[error("that belongs to another account than {account}")]
    OtherAccount {
        /// The actor's account.
        account: AccountId,
    },
    /// The user's role does not allow the change.
    #[error("a {role} of account {account} cannot {action}")]
    RoleTooLow {
        /// The user's role.
        role: AccountRole,
        /// The account.
        account: AccountId,
        /// What was refused.
        action: &'static str,
    },
}

impl AccessError {
    /// A stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AccessError::NotAMember { .. } => ErrorCode::DirectoryNotAMember,
            AccessError::NotInTeam { .. } => ErrorCode::DirectoryNotInTeam,
            AccessError::ForeignAgent { .. } => ErrorCode::DirectoryForeignAgent,
            AccessError::ForeignTemplate { .. } => ErrorCode::DirectoryForeignTemplate,
            AccessError::NotAssigned { .. } => ErrorCode::DirectoryNotAssigned,
            AccessError::RoleTooLow { .. } => ErrorCode::DirectoryRoleTooLow,
            AccessError::HostAgent { .. } => ErrorCode::DirectoryHostAgent,
            AccessError::BeyondPolicy { .. } => ErrorCode::DirectoryBeyondPolicy,
            AccessError::OtherAccount { .. } => ErrorCode::DirectoryOtherAccount,
        }
    }
}

/// A host's content rules: a check of every inbound message and every reply.
/// A message it blocks is answered with a refusal that gives the reason; a
/// reply it blocks is replaced by one. Either way the reason is recorded on
/// the step (`policy.content_blocked`).
#[async_trait::async_trait]
pub trait ContentRules: Send + Sync + 'static {
    /// Checks an inbound message; `Err(reason)` blocks it.
    async fn check_message(&self, principal: &Principal, text: &str) -> Result<(), String>;

    /// Checks a reply before it is sent; `Err(reason)` blocks it.
    async fn check_reply(&self, principal: &Principal, text: &str) -> Result<(), String>;
}
