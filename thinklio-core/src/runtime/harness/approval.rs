//! The harness's side of approvals: which calls wait for a person, the
//! proposal a waiting `act` step holds, and the decisions a run reads.

use crate::approval::{ApprovalMode, Proposal, ProposalReason};
use crate::capability::{RegisteredCapability, SideEffect};
use crate::error::ErrorCode;
use crate::model::ToolCall;
use crate::runtime::RuntimeError;
use crate::step::payload::to_json;
use crate::step::{StepError, StepMode, StepOutcome};

use super::Run;

impl Run {
    /// The mode this run's calls follow: the agent's, narrowed by the
    /// account's policy (the most careful wins).
    pub(super) fn approval_mode(&self) -> ApprovalMode {
        let agent = self.agent.approval_mode;
        match self.access.as_ref().and_then(|a| a.policy.approval_mode) {
            Some(ceiling) => agent.min(ceiling),
            None => agent,
        }
    }

    /// Whether a call of `cap` waits for a decision (or, observing, is only
    /// proposed): always when its manifest says `interactive`; otherwise
    /// never for a read-only capability, and for any other unless the run
    /// is on autopilot.
    pub(super) fn needs_decision(&self, cap: &RegisteredCapability) -> bool {
        let manifest = cap.manifest();
        if manifest.default_mode == StepMode::Interactive {
            return true;
        }
        manifest.side_effect != SideEffect::ReadOnly
            && self.approval_mode() != ApprovalMode::Autopilot
    }

    /// The outcome of an `interactive` act step when it is first run: the
    /// call is proposed and waits, or (observing) is recorded as proposed
    /// and never run. Arguments that do not fit the schema go back to the
    /// model first: nobody is asked to decide about a call that cannot run.
    pub(super) fn propose(&self, call: ToolCall) -> StepOutcome {
        let failed = |code: ErrorCode, message: String| StepOutcome::Failed {
            error: StepError::new(code, message),
            usage: None,
        };
        let Some(cap) = self.visible(&call.name) else {
            return failed(
                ErrorCode::CapabilityNotFound,
                format!("no capability named `{}`", call.name),
            );
        };
        if let Err(e) = cap.parse_arguments(&call.arguments) {
            return failed(e.code(), e.to_string());
        }
        let manifest = cap.manifest();
        if self.approval_mode() == ApprovalMode::Observe
            && manifest.side_effect != SideEffect::ReadOnly
        {
            return failed(
                ErrorCode::ApprovalObserveOnly,
                format!(
                    "`{}` was proposed with {} and not run: this agent only observes",
                    call.name, call.arguments
                ),
            );
        }
        if self.delegation.is_some() {
            // Its callers cannot pause with it yet: the call is refused, so
            // nothing runs without a decision and nothing waits unseen.
            return failed(
                ErrorCode::ApprovalInDelegate,
                format!(
                    "`{}` needs a person's decision, and this agent runs as a delegate, which cannot \
                     wait for one: it was not run",
                    call.name
                ),
            );
        }
        let reason = if manifest.default_mode == StepMode::Interactive {
            ProposalReason::Capability
        } else {
            ProposalReason::Draft
        };
        StepOutcome::Waiting {
            proposal: to_json(&Proposal { call, reason }),
        }
    }

    /// Reads the decisions taken about this interaction's interactive
    /// `act` steps that the run does not know yet.
    pub(super) async fn load_decisions(&mut self) -> Result<(), RuntimeError> {
        let asked: Vec<_> = self
            .steps
            .iter()
            .filter(|s| s.mode == StepMode::Interactive && !self.decisions.contains_key(&s.id))
            .map(|s| s.id)
            .collect();
        for id in asked {
            if let Some(decision) = self.rt.store.decision(id).await? {
                self.decisions.insert(id, decision);
            }
        }
        Ok(())
    }
}
