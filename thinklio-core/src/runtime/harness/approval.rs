//! The harness's side of approvals: which calls wait for a person, the
//! proposal a waiting `act` step holds, and the decisions a run reads.

use crate::approval::{ApprovalMode, Proposal, ProposalReason};
use crate::capability::{CapabilityKind, RegisteredCapability, SideEffect};
use crate::error::ErrorCode;
use crate::ids::StepId;
use crate::model::ToolCall;
use crate::runtime::RuntimeError;
use crate::step::payload::to_json;
use crate::step::{StepError, StepMode, StepOutcome, StepState};

use super::Run;

impl Run {
    /// The mode this run's calls follow: the agent's, narrowed by the
    /// account's policy, the agent's assignments, the session's choice
    /// and, in a delegate, every agent above it (the most careful wins).
    pub(super) fn approval_mode(&self) -> ApprovalMode {
        let directory = self.access.as_ref().and_then(|a| a.approval_ceiling());
        let chain = self.delegation.as_ref().map(|d| d.approval_ceiling);
        [directory, chain, self.session.approval_mode]
            .into_iter()
            .flatten()
            .fold(self.agent.approval_mode, ApprovalMode::min)
    }

    /// Whether this run can wait for a person's decision: a delegate only
    /// when its callers can wait with it, and never a run for a job.
    pub(super) fn can_wait(&self) -> bool {
        self.job.is_none() && self.delegation.as_ref().is_none_or(|d| d.can_wait)
    }

    /// Whether a call of `cap` waits for a decision (or, observing, is only
    /// proposed): always when its manifest says `interactive`; otherwise
    /// never for a read-only capability or a delegate (whose own calls are
    /// decided in it), and for any other unless the run is on autopilot.
    pub(super) fn needs_decision(&self, cap: &RegisteredCapability) -> bool {
        let manifest = cap.manifest();
        if manifest.default_mode == StepMode::Interactive {
            return true;
        }
        manifest.side_effect != SideEffect::ReadOnly
            && manifest.kind != CapabilityKind::Agent
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
        if !self.can_wait() {
            // A delegate run for a job: its callers cannot pause with it, so
            // the call is refused: nothing runs without a decision and
            // nothing waits unseen.
            return failed(
                ErrorCode::ApprovalInDelegate,
                format!(
                    "`{}` needs a person's decision, and this agent runs as a delegate of a job, \
                     which cannot wait for one: it was not run",
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
            proposal: to_json(&Proposal::new(call, reason)),
        }
    }

    /// Reads the decisions taken about this interaction's interactive
    /// `act` steps, and about the steps its waiting delegates wait on, that
    /// the run does not know yet.
    pub(super) async fn load_decisions(&mut self) -> Result<(), RuntimeError> {
        let mut asked: Vec<StepId> = Vec::new();
        for step in &self.steps {
            if step.mode == StepMode::Interactive {
                asked.push(step.id);
            } else if step.state == StepState::Waiting
                && let Ok(Some(proposal)) = step.output_as::<Proposal>()
            {
                asked.extend(proposal.waiting_on);
            }
        }
        asked.retain(|id| !self.decisions.contains_key(id));
        for id in asked {
            if let Some(decision) = self.rt.store.decision(id).await? {
                self.decisions.insert(id, decision);
            }
        }
        Ok(())
    }
}
