//! Session summaries: when a session's older turns no longer fit what its
//! agent is shown, a durable queue task folds them (and the previous
//! summary) into a stored [`Summary`](crate::session::Summary), which the
//! `context` step then shows in their place.
//!
//! The task is committed with the reply of the interaction whose context
//! left the turns out; it writes one summary per turn covered (the store
//! keeps the first), checks the principal's budgets before its model call
//! and records the call's usage on that interaction's `respond` step, as
//! knowledge extraction does.

use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Inner;
use super::queue::{TaskError, TaskHandler};
use crate::ids::{InteractionId, SessionId};
use crate::model::{ChatMessage, ChatRequest};
use crate::queue::{NewTask, Task};
use crate::session::{NewSummary, Summary};
use crate::step::StepKind;
use crate::store::StoreError;
use crate::usage::UsageRecord;

/// The queue task kind that writes a session summary.
pub const SUMMARIZE_TASK: &str = "session.summarize";

/// The instructions of the summariser.
pub const SUMMARY_PROMPT: &str = "You keep the memory of a long conversation between a user and an \
assistant. Write a summary of it from the previous summary (if any) and the turns that follow it, \
for the assistant to read before the next message: who the user is, what they asked for and were \
told, decisions, commitments, names, numbers and dates, and anything still open. Keep every fact \
the previous summary holds unless a later turn changes it. Write plain prose in the third person, \
at most 300 words, and nothing else.";

/// The most turns one summary folds in: older ones are left to the chain.
const MAX_TURNS: u32 = 400;

/// What a summarise task is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SummarizeTask {
    /// The session.
    pub(crate) session_id: SessionId,
    /// Fold every turn up to this interaction (by sequence number).
    pub(crate) through_seq: i64,
    /// The interaction whose reply asked for it.
    pub(crate) interaction_id: InteractionId,
}

impl Inner {
    /// The task that summarises `session` through `through_seq`, asked for
    /// by `interaction`'s reply.
    pub(crate) fn summary_task(
        &self,
        interaction: &crate::interaction::Interaction,
        through_seq: i64,
    ) -> NewTask {
        let payload = crate::step::payload::to_json(&SummarizeTask {
            session_id: interaction.session_id,
            through_seq,
            interaction_id: interaction.id,
        });
        NewTask::new(SUMMARIZE_TASK, payload, self.clock.now())
            .owned_by(interaction.principal.account, interaction.principal.user)
    }

    async fn summarize(self: &Arc<Self>, task: SummarizeTask) -> Result<(), TaskError> {
        let retry = |e: StoreError| TaskError::retryable(e.to_string());
        let session = match self.store.session(task.session_id).await {
            Ok(s) => s,
            // Forgotten since: nothing to summarise.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(retry(e)),
        };
        let done = self
            .store
            .latest_summary(session.id, task.through_seq + 1)
            .await
            .map_err(retry)?;
        if done
            .as_ref()
            .is_some_and(|s| s.through_seq >= task.through_seq)
        {
            // Written before a crash, or by another worker: not again.
            return Ok(());
        }
        let previous = done;
        let after = previous.as_ref().map_or(i64::MIN, |s| s.through_seq);
        let turns: Vec<_> = self
            .store
            .history(session.id, task.through_seq + 1, MAX_TURNS)
            .await
            .map_err(retry)?
            .into_iter()
            .filter(|t| t.seq > after)
            .collect();
        if turns.is_empty() {
            return Ok(());
        }
        let interaction = match self.store.interaction(task.interaction_id).await {
            Ok(i) => i,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(retry(e)),
        };
        let agent = match self.agent_of(&interaction).await {
            Ok(agent) => agent,
            Err(crate::RuntimeError::Store(e)) => return Err(retry(e)),
            Err(e) => return Err(TaskError::permanent(e.to_string())),
        };
        let request = ChatRequest::new(
            agent.model.clone(),
            vec![
                ChatMessage::system(SUMMARY_PROMPT),
                ChatMessage::user(summary_input(previous.as_ref(), &turns)),
            ],
        );
        // A model call like any other: the principal's budgets hold, and
        // its usage counts against them.
        if let Err(refusal) = self.check_budgets(&session.principal, &interaction).await {
            return Err(TaskError::permanent(format!(
                "no summary: {} ({})",
                refusal.message, refusal.code
            )));
        }
        let response = self.model.chat(&request).await.map_err(|e| TaskError {
            retryable: e.is_retryable() || matches!(e, crate::ModelError::MalformedResponse(_)),
            message: e.to_string(),
        })?;
        let text = response.message.content.trim().to_owned();
        if text.is_empty() {
            return Err(TaskError::retryable("the summariser answered nothing"));
        }
        let cost = self
            .cost_of(
                &response.model,
                &request.model,
                response.usage,
                &interaction,
            )
            .await;
        let steps = self.store.steps(interaction.id).await.map_err(retry)?;
        if let Some(respond) = steps.iter().find(|s| s.kind == StepKind::Respond) {
            self.store
                .record_usage(UsageRecord {
                    step_id: respond.id,
                    interaction_id: interaction.id,
                    account: session.principal.account,
                    team: session.principal.team,
                    user: session.principal.user,
                    agent_id: session.agent_id.clone(),
                    model: response.model.clone(),
                    tokens: response.usage,
                    cost,
                    at: self.clock.now(),
                })
                .await
                .map_err(retry)?;
        }
        let mut new = NewSummary::new(
            &session,
            task.through_seq,
            text,
            response.model,
            interaction.id,
        );
        new.previous = previous.map(|p| p.id);
        new.tokens = response.usage;
        new.cost = cost;
        self.store.put_summary(new).await.map_err(retry)?;
        Ok(())
    }
}

/// What the summariser reads: the previous summary, then the turns.
fn summary_input(previous: Option<&Summary>, turns: &[crate::session::Turn]) -> String {
    let mut text = String::new();
    match previous {
        Some(s) => {
            let _ = writeln!(text, "Previous summary:\n{}\n", s.text);
        }
        None => text.push_str("Previous summary: none.\n\n"),
    }
    text.push_str("Turns that follow it:\n");
    for t in turns {
        let _ = writeln!(
            text,
            "[{}] User: {}\n[{}] Assistant: {}",
            t.at.date(),
            t.user,
            t.at.date(),
            t.assistant
        );
    }
    text
}

/// Runs summarise tasks.
struct Summarizer {
    rt: Weak<Inner>,
}

#[async_trait]
impl TaskHandler for Summarizer {
    async fn run(&self, task: &Task) -> Result<(), TaskError> {
        let Some(rt) = self.rt.upgrade() else {
            return Err(TaskError::retryable("the runtime is shutting down"));
        };
        let asked: SummarizeTask = serde_json::from_value(task.payload.clone()).map_err(|e| {
            TaskError::permanent(format!("a summarise task that does not parse: {e}"))
        })?;
        rt.summarize(asked).await
    }
}

/// Registers the summariser.
pub(crate) fn register(inner: &Arc<Inner>) {
    inner
        .task_handlers
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            SUMMARIZE_TASK.to_owned(),
            Arc::new(Summarizer {
                rt: Arc::downgrade(inner),
            }),
        );
}
