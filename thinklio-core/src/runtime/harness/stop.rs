//! Stopping an interaction for good: cancelled by a person or the host, or
//! past the agent's deadline. The step interrupted is settled as a crash
//! would settle it (an `external` call's outcome is unknown, never run
//! again); steps waiting for a decision fail; a failed `respond` step closes
//! the interaction, and delegates it started are closed the same way.

use std::time::Duration;

use std::sync::Arc;

use super::{Delegation, Run};
use crate::capability::{CapabilityError, SideEffect, TrustLevel};
use crate::error::ErrorCode;
use crate::ids::InteractionId;
use crate::interaction::InteractionState;
use crate::runtime::Inner;
use crate::runtime::RuntimeError;
use crate::step::payload::{RespondInput, to_json};
use crate::step::{StepError, StepKind, StepState};

/// Keeps an interaction listed as running here until dropped.
pub(crate) struct RunningGuard {
    inner: Arc<Inner>,
    id: InteractionId,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Inner {
    /// Lists `id` as running here until the guard is dropped; the receiver
    /// turns `true` when it is cancelled.
    pub(crate) fn running(
        self: &Arc<Self>,
        id: InteractionId,
    ) -> (RunningGuard, tokio::sync::watch::Receiver<bool>) {
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cancel);
        (
            RunningGuard {
                inner: Arc::clone(self),
                id,
            },
            cancelled,
        )
    }

    /// On a shared store, stops the runs of this runtime that another
    /// process cancels (through [`InteractionStore::announce_cancel`]),
    /// from now until the runtime is dropped. Started once.
    ///
    /// [`InteractionStore::announce_cancel`]: crate::store::InteractionStore::announce_cancel
    pub(crate) fn hear_cancels(self: &Arc<Self>) {
        self.hears_cancels.get_or_init(|| {
            let Some(mut heard) = self.store.cancel_announcements() else {
                return;
            };
            let inner = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let id = match heard.recv().await {
                        Ok(id) => id,
                        // Missed announcements are the store's to say
                        // (best-effort); go on with the next.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    match inner.upgrade() {
                        Some(inner) => {
                            inner.cancel_running(id);
                        }
                        None => return,
                    }
                }
            });
        });
    }

    /// Cancels `id` if it runs here; whether it did.
    pub(crate) fn cancel_running(&self, id: InteractionId) -> bool {
        match self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            Some(cancel) => {
                cancel.send_replace(true);
                true
            }
            None => false,
        }
    }
}

/// What a run waits on besides its work: a cancel, or its deadline.
pub(crate) struct StopSignal {
    cancelled: tokio::sync::watch::Receiver<bool>,
    deadline: Option<Duration>,
}

impl StopSignal {
    pub(crate) fn new(
        cancelled: tokio::sync::watch::Receiver<bool>,
        deadline: Option<Duration>,
    ) -> Self {
        Self {
            cancelled,
            deadline,
        }
    }

    /// Resolves when the run must stop, with why.
    pub(crate) async fn stopped(&mut self) -> StepError {
        let cancelled = async {
            // A closed sender never cancels.
            let cancelled = self.cancelled.wait_for(|c| *c).await.is_ok();
            if !cancelled {
                std::future::pending::<()>().await;
            }
        };
        let deadline = self.deadline;
        let late = async move {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = cancelled => StepError::new(
                ErrorCode::InteractionCancelled,
                "the interaction was cancelled",
            ),
            () = late => StepError::new(
                ErrorCode::InteractionDeadlineExceeded,
                format!(
                    "the interaction ran past its deadline of {:?}",
                    deadline.unwrap_or_default()
                ),
            ),
        }
    }
}

impl Run {
    /// Ends the interaction with `error`: every step left `running` or
    /// `waiting` fails (with `interrupted`, a running `external` call as
    /// `capability.outcome_unknown`, as after a crash; otherwise with
    /// `error`), delegates it started are closed the same way, and a failed
    /// `respond` step closes it, so nothing is left for recovery to resume.
    pub(super) async fn stop_run(
        &mut self,
        error: StepError,
        interrupted: bool,
        key: &str,
    ) -> Result<RuntimeError, RuntimeError> {
        self.steps = self.rt.store.steps(self.interaction.id).await?;
        let open: Vec<_> = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Running | StepState::Waiting))
            .cloned()
            .collect();
        for step in open {
            let e = if interrupted
                && step.state == StepState::Running
                && step.kind == StepKind::Act
                && step.side_effect == Some(SideEffect::External)
            {
                let unknown = CapabilityError::OutcomeUnknown;
                StepError::new(unknown.code(), unknown.to_string())
            } else {
                error.clone()
            };
            self.fail_step(&step, e).await?;
        }
        self.stop_delegates(&error).await?;
        if !InteractionState::derive(&self.steps).is_finished() {
            let new = self.new_step(
                StepKind::Respond,
                1,
                self.key(key),
                to_json(&RespondInput {
                    text: String::new(),
                    job_ended: key == "respond:job_ended",
                }),
            );
            let (step, event) = self.rt.store.begin_step(new).await?;
            self.rt.publish(event);
            self.steps.push(step.clone());
            self.fail_step(&step, error.clone()).await?;
        }
        self.fail(error).await
    }

    /// Closes the unfinished delegates this interaction started (their runs
    /// were dropped with the step that called them).
    async fn stop_delegates(&self, error: &StepError) -> Result<(), RuntimeError> {
        let children: Vec<_> = self
            .rt
            .store
            .interactions_of_session(self.session.id)
            .await?
            .into_iter()
            .filter(|i| i.parent_interaction_id == Some(self.interaction.id))
            .collect();
        for child in children {
            let steps = self.rt.store.steps(child.id).await?;
            if InteractionState::derive(&steps).is_finished() {
                continue;
            }
            let Ok(agent) = self.rt.agent_of(&child).await else {
                continue;
            };
            let run = Run::new(
                std::sync::Arc::clone(&self.rt),
                self.session.clone(),
                agent,
                child,
                steps,
                false,
            )
            .delegate(Delegation {
                trust_ceiling: TrustLevel::Basic,
                approval_ceiling: crate::approval::ApprovalMode::Observe,
                can_wait: false,
                allowed: Some(Vec::new()),
            });
            // Boxed: a delegate may have delegates of its own.
            match Box::pin(run.stop_child(error.clone())).await {
                Ok(()) | Err(RuntimeError::InteractionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Cancels an interaction that no run of this process is driving (it
    /// waits for a decision, was submitted, or was left by a crash).
    pub(crate) async fn cancel(mut self) -> Result<(), RuntimeError> {
        let error = StepError::new(
            ErrorCode::InteractionCancelled,
            "the interaction was cancelled",
        );
        self.stop_run(error, true, "respond:stopped").await?;
        Ok(())
    }

    async fn stop_child(mut self, error: StepError) -> Result<(), RuntimeError> {
        self.stop_run(error, true, "respond:stopped").await?;
        Ok(())
    }
}
