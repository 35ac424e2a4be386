//! Steps: the persisted units of execution of an interaction.
//!
//! A step is written before its work starts and after it ends. Its state moves
//! only along `created → running → succeeded | failed`; a store rejects every
//! other transition with [`StoreError::IllegalTransition`](crate::StoreError).
//! A step stores its own delta (the model's message, the tool call, the
//! result), never a copy of the transcript: the transcript of an interaction is
//! rebuilt by reading its steps in order.
//!
//! Payloads (`input`, `output`) are stored as JSON, unencrypted; each kind's
//! shape is a type of [`payload`], read with [`Step::input_as`] and
//! [`Step::output_as`].

pub mod payload;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capability::SideEffect;
use crate::error::ErrorCode;
use crate::ids::{InteractionId, StepId};
use crate::time::Timestamp;
use crate::usage::{Cost, TokenUsage};

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// Assemble the model's context: system prompt, history, knowledge.
    Context,
    /// One model call.
    Think,
    /// One capability invocation.
    Act,
    /// Turn an `act` outcome into what the model sees.
    Observe,
    /// Write the answer to the outbox.
    Respond,
}

/// How a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepMode {
    /// Runs now; the interaction waits for it.
    Immediate,
    /// Waits for the user (a confirmation, a choice).
    Interactive,
    /// Dispatched as a job; the step succeeds on dispatch.
    Deferred,
}

/// A step's state. The only transitions are `created → running`,
/// `running → succeeded | failed`, and for a call that needs a person's
/// decision `running → waiting` then `waiting → running` (approved) or
/// `waiting → failed` (rejected or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Written, not started.
    Created,
    /// Started; its outcome is not yet known.
    Running,
    /// An `act` step whose call waits for a person's decision; its output
    /// is the [`Proposal`](crate::approval::Proposal).
    Waiting,
    /// Ended well.
    Succeeded,
    /// Ended badly; `error` says why.
    Failed,
}

impl StepState {
    /// Whether a step may move from `self` to `next`.
    pub fn can_become(self, next: StepState) -> bool {
        matches!(
            (self, next),
            (StepState::Created, StepState::Running)
                | (StepState::Running, StepState::Succeeded)
                | (StepState::Running, StepState::Failed)
                | (StepState::Running, StepState::Waiting)
                | (StepState::Waiting, StepState::Running)
                | (StepState::Waiting, StepState::Failed)
        )
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Failed)
    }
}

macro_rules! str_enum {
    ($ty:ty, $err:literal, $($variant:path => $s:literal),+ $(,)?) => {
        impl $ty {
            /// Every stable name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            /// The stable name used in stores, events and spans.
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $s),+ }
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = crate::store::StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($variant),)+
                    other => Err(crate::store::StoreError::Corrupt(format!(concat!("unknown ", $err, " `{}`"), other))),
                }
            }
        }
    };
}
pub(crate) use str_enum;

str_enum!(StepKind, "step kind",
    StepKind::Context => "context",
    StepKind::Think => "think",
    StepKind::Act => "act",
    StepKind::Observe => "observe",
    StepKind::Respond => "respond",
);
str_enum!(StepMode, "step mode",
    StepMode::Immediate => "immediate",
    StepMode::Interactive => "interactive",
    StepMode::Deferred => "deferred",
);
str_enum!(StepState, "step state",
    StepState::Created => "created",
    StepState::Running => "running",
    StepState::Waiting => "waiting",
    StepState::Succeeded => "succeeded",
    StepState::Failed => "failed",
);

/// Why a step failed: a stable code hosts can match on, and a readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// A stable code such as `capability.invalid_arguments`.
    pub code: ErrorCode,
    /// What happened, for people and for the model.
    pub message: String,
}

impl StepError {
    /// A step error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Whether a failure with this error ends its interaction on a
    /// `context`, `think` or `respond` step ([`ErrorCode::NOT_TERMINAL`]).
    pub fn is_terminal(&self) -> bool {
        !ErrorCode::NOT_TERMINAL.contains(&self.code)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's id.
    pub id: StepId,
    /// The interaction it belongs to.
    pub interaction_id: InteractionId,
    /// Its position in the interaction, from 0.
    pub seq: u32,
    /// What it does.
    pub kind: StepKind,
    /// How it runs.
    pub mode: StepMode,
    /// Where it is.
    pub state: StepState,
    /// 1 for the first attempt; a re-run after a crash has the next number.
    pub attempt: u32,
    /// Stable across attempts of the same logical step; capabilities receive it.
    pub idempotency_key: String,
    /// The capability invoked, for `act` steps.
    pub capability: Option<String>,
    /// The capability's side-effect class, for `act` steps: decides recovery.
    pub side_effect: Option<SideEffect>,
    /// What the step was given.
    pub input: Value,
    /// What it produced, once it has ended.
    pub output: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<StepError>,
    /// The model that answered, for `think` steps.
    pub model: Option<String>,
    /// Tokens used.
    pub usage: TokenUsage,
    /// What the step cost.
    pub cost: Cost,
    /// When it was written.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// The idempotency key of the step of `interaction` named `suffix`
/// (`context`, `think:1`, `act:1:0`): the same for every attempt of it.
pub fn step_key(interaction: InteractionId, suffix: &str) -> String {
    format!("{interaction}:{suffix}")
}

/// The first step of an interaction, begun in the commit that creates it
/// ([`InteractionStore::create_interaction_begun`](crate::InteractionStore::create_interaction_begun)):
/// a [`NewStep`] but for its interaction, which has no id yet.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstStep {
    /// What it does.
    pub kind: StepKind,
    /// The name its idempotency key gives it after the interaction's id
    /// ([`step_key`]).
    pub name: String,
    /// What it is given.
    pub input: Value,
}

impl FirstStep {
    /// The step of `interaction`: at place 0, run at once, first attempt.
    pub fn of(self, interaction: InteractionId) -> NewStep {
        NewStep {
            interaction_id: interaction,
            seq: 0,
            kind: self.kind,
            mode: StepMode::Immediate,
            attempt: 1,
            idempotency_key: step_key(interaction, &self.name),
            capability: None,
            side_effect: None,
            input: self.input,
        }
    }
}

/// A step about to be written and started.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// The interaction it belongs to.
    pub interaction_id: InteractionId,
    /// Its position in the interaction.
    pub seq: u32,
    /// What it does.
    pub kind: StepKind,
    /// How it runs.
    pub mode: StepMode,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Stable key across attempts.
    pub idempotency_key: String,
    /// The capability, for `act` steps.
    pub capability: Option<String>,
    /// The capability's side-effect class, for `act` steps.
    pub side_effect: Option<SideEffect>,
    /// What the step is given.
    pub input: Value,
}

impl NewStep {
    /// The step as a store writes it: `running`, with `id`, at `now`.
    pub fn started(self, id: StepId, now: Timestamp) -> Step {
        Step {
            id,
            interaction_id: self.interaction_id,
            seq: self.seq,
            kind: self.kind,
            mode: self.mode,
            state: StepState::Running,
            attempt: self.attempt,
            idempotency_key: self.idempotency_key,
            capability: self.capability,
            side_effect: self.side_effect,
            input: self.input,
            output: None,
            error: None,
            model: None,
            usage: TokenUsage::default(),
            cost: Cost::default(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Usage of a step, recorded with its outcome: a `think` step's model call,
/// or the rolled-up usage of an `act` step whose capability spent tokens on
/// the step's behalf (a delegate agent's whole interaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    /// The model that answered (for rolled-up usage, `agent:<id>` or the
    /// capability's name).
    pub model: String,
    /// Tokens used.
    pub tokens: TokenUsage,
    /// What they cost.
    pub cost: Cost,
    /// Whether this usage was already recorded by the steps that spent it (a
    /// delegate's own `think` steps): it counts in the step's and its
    /// interaction's totals, but adds no usage record, so reports never count
    /// a model call twice.
    #[serde(default)]
    pub rolled_up: bool,
}

/// How a running step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// It succeeded with this output.
    Succeeded {
        /// What it produced.
        output: Value,
        /// Model usage, for `think` steps.
        usage: Option<ModelUsage>,
    },
    /// It failed.
    Failed {
        /// Why.
        error: StepError,
        /// Model usage spent before it failed, if any.
        usage: Option<ModelUsage>,
    },
    /// Its call waits for a person's decision.
    Waiting {
        /// The [`Proposal`](crate::approval::Proposal).
        proposal: Value,
    },
}

impl StepOutcome {
    /// The state this outcome moves the step to.
    pub fn state(&self) -> StepState {
        match self {
            StepOutcome::Succeeded { .. } => StepState::Succeeded,
            StepOutcome::Failed { .. } => StepState::Failed,
            StepOutcome::Waiting { .. } => StepState::Waiting,
        }
    }
}

/// One recorded change of a step's state: the audit trail behind `Step::state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTransition {
    /// The step.
    pub step_id: StepId,
    /// The state before; `None` when the step was written.
    pub from: Option<StepState>,
    /// The state after.
    pub to: StepState,
    /// When.
    pub at: Timestamp,
}

/// Whether a sequence of transitions is a legal history: written as `created`,
/// then each move allowed by [`StepState::can_become`].
pub fn is_legal_history(transitions: &[StepTransition]) -> bool {
    let mut iter = transitions.iter();
    let Some(first) = iter.next() else {
        return false;
    };
    if first.from.is_some() || first.to != StepState::Created {
        return false;
    }
    let mut state = first.to;
    for t in iter {
        if t.from != Some(state) || !state.can_become(t.to) {
            return false;
        }
        state = t.to;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_legal_transitions_are_allowed() {
        use StepState::*;
        let all = [Created, Running, Waiting, Succeeded, Failed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Created, Running),
                (Running, Waiting),
                (Running, Succeeded),
                (Running, Failed),
                (Waiting, Running),
                (Waiting, Failed)
            ]
        );
    }

    #[test]
    fn legal_history_is_checked() {
        let id = StepId::new();
        let t = |from, to| StepTransition {
            step_id: id,
            from,
            to,
            at: Timestamp::from_millis(0),
        };
        use StepState::*;
        assert!(is_legal_history(&[
            t(None, Created),
            t(Some(Created), Running),
            t(Some(Running), Failed)
        ]));
        assert!(!is_legal_history(&[
            t(None, Created),
            t(Some(Created), Succeeded)
        ]));
        assert!(!is_legal_history(&[t(None, Running)]));
        assert!(!is_legal_history(&[]));
    }

    #[test]
    fn names_round_trip() {
        for k in [
            StepKind::Context,
            StepKind::Think,
            StepKind::Act,
            StepKind::Observe,
            StepKind::Respond,
        ] {
            assert_eq!(k.as_str().parse::<StepKind>().unwrap(), k);
        }
        assert!("sleep".parse::<StepKind>().is_err());
    }
}
