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
    #[serde(default)]
    pub system_prompt: String,
    /// Names of the capabilities this agent may call.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The agent's trust level; capabilities that require more are invisible to it.
    #[serde(default = "standard")]
    pub trust_level: TrustLevel,
    /// How many `think` steps one interaction may take before it must answer.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// How deep a chain of delegations that starts at this agent may go.
    #[serde(default = "default_max_delegation_depth")]
    pub max_delegation_depth: u32,
    /// How many earlier turns of the session the `context` step includes.
    #[serde(default = "default_history_turns")]
    pub history_turns: u32,
    /// The most output tokens one model call may produce, if limited.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// The most tokens one model request may take, if less than its model's
    /// window allows ([`context_budget`](crate::context::context_budget)):
    /// the `context` step leaves out older history turns that do not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_budget: Option<u32>,
    /// How many older turns may go unshown (past `history_turns` or the
    /// budget) before a summary folds them in (0: never summarise).
    #[serde(default = "default_summarize_after")]
    pub summarize_after: u32,
    /// How long one run of an interaction may take before it is stopped
    /// (`interaction.deadline_exceeded`), if limited; counted from when the
    /// run starts or resumes, so a wait for a decision does not count.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_secs"
    )]
    pub interaction_deadline: Option<std::time::Duration>,
    /// The sampling temperature of its model calls (0 to 2), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling for its model calls (above 0, at most 1), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sequences that end its answers where they appear (at most
    /// [`AgentDefinition::MAX_STOP_SEQUENCES`], none empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The JSON Schema its final answer must match, if it declares one
    /// ([`AgentDefinition::answers_as`]): the answer is JSON, checked; an
    /// answer that does not match is sent back to the model with what is
    /// wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_schema: Option<crate::model::OutputSchema>,
    /// How many answers the model may give for one message before an
    /// answer that still does not match its schema fails the interaction
    /// (`answer.invalid`).
    #[serde(default = "default_answer_attempts")]
    pub answer_attempts: u32,
    /// The most tool calls one model turn may make: calls beyond it are not
    /// run, and the model is told (`capability.too_many_calls`).
    #[serde(default = "default_max_tool_calls")]
    pub max_tool_calls_per_turn: u32,
    /// The longest tool result the model is shown, in bytes: a longer one
    /// is cut (at a character boundary) with a note saying so; the `act`
    /// step keeps it whole.
    #[serde(default = "default_max_tool_result")]
    pub max_tool_result_bytes: u32,
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
    /// Agents it may delegate to, each offered to it as a capability and
    /// narrowed for this caller ([`DelegateTo`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<DelegateTo>,
}

/// An agent another agent may delegate to, kept with the caller's
/// definition: offered to the caller as the capability `name`, and, when
/// the caller delegates through it, narrowed: the delegate may use only
/// `capabilities` of its own (when set), and the chain may go at most
/// `max_depth` further below it (when set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DelegateTo {
    /// The delegate.
    pub agent: AgentId,
    /// The capability's name, as the caller's model sees it (letters,
    /// digits, `_` and `-`, at most 64).
    pub name: String,
    /// What it does, for the caller's model.
    #[serde(default)]
    pub description: String,
    /// The delegate's capabilities it may use when called through this,
    /// when narrowed; its own list otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// How many levels of delegation may follow below the delegate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

impl DelegateTo {
    /// Delegation to `agent`, offered as the capability `name`.
    pub fn new(
        agent: impl Into<AgentId>,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            agent: agent.into(),
            name: name.into(),
            description: description.into(),
            capabilities: None,
            max_depth: None,
        }
    }

    /// The delegate may use only these of its capabilities, called so.
    pub fn only<S: Into<String>>(mut self, capabilities: impl IntoIterator<Item = S>) -> Self {
        self.capabilities = Some(capabilities.into_iter().map(Into::into).collect());
        self
    }

    /// At most `depth` levels of delegation below the delegate.
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = Some(depth);
        self
    }
}

// A definition read from JSON takes `new`'s values for what it leaves
// out, but for its approval mode (`drafts`: asking is the safe default of
// an agent made as data).
fn standard() -> TrustLevel {
    TrustLevel::Standard
}

fn default_max_turns() -> u32 {
    8
}

fn default_max_delegation_depth() -> u32 {
    3
}

fn default_history_turns() -> u32 {
    20
}

fn default_summarize_after() -> u32 {
    8
}

fn default_answer_attempts() -> u32 {
    3
}

fn default_max_tool_calls() -> u32 {
    8
}

fn default_max_tool_result() -> u32 {
    16 * 1024
}

fn drafts() -> crate::approval::ApprovalMode {
    crate::approval::ApprovalMode::Draft
}

pub(crate) fn default_approval_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// An optional duration kept as seconds (fractions allowed).
mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        Ok(secs.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }
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
            trust_level: standard(),
            max_turns: default_max_turns(),
            max_delegation_depth: default_max_delegation_depth(),
            history_turns: default_history_turns(),
            max_output_tokens: None,
            context_budget: None,
            summarize_after: default_summarize_after(),
            interaction_deadline: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            answer_schema: None,
            answer_attempts: default_answer_attempts(),
            max_tool_calls_per_turn: default_max_tool_calls(),
            max_tool_result_bytes: default_max_tool_result(),
            deferred: Vec::new(),
            approval_mode: crate::approval::ApprovalMode::Autopilot,
            approval_timeout: default_approval_timeout(),
            delegates: Vec::new(),
        }
    }

    /// May delegate to another agent, offered as a capability of its own
    /// (added to [`capabilities`](Self::capabilities)).
    pub fn delegate_to(mut self, delegate: DelegateTo) -> Self {
        self.delegates.push(delegate);
        self.offer_delegates();
        self
    }

    /// Adds each delegation's name to the capabilities, where missing (a
    /// definition read from JSON may list a delegation only there).
    pub(crate) fn offer_delegates(&mut self) {
        for d in &self.delegates {
            if !self.capabilities.contains(&d.name) {
                self.capabilities.push(d.name.clone());
            }
        }
    }

    /// The most stop sequences an agent may set (the smallest limit among
    /// the providers: OpenAI takes four).
    pub const MAX_STOP_SEQUENCES: usize = 4;

    /// Sets the sampling temperature of its model calls (0 to 2).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets nucleus sampling for its model calls (above 0, at most 1).
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.top_p = Some(top_p);
        self
    }

    /// Sets the sequences that end its answers.
    pub fn stop<I, S>(mut self, stop: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// Makes the agent answer with JSON matching the schema of `T`
    /// ([`OutputSchema::of`](crate::model::OutputSchema::of)); read the
    /// value with [`Runtime::send_structured`](crate::Runtime::send_structured).
    pub fn answers_as<T: schemars::JsonSchema>(self) -> Self {
        self.answer_schema(crate::model::OutputSchema::of::<T>())
    }

    /// Makes the agent answer with JSON matching `schema`.
    pub fn answer_schema(mut self, schema: crate::model::OutputSchema) -> Self {
        self.answer_schema = Some(schema);
        self
    }

    /// Sets the most tokens one model request may take (at least 512; never
    /// more than the model's window less the output it leaves room for).
    pub fn context_budget(mut self, tokens: u32) -> Self {
        self.context_budget = Some(tokens);
        self
    }

    /// Sets how many older turns may go unshown before a summary folds them
    /// in (0: never summarise).
    pub fn summarize_after(mut self, turns: u32) -> Self {
        self.summarize_after = turns;
        self
    }

    /// Sets how long one run of an interaction may take (from when it
    /// starts or resumes) before it is stopped.
    pub fn interaction_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.interaction_deadline = Some(deadline);
        self
    }

    /// Sets the most tool calls one model turn may make (at least 1).
    pub fn max_tool_calls_per_turn(mut self, calls: u32) -> Self {
        self.max_tool_calls_per_turn = calls;
        self
    }

    /// Sets the longest tool result the model is shown, in bytes (at
    /// least 256).
    pub fn max_tool_result_bytes(mut self, bytes: u32) -> Self {
        self.max_tool_result_bytes = bytes;
        self
    }

    /// Sets how many answers the model may give for one message before one
    /// that does not match the schema fails the interaction (at least 1).
    pub fn answer_attempts(mut self, attempts: u32) -> Self {
        self.answer_attempts = attempts;
        self
    }

    /// Checks the definition's model parameters: a value a provider would
    /// refuse is refused here, when the agent is registered, rather than on
    /// its first message.
    pub fn check(&self) -> Result<(), String> {
        if self.id.as_str().trim().is_empty() || self.id.as_str().len() > 128 {
            return Err("an agent's id is 1 to 128 characters".to_owned());
        }
        if self.model.trim().is_empty() {
            return Err(format!("agent `{}`: the model is empty", self.id));
        }
        for d in &self.delegates {
            let named = !d.name.is_empty()
                && d.name.len() <= 64
                && d.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !named {
                return Err(format!(
                    "agent `{}`: the delegation name `{}` is not 1 to 64 letters, digits, `_` or `-`",
                    self.id,
                    d.name.chars().take(64).collect::<String>()
                ));
            }
            if self.delegates.iter().filter(|o| o.name == d.name).count() > 1 {
                return Err(format!(
                    "agent `{}`: two delegations are named `{}`",
                    self.id, d.name
                ));
            }
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(format!(
                "agent `{}`: temperature {t} is not between 0 and 2",
                self.id
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(format!(
                "agent `{}`: top_p {p} is not above 0 and at most 1",
                self.id
            ));
        }
        if self.stop.len() > Self::MAX_STOP_SEQUENCES {
            return Err(format!(
                "agent `{}`: {} stop sequences; at most {} are allowed",
                self.id,
                self.stop.len(),
                Self::MAX_STOP_SEQUENCES
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(format!("agent `{}`: a stop sequence is empty", self.id));
        }
        if self.max_output_tokens == Some(0) {
            return Err(format!("agent `{}`: max_output_tokens is 0", self.id));
        }
        if self.context_budget.is_some_and(|b| b < 512) {
            return Err(format!(
                "agent `{}`: a context budget below 512 tokens leaves no room for a conversation",
                self.id
            ));
        }
        if self.max_tool_calls_per_turn == 0 {
            return Err(format!("agent `{}`: max_tool_calls_per_turn is 0", self.id));
        }
        if self.max_tool_result_bytes < 256 {
            return Err(format!(
                "agent `{}`: max_tool_result_bytes {} is below 256",
                self.id, self.max_tool_result_bytes
            ));
        }
        if self.answer_attempts == 0 {
            return Err(format!("agent `{}`: answer_attempts is 0", self.id));
        }
        if let Some(schema) = &self.answer_schema
            && let Err(e) = jsonschema::validator_for(&schema.schema)
        {
            return Err(format!(
                "agent `{}`: its answer schema `{}` does not compile: {e}",
                self.id, schema.name
            ));
        }
        Ok(())
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
