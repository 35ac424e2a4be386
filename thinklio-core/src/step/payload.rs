//! What each kind of step records: one serde type per step kind's input
//! and output. The harness writes and reads step payloads only through
//! them, and hosts read them the same way ([`Step::input_as`],
//! [`Step::output_as`]); a stored payload that does not parse is a
//! [`PayloadError`] (code `step.corrupt`), never a silent default.
//!
//! The JSON shapes are those Thinklio has always written, so steps stored
//! by earlier versions read back unchanged. Fields added later are
//! optional.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Step, StepError, StepKind};
use crate::error::ErrorCode;
use crate::ids::{FactId, JobId, StepId};
use crate::job::JobState;
use crate::knowledge::Layer;
use crate::model::ToolCall;
use crate::time::Timestamp;

/// A stored payload that is not what its step kind writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {part} of {kind} step {step} cannot be read: {reason}")]
pub struct PayloadError {
    /// The step.
    pub step: StepId,
    /// Its kind.
    pub kind: StepKind,
    /// `input` or `output`.
    pub part: &'static str,
    /// What did not parse.
    pub reason: String,
}

impl PayloadError {
    /// The error as a failed step records it (`step.corrupt`).
    pub fn to_step_error(&self) -> StepError {
        StepError::new(ErrorCode::StepCorrupt, self.to_string())
    }
}

impl Step {
    /// The step's input as its kind's type.
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        T::deserialize(&self.input).map_err(|e| self.payload_error("input", e))
    }

    /// The step's output as its kind's type (`None` while it has none).
    pub fn output_as<T: DeserializeOwned>(&self) -> Result<Option<T>, PayloadError> {
        self.output
            .as_ref()
            .map(|o| T::deserialize(o).map_err(|e| self.payload_error("output", e)))
            .transpose()
    }

    fn payload_error(&self, part: &'static str, e: serde_json::Error) -> PayloadError {
        PayloadError {
            step: self.id,
            kind: self.kind,
            part,
            reason: e.to_string(),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A payload as stored JSON. Payload types hold text, numbers, ids and JSON
/// values only, whose serialization cannot fail.
pub fn to_json<T: Serialize>(payload: &T) -> Value {
    serde_json::to_value(payload).unwrap_or(Value::Null)
}

/// The input of a `context` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextInput {
    /// The size of the message, in bytes.
    pub message_bytes: usize,
}

/// The output of a `context` step: what the model was given besides the
/// message, so a resumed run rebuilds exactly the same context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextOutput {
    /// The size of the system prompt, in bytes.
    #[serde(default)]
    pub system_prompt_bytes: usize,
    /// The history read: turns before this interaction's sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_before_seq: Option<i64>,
    /// The most turns read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
    /// The turns read (and shown: those that fit the budget).
    #[serde(default)]
    pub history_turns: usize,
    /// Older turns read and not shown: past `history_turns` (read ahead by
    /// `summarize_after`, to know when to summarise) or past the budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history_left_out: usize,
    /// The tokens the agent's requests may take
    /// ([`context_budget`](crate::context::context_budget)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_budget: Option<u32>,
    /// The tokens the context took, as counted: system prompt, memory, a
    /// job's report, the history shown, the message and the tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<usize>,
    /// How they were counted (`estimate`, or a tokenizer's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_counted_with: Option<String>,
    /// How many images the message carried (shown with it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub images: usize,
    /// The summary of the older turns shown before the history, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<crate::ids::SummaryId>,
    /// When older turns went unshown past the agent's threshold: the last
    /// of them (a summary through it is asked for with the reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarize_through: Option<i64>,
    /// For a delegate: its depth in the delegation chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_depth: Option<u32>,
    /// The facts recalled, most relevant first.
    #[serde(default)]
    pub facts: Vec<RecalledFact>,
    /// The tokens they take.
    #[serde(default)]
    pub fact_tokens: usize,
    /// How many facts the search found before the token budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts_found: Option<usize>,
    /// Why recall failed, if it did (the step goes on without facts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_error: Option<ErrorCode>,
    /// For a job's follow-up: the job as it was when the step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRecord>,
}

/// One fact a `context` step recalled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalledFact {
    /// The fact.
    pub id: FactId,
    /// Its layer.
    pub layer: Layer,
    /// Its text, as the model saw it.
    pub text: String,
    /// Since when it holds (absent on steps older than dates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_at: Option<Timestamp>,
    /// Its search score.
    #[serde(default)]
    pub score: f32,
}

/// A job as a follow-up's `context` step records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// Its capability.
    pub capability: String,
    /// Its state then.
    pub state: JobState,
    /// Its last progress report.
    #[serde(default)]
    pub progress: Option<Value>,
    /// Its result.
    #[serde(default)]
    pub result: Option<Value>,
    /// Its context bundle.
    #[serde(default)]
    pub context: Option<Value>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What its subjobs had produced, while it had no result of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjobs: Vec<SubjobRecord>,
}

/// A subjob in a [`JobRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjobRecord {
    /// Its capability.
    pub capability: String,
    /// Its state then.
    pub state: JobState,
    /// Its result.
    #[serde(default)]
    pub result: Option<Value>,
}

/// The input of a `think` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkInput {
    /// The model turn, from 1.
    pub turn: u32,
    /// The model asked for.
    pub model: String,
}

/// The output of a `think` step: the model's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThinkOutput {
    /// Its text.
    #[serde(default)]
    pub text: String,
    /// The tools it called.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// For an agent that declares its answer's schema: why this answer
    /// does not match it (the model is asked again, told this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_answer: Option<String>,
}

/// The input of an `act` step: one tool call of a `think` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActInput {
    /// The model turn that asked for it.
    pub turn: u32,
    /// Its position among that turn's calls.
    pub index: usize,
    /// The provider's id of the call.
    pub call_id: String,
    /// The capability called.
    pub name: String,
    /// The arguments as the model wrote them.
    pub arguments: String,
}

impl ActInput {
    /// The input of the `act` step of `call`.
    pub fn new(turn: u32, index: usize, call: &ToolCall) -> Self {
        Self {
            turn,
            index,
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }
    }

    /// The tool call.
    pub fn call(&self) -> ToolCall {
        ToolCall::new(&self.call_id, &self.name, &self.arguments)
    }
}

/// A capability a host dispatches as a job
/// ([`Jobs::dispatch`](crate::runtime::Jobs::dispatch)): the input of an
/// interaction of kind [`Dispatch`](crate::interaction::InteractionKind::Dispatch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DispatchCall {
    /// The capability that does the work.
    pub capability: String,
    /// Its arguments, as its schema asks.
    #[serde(default)]
    pub input: Value,
}

impl DispatchCall {
    /// A call of `capability` with `input`.
    pub fn new(capability: impl Into<String>, input: Value) -> Self {
        Self {
            capability: capability.into(),
            input,
        }
    }

    /// The tool call the dispatch's `act` step makes.
    pub fn tool_call(&self) -> ToolCall {
        ToolCall {
            id: "dispatch".into(),
            name: self.capability.clone(),
            arguments: self.input.to_string(),
        }
    }
}

/// The output of a succeeded `act` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActOutput {
    /// What the capability returned (for a deferred call, a
    /// [`DispatchedJob`]).
    pub result: Value,
}

impl ActOutput {
    /// The job a deferred call wrote, when the result is one.
    pub fn dispatched_job(&self) -> Option<DispatchedJob> {
        DispatchedJob::deserialize(&self.result).ok()
    }
}

/// The result of a deferred `act` step: the job it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchedJob {
    /// The job.
    pub job_id: JobId,
    /// `dispatched`.
    pub status: String,
    /// What the model is told.
    pub note: String,
}

/// The input of an `observe` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObserveInput {
    /// The model turn.
    pub turn: u32,
    /// The call's position among the turn's calls.
    pub index: usize,
    /// The provider's id of the call.
    pub call_id: String,
    /// The `act` step observed.
    pub act_step: StepId,
}

/// The output of an `observe` step: the tool message the model sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObserveOutput {
    /// The call answered.
    pub call_id: String,
    /// The result, or a readable error.
    pub content: String,
    /// Whether it is an error.
    #[serde(default)]
    pub is_error: bool,
    /// When the result was longer than the agent's
    /// `max_tool_result_bytes`: its whole length in bytes (`content` holds
    /// its beginning and a note; the `act` step keeps all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_from: Option<usize>,
}

/// The input of a `respond` step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RespondInput {
    /// The reply.
    #[serde(default)]
    pub text: String,
    /// Written when the job the interaction worked for ended: the step
    /// fails and closes the interaction.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub job_ended: bool,
}

/// The output of a `respond` step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RespondOutput {
    /// The size of the reply, in bytes.
    #[serde(default)]
    pub bytes: usize,
    /// Why the content rules replaced the reply, if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
}

/// A reply the content rules blocked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    /// `policy.content_blocked`.
    pub code: ErrorCode,
    /// The rules' reason.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_read_what_earlier_versions_wrote_and_refuse_the_rest() {
        let act: ActInput = serde_json::from_value(json!({
            "turn": 1, "index": 0, "call_id": "c1", "name": "add", "arguments": "{\"a\":2}"
        }))
        .unwrap();
        assert_eq!(act.call(), ToolCall::new("c1", "add", "{\"a\":2}"));
        let think: ThinkOutput =
            serde_json::from_value(json!({ "text": "5", "tool_calls": [] })).unwrap();
        assert_eq!(think.text, "5");
        // A context step recorded before facts had dates.
        let context: ContextOutput = serde_json::from_value(json!({
            "system_prompt_bytes": 3, "history_turns": 0,
            "facts": [{ "id": FactId::new(), "layer": "user", "text": "Ada likes tea", "score": 0.5 }],
            "fact_tokens": 4
        }))
        .unwrap();
        assert_eq!(context.facts[0].valid_at, None);
        assert!(serde_json::from_value::<ThinkOutput>(json!({ "tool_calls": "many" })).is_err());
        assert!(serde_json::from_value::<ObserveInput>(json!({ "turn": 1 })).is_err());
        let respond = to_json(&RespondInput {
            text: "hi".into(),
            job_ended: false,
        });
        assert_eq!(
            respond,
            json!({ "text": "hi" }),
            "nothing written that was not before"
        );
    }
}
