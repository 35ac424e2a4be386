//! A person in the loop: which actions wait for a decision, and the
//! decisions.
//!
//! An agent runs in one of three [`ApprovalMode`]s, narrowed by the account's
//! policy (the most careful wins). When a call needs a decision, its `act`
//! step is written `waiting` (mode `interactive`) with the proposed call as
//! its output ([`Proposal`]); the interaction waits, holding nothing. A
//! [`Decision`] names the step: approving (or editing the arguments of) the
//! call runs it once; rejecting or letting it expire tells the model why.
//! Decisions are stored ([`StoredDecision`], through
//! [`ApprovalStore`](crate::store::ApprovalStore)) with who took them, when
//! and through which channel; the same decision twice is one decision, a
//! different one after it is a conflict.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AccountId, InteractionId, SessionId, StepId, UserId};
use crate::model::ToolCall;
use crate::step::{Step, StepMode, StepState};
use crate::store::StoreError;
use crate::time::Timestamp;

/// How much an agent may do without asking. Ordered from the most careful:
/// where several apply (the agent's, the account's), the lowest wins.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalMode {
    /// Only `read_only` capabilities run; any other call is recorded as
    /// proposed and never run (the model is told).
    Observe,
    /// Every capability that is not `read_only` waits for a decision.
    Draft,
    /// Calls run without asking, except those whose manifest demands a
    /// decision always (`default_mode: interactive`).
    #[default]
    Autopilot,
}

crate::step::str_enum!(ApprovalMode, "approval mode",
    ApprovalMode::Observe => "observe",
    ApprovalMode::Draft => "draft",
    ApprovalMode::Autopilot => "autopilot",
);

/// What a person decided about a proposed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Run the call as proposed.
    Approve,
    /// Do not run it; the model is told the reason.
    Reject {
        /// Why, for the model.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Run it with these arguments instead (checked against the
    /// capability's schema before the decision is taken).
    Edit {
        /// The arguments to run it with.
        arguments: Value,
    },
    /// Nobody decided in time; the model is told.
    Expire,
}

impl Decision {
    /// The stable name: `approve`, `reject`, `edit` or `expire`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject { .. } => "reject",
            Decision::Edit { .. } => "edit",
            Decision::Expire => "expire",
        }
    }

    /// Whether the call runs.
    pub fn runs(&self) -> bool {
        matches!(self, Decision::Approve | Decision::Edit { .. })
    }
}

/// Who took a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecidedBy {
    /// The account they acted in.
    pub account: AccountId,
    /// The user, or `None` for the host acting for the account (and for
    /// the runtime expiring a proposal).
    pub user: Option<UserId>,
}

impl DecidedBy {
    /// A user of an account.
    pub fn user(principal: &crate::principal::Principal) -> Self {
        Self {
            account: principal.account,
            user: Some(principal.user),
        }
    }

    /// The host acting for the account (or the runtime, expiring).
    pub fn host(account: AccountId) -> Self {
        Self {
            account,
            user: None,
        }
    }
}

/// A decision about to be stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewDecision {
    /// The waiting step it decides.
    pub step_id: StepId,
    /// What was decided.
    pub decision: Decision,
    /// Who decided.
    pub by: DecidedBy,
    /// The channel it came through (`http`, `telegram`, `console`, `runtime`).
    pub channel: String,
}

impl NewDecision {
    /// A decision about `step_id`, taken by `by` through `channel`.
    pub fn new(
        step_id: StepId,
        decision: Decision,
        by: DecidedBy,
        channel: impl Into<String>,
    ) -> Self {
        Self {
            step_id,
            decision,
            by,
            channel: channel.into(),
        }
    }

    /// The rule every store applies before storing a decision about
    /// `step`, given the decision already taken about it, if any: a repeat
    /// returns the stored decision (nothing to write); another decision
    /// after one, or one about a step that does not wait, is a conflict;
    /// otherwise `None`: write it.
    pub fn check(
        &self,
        step: &Step,
        existing: Option<&StoredDecision>,
    ) -> Result<Option<StoredDecision>, StoreError> {
        if let Some(taken) = existing {
            if taken.repeats(&self.decision) {
                return Ok(Some(taken.clone()));
            }
            return Err(StoreError::Conflict(format!(
                "step {} was already decided: {}",
                step.id,
                taken.decision.as_str()
            )));
        }
        if step.state != StepState::Waiting {
            return Err(StoreError::Conflict(format!(
                "step {} does not wait for a decision (it is {})",
                step.id, step.state
            )));
        }
        Ok(None)
    }

    /// The decision as stored at `now`.
    pub fn stored(self, interaction_id: InteractionId, now: Timestamp) -> StoredDecision {
        StoredDecision {
            step_id: self.step_id,
            interaction_id,
            decision: self.decision,
            by: self.by,
            channel: self.channel,
            at: now,
        }
    }
}

/// The rule every store applies before moving a `waiting` step back to
/// `running`: it waits, and the decision taken about it runs the call (a
/// step waiting on a delegate has no decision of its own and may go on).
pub fn check_resume(step: &Step, decision: Option<&StoredDecision>) -> Result<(), StoreError> {
    // A waiting step that is not `interactive` waits on a delegate, not on a
    // decision of its own: it goes on when its delegate's calls are decided.
    let decided = step.mode != StepMode::Interactive || decision.is_some_and(|d| d.decision.runs());
    if step.state.can_become(StepState::Running) && decided {
        return Ok(());
    }
    Err(StoreError::IllegalTransition {
        step: step.id,
        from: step.state,
        to: StepState::Running,
    })
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredDecision {
    /// The step it decides.
    pub step_id: StepId,
    /// The step's interaction.
    pub interaction_id: InteractionId,
    /// What was decided.
    pub decision: Decision,
    /// Who decided.
    pub by: DecidedBy,
    /// Through which channel.
    pub channel: String,
    /// When.
    pub at: Timestamp,
}

impl StoredDecision {
    /// The payload of its `approval.decided` event.
    pub fn event_payload(&self) -> Value {
        crate::step::payload::to_json(&crate::event::ApprovalDecided {
            step_id: self.step_id,
            decision: self.decision.clone(),
            by: self.by,
            channel: self.channel.clone(),
        })
    }

    /// Whether `new` repeats this decision (the same decision by anyone:
    /// deciding the same way twice is one decision).
    pub fn repeats(&self, new: &Decision) -> bool {
        self.decision == *new
    }
}

/// The output of a waiting `act` step: the call proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The call, as the model asked for it.
    pub call: ToolCall,
    /// Why it waits: the mode, the capability's own demand, or a delegate
    /// waiting for decisions of its own.
    pub reason: ProposalReason,
    /// For a call to a delegate that waits: the delegate's interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<InteractionId>,
    /// For a call to a delegate that waits: the steps, anywhere below this
    /// call, that wait for a decision (decide those; this call goes on when
    /// all are decided).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<StepId>,
}

impl Proposal {
    /// A call proposed for a person's decision.
    pub fn new(call: ToolCall, reason: ProposalReason) -> Self {
        Self {
            call,
            reason,
            delegate: None,
            waiting_on: Vec::new(),
        }
    }

    /// A call to a delegate whose interaction `delegate` waits on the
    /// decisions of `waiting_on`.
    pub fn delegated(call: ToolCall, delegate: InteractionId, waiting_on: Vec<StepId>) -> Self {
        Self {
            call,
            reason: ProposalReason::Delegate,
            delegate: Some(delegate),
            waiting_on,
        }
    }

    /// The steps a person decides to let this call go on: the call's own
    /// step, or, for a delegate's call, the steps below it that wait.
    pub fn decidable(&self, step: StepId) -> Vec<StepId> {
        if self.delegate.is_some() {
            self.waiting_on.clone()
        } else {
            vec![step]
        }
    }
}

/// Why a call waits for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProposalReason {
    /// The agent runs in `draft` mode and the capability is not read-only.
    Draft,
    /// The capability's manifest asks for a decision always.
    Capability,
    /// The call started a delegate, and calls in it wait for decisions:
    /// the step is not decided itself; it goes on when they are.
    Delegate,
}

/// A call waiting for a decision, as hosts list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingApproval {
    /// The waiting step: decide it by this id.
    pub step_id: StepId,
    /// Its interaction.
    pub interaction_id: InteractionId,
    /// Its session.
    pub session_id: SessionId,
    /// The capability.
    pub capability: String,
    /// The arguments proposed.
    pub arguments: Value,
    /// When it was proposed.
    pub proposed_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_careful_mode_is_the_lowest() {
        assert!(ApprovalMode::Observe < ApprovalMode::Draft);
        assert!(ApprovalMode::Draft < ApprovalMode::Autopilot);
        assert_eq!(
            ApprovalMode::Autopilot.min(ApprovalMode::Draft),
            ApprovalMode::Draft
        );
        assert_eq!(
            "draft".parse::<ApprovalMode>().unwrap(),
            ApprovalMode::Draft
        );
        assert!("careless".parse::<ApprovalMode>().is_err());
    }

    #[test]
    fn decisions_read_from_their_wire_form() {
        let d: Decision =
            serde_json::from_value(serde_json::json!({ "decision": "reject", "reason": "no" }))
                .unwrap();
        assert_eq!(
            d,
            Decision::Reject {
                reason: Some("no".into())
            }
        );
        let e: Decision = serde_json::from_value(
            serde_json::json!({ "decision": "edit", "arguments": { "text": "milk" } }),
        )
        .unwrap();
        assert!(e.runs());
        assert!(!Decision::Expire.runs());
    }
}
