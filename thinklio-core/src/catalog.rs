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
//!
//! Agents also come from somewhere ([`AgentOrigin`]): an
//! [`AgentTemplate`] of the account, instantiated with
//! [`AgentOverrides`] (and kept in step with the template while nobody
//! edits the instance: [`SyncReport`]), or a clone of another agent.

use serde::{Deserialize, Serialize};

use crate::agent::AgentDefinition;
use crate::approval::ApprovalMode;
use crate::capability::TrustLevel;
use crate::ids::{AccountId, AgentId, TemplateId, UserId};
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
    /// Where it came from, when it was made from a template or cloned.
    pub origin: Option<AgentOrigin>,
    /// The version of its template its current version was written from;
    /// `None` once someone edited it (or when it has no template).
    pub template_version: Option<u32>,
}

impl StoredAgent {
    /// Its id.
    pub fn id(&self) -> &AgentId {
        &self.definition.id
    }

    /// The template it was made from, if any.
    pub fn template(&self) -> Option<&TemplateId> {
        match &self.origin {
            Some(AgentOrigin::Template { template, .. }) => Some(template),
            _ => None,
        }
    }

    /// Whether it was made from `template` and edited since, so that the
    /// template's changes no longer reach it.
    pub fn diverged_from(&self, template: &TemplateId) -> bool {
        self.template() == Some(template) && self.template_version.is_none()
    }
}

/// Where a stored agent came from, recorded when it is first stored and
/// never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentOrigin {
    /// Made from a template of its account, with these overrides (kept, so
    /// that a template update keeps them too).
    Template {
        /// The template.
        template: TemplateId,
        /// What the instance changes of the template's definition.
        #[serde(default)]
        overrides: AgentOverrides,
    },
    /// Cloned from another agent of its account.
    Clone {
        /// The agent it was cloned from.
        parent: AgentId,
        /// The parent's version it copied.
        parent_version: u32,
    },
}

/// What an agent made from a template changes of the template's
/// definition. Unknown fields are refused, so a misspelt override is an
/// error rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentOverrides {
    /// Another model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Another system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Other capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// Another sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Another output limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Another approval mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<ApprovalMode>,
    /// Another trust level (still within the account's ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_level: Option<TrustLevel>,
}

impl AgentOverrides {
    /// No change: the template as it is.
    pub fn none() -> Self {
        Self::default()
    }

    /// Another model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Another system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Other capabilities.
    pub fn capabilities<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.capabilities = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Another approval mode.
    pub fn approval_mode(mut self, mode: ApprovalMode) -> Self {
        self.approval_mode = Some(mode);
        self
    }

    /// The definition of agent `id` made from `template` with these
    /// overrides.
    pub fn apply(&self, template: &AgentDefinition, id: AgentId) -> AgentDefinition {
        let mut agent = template.clone();
        agent.id = id;
        if let Some(model) = &self.model {
            agent.model.clone_from(model);
        }
        if let Some(prompt) = &self.system_prompt {
            agent.system_prompt.clone_from(prompt);
        }
        if let Some(capabilities) = &self.capabilities {
            agent.capabilities.clone_from(capabilities);
        }
        if let Some(t) = self.temperature {
            agent.temperature = Some(t);
        }
        if let Some(n) = self.max_output_tokens {
            agent.max_output_tokens = Some(n);
        }
        if let Some(mode) = self.approval_mode {
            agent.approval_mode = mode;
        }
        if let Some(level) = self.trust_level {
            agent.trust_level = level;
        }
        agent
    }
}

/// An agent template of an account: what agents made from it start as.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentTemplate {
    /// Its id.
    pub id: TemplateId,
    /// The account that owns it; only its members make agents from it.
    pub account: AccountId,
    /// Its version, from 1; every change raises it.
    pub version: u32,
    /// What it holds.
    pub spec: TemplateSpec,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a template holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TemplateSpec {
    /// What it is for, for people choosing one.
    #[serde(default)]
    pub description: String,
    /// The definition its agents start from: prompt, model, parameters,
    /// capabilities, delegations, approval mode. Its `id` is replaced by
    /// each agent's own.
    pub definition: AgentDefinition,
    /// Seed knowledge: facts (free text) every agent made from it starts
    /// with in its agent layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knowledge: Vec<String>,
}

impl TemplateSpec {
    /// The most seed facts a template holds.
    pub const MAX_KNOWLEDGE: usize = 200;
    /// The longest seed fact, in bytes.
    pub const MAX_FACT_BYTES: usize = 4_000;
    /// The longest description, in bytes.
    pub const MAX_DESCRIPTION_BYTES: usize = 4_000;

    /// A template of `definition`, without description or knowledge.
    pub fn new(definition: AgentDefinition) -> Self {
        Self {
            description: String::new(),
            definition,
            knowledge: Vec::new(),
        }
    }

    /// With a description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// With a seed fact.
    pub fn knows(mut self, fact: impl Into<String>) -> Self {
        self.knowledge.push(fact.into());
        self
    }

    /// Why it cannot be stored as template `id`, if it cannot.
    pub fn check(&self, id: &TemplateId) -> Result<(), String> {
        if id.as_str().trim().is_empty() || id.as_str().len() > 128 {
            return Err("a template's id is 1 to 128 characters".to_owned());
        }
        if self.description.len() > Self::MAX_DESCRIPTION_BYTES {
            return Err(format!(
                "template `{id}`: the description is longer than {} bytes",
                Self::MAX_DESCRIPTION_BYTES
            ));
        }
        if self.knowledge.len() > Self::MAX_KNOWLEDGE {
            return Err(format!(
                "template `{id}`: more than {} seed facts",
                Self::MAX_KNOWLEDGE
            ));
        }
        if let Some(f) = self
            .knowledge
            .iter()
            .find(|f| f.trim().is_empty() || f.len() > Self::MAX_FACT_BYTES)
        {
            return Err(format!(
                "template `{id}`: a seed fact is empty or longer than {} bytes ({} bytes)",
                Self::MAX_FACT_BYTES,
                f.len()
            ));
        }
        self.definition
            .check()
            .map_err(|e| format!("template `{id}`: {e}"))
    }
}

/// A template to store as its next version.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewTemplate {
    /// Its id.
    pub id: TemplateId,
    /// The account it belongs to (a template stays with the account that
    /// first stored it).
    pub account: AccountId,
    /// What it holds.
    pub spec: TemplateSpec,
    /// When set, the write succeeds only if this is the current version
    /// (0: it must not exist yet).
    pub expected_version: Option<u32>,
}

impl NewTemplate {
    /// The next version of template `id` of `account`.
    pub fn new(id: TemplateId, account: AccountId, spec: TemplateSpec) -> Self {
        Self {
            id,
            account,
            spec,
            expected_version: None,
        }
    }

    /// Only if the template's current version is `version` (0: a new one).
    pub fn expecting(mut self, version: u32) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// The rule both stores apply: given the template as stored (its owner
    /// and version), the version to write, or why not.
    pub fn next_version(
        &self,
        current: Option<(AccountId, u32)>,
    ) -> Result<u32, crate::StoreError> {
        next_version(
            "template",
            self.id.as_str(),
            self.account,
            current,
            self.expected_version,
        )
    }

    /// What it holds as stored: JSON.
    pub fn spec_json(&self) -> String {
        serde_json::to_string(&self.spec).unwrap_or_default()
    }
}

/// What changing a template did to the agents made from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SyncReport {
    /// The template's version now.
    pub version: u32,
    /// Agents that follow it: each now at the template's version (with its
    /// overrides), or already there.
    pub updated: Vec<AgentId>,
    /// Agents edited since they were made from it: left as they are.
    pub diverged: Vec<AgentId>,
    /// Agents the new version could not be written to, and why (the
    /// account's policy, a circle of delegation, archived).
    pub refused: Vec<(AgentId, String)>,
}

/// What cloning an agent copies besides its definition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CloneOptions {
    /// Copy the parent's current agent-layer facts.
    #[serde(default)]
    pub knowledge: bool,
    /// Carry each of the parent's sessions over: a session of the clone
    /// for the same person, channel and chat, starting from the parent
    /// session's latest summary (each stays with its own user).
    #[serde(default)]
    pub summaries: bool,
}

impl CloneOptions {
    /// The definition only.
    pub fn definition_only() -> Self {
        Self::default()
    }

    /// The definition, the agent-layer facts and the sessions' summaries.
    pub fn everything() -> Self {
        Self {
            knowledge: true,
            summaries: true,
        }
    }
}

/// What cloning an agent made.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Cloned {
    /// The clone, with its parent recorded in its origin.
    pub agent: StoredAgent,
    /// The agent-layer facts copied.
    pub facts: usize,
    /// The sessions carried over with their summary.
    pub summaries: usize,
}

/// The version rule of stored agents and templates: a thing stays with
/// the account that first stored it, and an expected version must be the
/// current one.
fn next_version(
    kind: &str,
    id: &str,
    account: AccountId,
    current: Option<(AccountId, u32)>,
    expected: Option<u32>,
) -> Result<u32, crate::StoreError> {
    let version = match current {
        Some((owner, _)) if owner != account => {
            return Err(crate::StoreError::Conflict(format!(
                "{kind} `{id}` belongs to another account"
            )));
        }
        Some((_, version)) => version,
        None => 0,
    };
    if let Some(expected) = expected
        && expected != version
    {
        return Err(crate::StoreError::Conflict(format!(
            "{kind} `{id}` is at version {version}, not {expected}: read it again and redo the change"
        )));
    }
    Ok(version + 1)
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
    /// Where the agent comes from; kept only when it is first stored.
    pub origin: Option<AgentOrigin>,
    /// The version of its template this definition was written from;
    /// `None` for an edit (which makes the agent diverge from it).
    pub template_version: Option<u32>,
}

impl NewAgentVersion {
    /// The next version of `definition` for `account`, written by `by`.
    pub fn new(account: AccountId, definition: AgentDefinition, by: Option<UserId>) -> Self {
        Self {
            account,
            definition,
            by,
            expected_version: None,
            origin: None,
            template_version: None,
        }
    }

    /// Only if the agent's current version is `version` (0: a new agent).
    pub fn expecting(mut self, version: u32) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Coming from `origin` (kept when the agent is first stored).
    pub fn from_origin(mut self, origin: AgentOrigin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Written from version `version` of the agent's template.
    pub fn from_template_version(mut self, version: u32) -> Self {
        self.template_version = Some(version);
        self
    }

    /// The origin as stored: JSON, when there is one.
    pub fn origin_json(&self) -> Option<String> {
        self.origin
            .as_ref()
            .map(|o| serde_json::to_string(o).unwrap_or_default())
    }

    /// The rule both stores apply before writing: given the agent as
    /// stored (its owner, version and state), the version to write, or
    /// why not (a [`StoreError::Conflict`](crate::StoreError::Conflict)).
    pub fn next_version(
        &self,
        current: Option<(AccountId, u32, AgentState)>,
    ) -> Result<u32, crate::StoreError> {
        let id = &self.definition.id;
        let version = next_version(
            "agent",
            id.as_str(),
            self.account,
            current.map(|(owner, version, _)| (owner, version)),
            self.expected_version,
        )?;
        if current.is_some_and(|(_, _, state)| state == AgentState::Archived) {
            return Err(crate::StoreError::Conflict(format!(
                "agent `{id}` is archived and changes no more"
            )));
        }
        Ok(version)
    }

    /// The definition as stored: JSON.
    pub fn definition_json(&self) -> String {
        serde_json::to_string(&self.definition).unwrap_or_default()
    }
}
