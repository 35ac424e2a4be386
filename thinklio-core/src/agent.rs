//! Agent definitions.

use serde::{Deserialize, Serialize};

use crate::capability::TrustLevel;
use crate::ids::AgentId;

/// An agent: a model, a system prompt, the capabilities it may use and its limits.
///
/// ```
/// use thinklio_core::{AgentDefinition, TrustLevel};
/// let agent = AgentDefinition::new("assistant", "gpt-4o-mini")
///     .system_prompt("You are terse.")
///     .capabilities(["clock", "calculator"])
///     .trust_level(TrustLevel::Standard)
///     .max_turns(6);
/// assert_eq!(agent.max_turns, 6);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentDefinition {
    /// The agent's id.
    pub id: AgentId,
    /// The model id passed to the chat model (`gpt-4o-mini`, `claude-sonnet-4-5`, ...).
    pub model: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Names of the capabilities this agent may call.
    pub capabilities: Vec<String>,
    /// The agent's trust level; capabilities that require more are invisible to it.
    pub trust_level: TrustLevel,
    /// How many `think` steps one interaction may take before it must answer.
    pub max_turns: u32,
    /// How deep a chain of delegations that starts at this agent may go.
    pub max_delegation_depth: u32,
    /// How many earlier turns of the session the `context` step includes.
    pub history_turns: u32,
    /// The most output tokens one model call may produce, if limited.
    pub max_output_tokens: Option<u32>,
    /// Capabilities this agent runs as jobs (`deferred` mode) even when
    /// their manifest's default mode is immediate.
    #[serde(default)]
    pub deferred: Vec<String>,
    /// How much it may do without asking a person (narrowed by the
    /// account's policy; see [`crate::approval`]). [`AgentDefinition::new`]
    /// starts on autopilot; a definition read as data (JSON, as an API
    /// takes it) that leaves the mode out drafts: what nobody chose never
    /// acts unasked.
    #[serde(default = "drafts")]
    pub approval_mode: crate::approval::ApprovalMode,
    /// How long a proposed call waits for a decision before it expires
    /// (the model is told).
    #[serde(default = "default_approval_timeout", with = "duration_secs")]
    pub approval_timeout: std::time::Duration,
}

fn drafts() -> crate::approval::ApprovalMode {
    crate::approval::ApprovalMode::Draft
}

fn default_approval_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// A duration kept as whole seconds.
mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl AgentDefinition {
    /// An agent with defaults: no capabilities, standard trust, 8 turns,
    /// delegation depth 3, 20 turns of history.
    pub fn new(id: impl Into<AgentId>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            system_prompt: String::new(),
            capabilities: Vec::new(),
            trust_level: TrustLevel::Standard,
            max_turns: 8,
            max_delegation_depth: 3,
            history_turns: 20,
            max_output_tokens: None,
            deferred: Vec::new(),
            approval_mode: crate::approval::ApprovalMode::Autopilot,
            approval_timeout: default_approval_timeout(),
        }
    }

    /// Sets how much the agent may do without asking a person: `draft`
    /// makes every call that is not read-only wait for a decision,
    /// `observe` runs read-only calls only.
    pub fn approval_mode(mut self, mode: crate::approval::ApprovalMode) -> Self {
        self.approval_mode = mode;
        self
    }

    /// Sets how long a proposed call waits for a decision (at least a second).
    pub fn approval_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.approval_timeout = timeout.max(std::time::Duration::from_secs(1));
        self
    }

    /// Sets the system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = prompt.into();
        self
    }

    /// Sets the capabilities the agent may call, by name.
    pub fn capabilities<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the trust level.
    pub fn trust_level(mut self, level: TrustLevel) -> Self {
        self.trust_level = level;
        self
    }

    /// Sets the most `think` steps per interaction (at least 1).
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = turns.max(1);
        self
    }

    /// Sets the delegation depth limit.
    pub fn max_delegation_depth(mut self, depth: u32) -> Self {
        self.max_delegation_depth = depth;
        self
    }

    /// Sets how many earlier turns of the session the context includes.
    pub fn history_turns(mut self, turns: u32) -> Self {
        self.history_turns = turns;
        self
    }

    /// Runs these capabilities as jobs: the `act` step dispatches a job and
    /// succeeds at once, and the result comes back in a follow-up
    /// interaction. (A capability whose manifest says `interactive` is never
    /// deferred.)
    pub fn defer<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.deferred = names.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the output tokens of each model call.
    pub fn max_output_tokens(mut self, tokens: u32) -> Self {
        self.max_output_tokens = Some(tokens);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::ApprovalMode;

    #[test]
    fn an_agent_read_as_data_without_a_mode_drafts() {
        let mut json = serde_json::to_value(AgentDefinition::new("a", "m")).unwrap();
        assert_eq!(
            json["approval_mode"], "autopilot",
            "built in code: autopilot"
        );
        json.as_object_mut().unwrap().remove("approval_mode");
        let read: AgentDefinition = serde_json::from_value(json).unwrap();
        assert_eq!(read.approval_mode, ApprovalMode::Draft);
        let round: AgentDefinition =
            serde_json::from_value(serde_json::to_value(&read).unwrap()).unwrap();
        assert_eq!(round, read, "a chosen mode is kept");
    }
}
