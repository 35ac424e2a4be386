//! The approvals handle: calls waiting for a person, and their decisions.
//! A decision resumes the interaction it unblocks (see [`crate::approval`]).

use std::fmt;

use crate::approval::{
    ApprovalMode, DecidedBy, Decision, NewDecision, PendingApproval, Proposal, StoredDecision,
};
use crate::error::ErrorCode;
use crate::ids::{AccountId, SessionId, StepId};
use crate::principal::Actor;
use crate::session::Session;
use crate::step::{Step, StepKind, StepMode};
use crate::store::ApprovalFilter;

use super::access::Need;
use super::{Runtime, RuntimeError};

/// Why a decision was refused before it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The step is not a call that asks for a decision.
    #[error("step {step} is not a call waiting for a decision")]
    NotWaiting {
        /// The step.
        step: StepId,
    },
    /// The edited arguments do not fit the capability's schema.
    #[error("the edited arguments of step {step} do not fit `{capability}`: {message}")]
    InvalidArguments {
        /// The step.
        step: StepId,
        /// The capability.
        capability: String,
        /// What the schema check said.
        message: String,
    },
}

impl ApprovalError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApprovalError::NotWaiting { .. } => ErrorCode::ApprovalNotWaiting,
            ApprovalError::InvalidArguments { .. } => ErrorCode::ApprovalInvalidArguments,
        }
    }
}

/// Calls waiting for a person's decision, and the decisions
/// ([`Runtime::approvals`]). The session's user, a member of an enforced
/// directory with the account's `approval_role` (an admin unless the
/// policy names another), or the host acting for the account decides; no
/// one of another account sees or decides anything.
#[derive(Clone, Copy)]
pub struct Approvals<'a> {
    pub(super) rt: &'a Runtime,
}

impl fmt::Debug for Approvals<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

/// What a host lists of a waiting step.
fn pending(step: Step, session_id: SessionId) -> PendingApproval {
    let call = step.output_as::<Proposal>().ok().flatten().map(|p| p.call);
    PendingApproval {
        step_id: step.id,
        interaction_id: step.interaction_id,
        session_id,
        capability: step.capability.clone().unwrap_or_default(),
        arguments: call
            .and_then(|c| serde_json::from_str(&c.arguments).ok())
            .unwrap_or(serde_json::Value::Null),
        proposed_at: step.updated_at,
    }
}

impl Approvals<'_> {
    /// The calls of `session` waiting for a decision, oldest first.
    pub async fn of_session(
        &self,
        by: impl Into<Actor>,
        session: SessionId,
    ) -> Result<Vec<PendingApproval>, RuntimeError> {
        let inner = &self.rt.inner;
        let found = inner.session(session).await?;
        inner
            .authorize(
                &by.into(),
                found.principal.account,
                Need::Decide(Some(found.principal.user)),
            )
            .await?;
        let waiting = inner
            .store
            .waiting_steps(ApprovalFilter::Session(session))
            .await?;
        Ok(waiting.into_iter().map(|(s, id)| pending(s, id)).collect())
    }

    /// The calls of every session of `account` waiting for a decision (the
    /// view of the host and of members with the account's `approval_role`).
    pub async fn of_account(
        &self,
        by: impl Into<Actor>,
        account: AccountId,
    ) -> Result<Vec<PendingApproval>, RuntimeError> {
        let inner = &self.rt.inner;
        inner
            .authorize(&by.into(), account, Need::Decide(None))
            .await?;
        let waiting = inner
            .store
            .waiting_steps(ApprovalFilter::Account(account))
            .await?;
        Ok(waiting.into_iter().map(|(s, id)| pending(s, id)).collect())
    }

    /// Decides about the waiting call of `step`, as `by`, through `channel`,
    /// then runs its interaction on as far as it can go (to its reply, or to
    /// the next call that waits). Edited arguments are checked against the
    /// capability's schema first. Deciding the same way again returns the
    /// decision taken; deciding otherwise after it is a conflict
    /// (`store.conflict`).
    pub async fn decide(
        &self,
        by: impl Into<Actor>,
        step: StepId,
        decision: Decision,
        channel: &str,
    ) -> Result<StoredDecision, RuntimeError> {
        let (stored, session) = self
            .store_decision(by.into(), step, decision, channel)
            .await?;
        if let Some(session) = session {
            self.rt.run_session(session).await?;
        }
        Ok(stored)
    }

    /// Records a decision as [`decide`](Self::decide) does, without running
    /// its interaction on: for a host whose own worker answers the session
    /// (with [`Runtime::answer_waiting`](crate::Runtime::answer_waiting)), or
    /// that leaves it to `recover` and the interaction worker. Returns the
    /// decision and, when it is new and its interaction can go on, the
    /// session to answer.
    pub async fn record(
        &self,
        by: impl Into<Actor>,
        step: StepId,
        decision: Decision,
        channel: &str,
    ) -> Result<(StoredDecision, Option<SessionId>), RuntimeError> {
        self.store_decision(by.into(), step, decision, channel)
            .await
    }

    async fn store_decision(
        &self,
        by: Actor,
        step: StepId,
        decision: Decision,
        channel: &str,
    ) -> Result<(StoredDecision, Option<SessionId>), RuntimeError> {
        let inner = &self.rt.inner;
        let found = inner.store.step(step).await?;
        let interaction = inner.store.interaction(found.interaction_id).await?;
        inner
            .authorize(
                &by,
                interaction.principal.account,
                Need::Decide(Some(interaction.principal.user)),
            )
            .await?;
        if found.kind != StepKind::Act || found.mode != StepMode::Interactive {
            return Err(ApprovalError::NotWaiting { step }.into());
        }
        let capability = found.capability.clone().unwrap_or_default();
        if let Decision::Edit { arguments } = &decision {
            let cap = inner
                .capabilities
                .get(&capability)
                .ok_or(ApprovalError::NotWaiting { step })?;
            if let Err(e) = cap.parse_arguments(&arguments.to_string()) {
                return Err(ApprovalError::InvalidArguments {
                    step,
                    capability,
                    message: e.to_string(),
                }
                .into());
            }
        }
        let decided_by = match by {
            Actor::User(p) => DecidedBy::user(&p),
            Actor::Account(a) => DecidedBy::host(a),
        };
        let new = NewDecision::new(step, decision, decided_by, channel);
        let (stored, event) = inner.store.decide(new).await?;
        // A new decision may let the session's interaction go on (a
        // delegate's, through the interaction above it).
        let session = event.map(|event| {
            inner.publish(event);
            interaction.session_id
        });
        Ok((stored, session))
    }

    /// Chooses the approval mode of `session` (or, with `None`, goes back to
    /// the agent's). The choice narrows, never widens: a session runs in
    /// the most careful of its own mode, the agent's, its assignments' and
    /// the account's. The session's user (or an admin) chooses.
    pub async fn set_session_mode(
        &self,
        by: impl Into<Actor>,
        session: SessionId,
        mode: Option<ApprovalMode>,
    ) -> Result<Session, RuntimeError> {
        let inner = &self.rt.inner;
        let found = inner.session(session).await?;
        inner
            .authorize(
                &by.into(),
                found.principal.account,
                Need::User(found.principal.user),
            )
            .await?;
        let updated = inner.store.set_session_approval_mode(session, mode).await?;
        inner.remember(&updated);
        Ok(updated)
    }

    /// Expires every proposal that has waited longer than its agent's
    /// `approval_timeout` (the model is told, and its interaction goes on);
    /// returns how many. The job worker calls it on each tick.
    pub async fn expire_due(&self) -> Result<usize, RuntimeError> {
        let inner = &self.rt.inner;
        let now = inner.clock.now();
        let mut expired = 0;
        for (step, _) in inner.store.waiting_steps(ApprovalFilter::All).await? {
            let interaction = inner.store.interaction(step.interaction_id).await?;
            // An agent that cannot be read (no longer registered) lets its
            // proposals wait the default time, never none.
            let timeout = inner.agent_of(&interaction).await.map_or_else(
                |_| crate::agent::default_approval_timeout(),
                |a| a.approval_timeout,
            );
            if now < step.updated_at.plus(timeout) {
                continue;
            }
            let account = Actor::Account(interaction.principal.account);
            match self
                .decide(account, step.id, Decision::Expire, "runtime")
                .await
            {
                Ok(_) => expired += 1,
                // Decided meanwhile by someone else: nothing to expire.
                Err(RuntimeError::Store(crate::store::StoreError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}
