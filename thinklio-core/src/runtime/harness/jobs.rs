//! The harness's side of jobs: a deferred `act` step writes a job, and a
//! run that works for a job (a delegate dispatched as one) stops when the
//! job ends.

use crate::error::ErrorCode;
use serde_json::Value;

use super::Run;
use crate::capability::{CapabilityError, RegisteredCapability};
use crate::runtime::RuntimeError;
use crate::step::payload::{DispatchedJob, to_json};
use crate::step::{Step, StepError, StepMode};

impl Run {
    /// Why this run must stop, when the job it works for has ended.
    pub(super) async fn job_ended(&self) -> Result<Option<StepError>, RuntimeError> {
        let Some(id) = self.job else {
            return Ok(None);
        };
        let job = self.rt.store.job(id).await?;
        Ok(job.state.is_terminal().then(|| {
            StepError::new(
                ErrorCode::JobCancelled,
                format!(
                    "job {id} {}: {}",
                    job.state,
                    job.error.as_deref().unwrap_or("it ended")
                ),
            )
        }))
    }

    /// How this agent calls a capability: deferred when its manifest says
    /// so or the agent chose it (never an interactive one).
    pub(super) fn mode_of(&self, cap: &RegisteredCapability) -> StepMode {
        let manifest = cap.manifest();
        match manifest.default_mode {
            StepMode::Interactive => StepMode::Interactive,
            StepMode::Deferred => StepMode::Deferred,
            StepMode::Immediate if self.agent.deferred.contains(&manifest.name) => {
                StepMode::Deferred
            }
            StepMode::Immediate => StepMode::Immediate,
        }
    }

    /// The work of a deferred `act` step: the job is written (once per step
    /// key) and the step succeeds; the model is told the work is under way.
    pub(super) async fn dispatch_job(
        &self,
        step: &Step,
        cap: &RegisteredCapability,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        let job = self
            .rt
            .create_deferred_job(
                &self.interaction,
                step.id,
                &step.idempotency_key,
                cap.manifest(),
                arguments,
            )
            .await
            .map_err(|e| CapabilityError::failed(format!("the job could not be written: {e}")))?;
        Ok(to_json(&DispatchedJob {
            job_id: job.id,
            status: "dispatched".into(),
            note: format!(
                "`{}` runs in the background as job {}; its result comes back in a follow-up message. \
                 Tell the user the work is under way.",
                job.capability, job.id
            ),
        }))
    }
}
