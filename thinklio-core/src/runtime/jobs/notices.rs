//! Delivering notices to observers: follow-up interactions, webhooks and
//! in-process callbacks, each observer's notices in order.

use super::*;
use crate::step::payload::{JobRecord, SubjobRecord};

/// The text of a follow-up interaction's message.
fn follow_up_text(job: &Job, notice: Notice) -> String {
    let what = match notice {
        Notice::Partial => "has partial results",
        Notice::Resolved => "has finished",
        Notice::Failed => "has failed",
        Notice::Cancelled => "was cancelled",
        Notice::TimedOut => "ran out of time",
        Notice::Dispatched => "was dispatched",
    };
    format!(
        "[job {} {}] The `{}` job {what}.",
        job.id,
        notice.as_str(),
        job.capability
    )
}

/// The job as a `context` step records it for a follow-up, with what its
/// subjobs have produced so far (partial output before the job resolves).
pub(crate) fn job_record(job: &Job, subjobs: &[Job]) -> JobRecord {
    JobRecord {
        id: job.id,
        capability: job.capability.clone(),
        state: job.state,
        progress: job.progress.clone(),
        result: job.result.clone(),
        context: job.context.clone(),
        error: job.error.clone(),
        subjobs: if job.result.is_none() {
            subjobs
                .iter()
                .map(|s| SubjobRecord {
                    capability: s.capability.clone(),
                    state: s.state,
                    result: s.result.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

impl Inner {
    /// Delivers the notices due now; returns (delivered, failed).
    pub(in crate::runtime) async fn deliver_notices(
        self: &Arc<Self>,
    ) -> Result<(usize, usize), RuntimeError> {
        let _one = self.jobs.delivering.lock().await;
        let mut delivered = 0;
        let mut failed = 0;
        loop {
            let due = self
                .store
                .claim_notifications(self.clock.now(), self.config.task_lease, 32)
                .await?;
            if due.is_empty() {
                return Ok((delivered, failed));
            }
            for n in due {
                match self.deliver_notice(&n).await {
                    Ok(()) => {
                        if self
                            .store
                            .notification_delivered(n.id, self.clock.now())
                            .await?
                        {
                            delivered += 1;
                        }
                    }
                    Err(error) => {
                        failed += 1;
                        let delay = self.config.retry_policy.delay(n.attempts + 1);
                        let retry_at = self.clock.now().plus(delay);
                        tracing::warn!(
                            notification_id = %n.id,
                            job_id = %n.observer.job_id,
                            attempt = n.attempts + 1,
                            error = %error,
                            "job notice delivery failed; it is retried later"
                        );
                        self.store
                            .notification_failed(n.id, &error, retry_at)
                            .await?;
                    }
                }
            }
        }
    }

    async fn deliver_notice(self: &Arc<Self>, n: &JobNotification) -> Result<(), String> {
        let job = self
            .store
            .job(n.observer.job_id)
            .await
            .map_err(|e| e.to_string())?;
        let notice = JobNotice {
            notification_id: n.id,
            observer_id: n.observer.id,
            notice: n.notice,
            job,
        };
        match &n.observer.kind {
            ObserverKind::FollowUp => self.follow_up(&notice).await,
            ObserverKind::Webhook { url } => match &self.jobs.webhook {
                Some(w) => w.post(url, &notice).await,
                None => Err("no notice webhook sender is configured \
                     (RuntimeBuilder::notice_webhook)"
                    .into()),
            },
            ObserverKind::Callback { name } => {
                let callback = self
                    .jobs
                    .observers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned();
                match callback {
                    Some(c) => c.notify(&notice).await,
                    None => Err(format!("no observer callback named `{name}` is registered")),
                }
            }
        }
    }

    /// Runs the follow-up interaction of a notice in the job's session. The
    /// notice id is its inbound id: a redelivery after a crash resumes the
    /// same interaction instead of starting another.
    async fn follow_up(self: &Arc<Self>, notice: &JobNotice) -> Result<(), String> {
        if notice.notice == Notice::Dispatched {
            // The dispatching interaction already said the work is under way.
            return Ok(());
        }
        if notice.notice == Notice::Partial && notice.job.state.is_terminal() {
            // The job ended before its partial output was followed up: the
            // follow-up of its end tells everything at once.
            return Ok(());
        }
        let job = &notice.job;
        let _guard = self.locks.lock(job.session_id).await;
        let hold = self
            .hold_session(job.session_id)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = async {
            {
                let session = self.session(job.session_id).await?;
                // A follow-up is work the agent started: it goes on even
                // while the agent is paused.
                self.agent_named(&session.agent_id).await?;
                self.access(&session.principal, &session.agent_id).await?;
                // A dispatched job's follow-up is answered as the dispatch
                // was, without a model.
                let kind = self.store.interaction(job.interaction_id).await?.kind;
                let (_, created) = self
                    .store
                    .create_interaction(NewInteraction {
                        session_id: session.id,
                        principal: session.principal,
                        agent_id: session.agent_id.clone(),
                        input: follow_up_text(job, notice.notice),
                        images: Vec::new(),
                        agent_version: None,
                        inbound_id: Some(format!("job-notice:{}", notice.notification_id)),
                        parent_interaction_id: None,
                        delegation_depth: 0,
                        job_id: Some(job.id),
                        kind,
                    })
                    .await?;
                if let Some(event) = created {
                    self.publish(event);
                }
            }
            // The follow-up is recorded: it runs after whatever else waits in
            // the session (an interaction a crash interrupted), in order. One
            // that cannot run now stays unfinished for `recover` or an
            // interaction worker; the notice is delivered either way.
            self.run_waiting(job.session_id).await
        }
        .await;
        hold.release().await;
        outcome.map(|_| ()).map_err(|e: RuntimeError| e.to_string())
    }
}
