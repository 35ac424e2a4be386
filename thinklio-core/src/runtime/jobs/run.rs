//! Running jobs: deferred dispatch, subjobs and the usefulness rule,
//! deadlines, cancellation, takeover of a dead worker's jobs, recovery, and
//! the job worker.

use super::*;

impl Inner {
    /// Changes a job, then tells whatever depends on it: a parent waiting on
    /// subjobs, a dispatch running in this process, an idle worker.
    pub(crate) async fn change_job(
        self: &Arc<Self>,
        id: JobId,
        change: JobChange,
    ) -> Result<JobUpdate, RuntimeError> {
        let update = self.store.update_job(id, change, self.clock.now()).await?;
        if let Some(event) = &update.event {
            self.publish(event.clone());
        }
        if update.job.state.is_terminal() {
            if let Some(tx) = self
                .jobs
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
            {
                let _ = tx.send(true);
            }
            if let Some(parent) = update.job.parent_id {
                Box::pin(self.settle_parent(parent)).await?;
            }
        }
        if !update.notifications.is_empty() {
            self.jobs.wake.notify_one();
        }
        Ok(update)
    }

    /// Ends a job that waits on subjobs once they have all ended, by its
    /// usefulness rule. Returns whether it ended it.
    async fn settle_parent(self: &Arc<Self>, id: JobId) -> Result<bool, RuntimeError> {
        let parent = self.store.job(id).await?;
        if parent.state != JobState::InProgress {
            return Ok(false);
        }
        let subjobs = self.store.subjobs(id).await?;
        if subjobs.is_empty() || subjobs.iter().any(|s| !s.state.is_terminal()) {
            return Ok(false);
        }
        let resolved = subjobs
            .iter()
            .filter(|s| s.state == JobState::Resolved)
            .count();
        let results: Vec<Value> = subjobs
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "capability": s.capability,
                    "state": s.state,
                    "result": s.result,
                    "error": s.error,
                })
            })
            .collect();
        let ok = match parent.usefulness {
            Usefulness::AllSubjobs => resolved == subjobs.len(),
            Usefulness::AnyCompletedSubjob => resolved > 0,
        };
        let change = if ok {
            JobChange::to(JobState::Resolved).result(json!({ "subjobs": results }))
        } else {
            JobChange::to(JobState::Failed)
                .result(json!({ "subjobs": results }))
                .error(format!(
                    "{resolved} of {} subjobs resolved; the rule `{}` is not met",
                    subjobs.len(),
                    parent.usefulness
                ))
        };
        match self.change_job(id, change).await {
            Ok(_) => Ok(true),
            Err(RuntimeError::Store(e)) if ended_already(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends `id` and every unfinished job below it.
    pub(crate) async fn cancel_tree(
        self: &Arc<Self>,
        id: JobId,
        state: JobState,
        reason: String,
    ) -> Result<Job, RuntimeError> {
        let update = self
            .change_job(id, JobChange::to(state).error(reason.clone()))
            .await?;
        let mut stack = vec![id];
        while let Some(parent) = stack.pop() {
            for sub in self.store.subjobs(parent).await? {
                stack.push(sub.id);
                if sub.state.is_terminal() {
                    continue;
                }
                let why = format!("its parent job {parent} ended: {reason}");
                match self
                    .change_job(sub.id, JobChange::to(JobState::Cancelled).error(why))
                    .await
                {
                    Ok(_) => {}
                    Err(RuntimeError::Store(e)) if ended_already(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(update.job)
    }

    /// Creates the job of a deferred `act` step (once per step key).
    pub(crate) async fn create_deferred_job(
        &self,
        interaction: &Interaction,
        step_id: StepId,
        idempotency_key: &str,
        manifest: &CapabilityManifest,
        input: Value,
    ) -> Result<Job, StoreError> {
        let now = self.clock.now();
        let mut observers = vec![ObserverKind::FollowUp];
        observers.extend(self.jobs.default_observers.iter().cloned());
        let job = self
            .store
            .create_job(
                NewJob {
                    parent_id: None,
                    session_id: interaction.session_id,
                    interaction_id: interaction.id,
                    step_id: Some(step_id),
                    principal: interaction.principal,
                    capability: manifest.name.clone(),
                    input,
                    usefulness: manifest.usefulness,
                    deadline: Some(now.plus(manifest.timeout)),
                    observers,
                    key: Some(idempotency_key.to_owned()),
                },
                now,
            )
            .await?;
        self.jobs.wake.notify_one();
        Ok(job)
    }

    /// Hands a claimed (`dispatched`) job to its capability and records
    /// what came of it.
    async fn run_job(self: Arc<Self>, job: Job) -> Result<(), RuntimeError> {
        let Some(cap) = self.capabilities.get(&job.capability) else {
            let why = format!(
                "no capability named `{}` is registered to run it",
                job.capability
            );
            return self
                .end_job(job.id, JobChange::to(JobState::Failed).error(why))
                .await;
        };
        let interaction = self.store.interaction(job.interaction_id).await?;
        if let Err(refused) = self.check_budgets(&job.principal, &interaction).await {
            let change = JobChange::to(JobState::Failed)
                .error(format!("{}: {}", refused.code, refused.message));
            return self.end_job(job.id, change).await;
        }
        let heartbeat = self.renew_job(job.id);
        let (tx, mut ended) = watch::channel(false);
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id, tx);
        let handle = Arc::new(RuntimeJobHandle {
            inner: Arc::downgrade(&self),
            job: job.clone(),
            subjobs: Arc::new(AtomicU32::new(0)),
            callback: self.jobs.callbacks.as_ref().map(|c| c.callback(job.id)),
        });
        let context = InvocationContext {
            interaction_id: job.interaction_id,
            step_id: job
                .step_id
                .unwrap_or_else(|| StepId::from_uuid(uuid::Uuid::nil())),
            idempotency_key: format!("job:{}", job.id),
            attempt: 1,
            principal: job.principal,
            agent_id: interaction.agent_id.clone(),
            delegation_depth: interaction.delegation_depth,
            meter: UsageMeter::default(),
            job: Some(Arc::clone(&handle) as Arc<dyn JobHandle>),
        };
        let call = std::panic::AssertUnwindSafe(cap.dispatch(&context, job.input.clone()))
            .catch_unwind()
            .map(|r| {
                r.unwrap_or_else(|p| {
                    Err(CapabilityError::Panicked(
                        crate::runtime::harness::panic_message(p.as_ref()),
                    ))
                })
            });
        let outcome = if cap.manifest().kind == CapabilityKind::Agent {
            // A delegate's child interaction stops itself at its next step
            // when the job ends, so every step it wrote is settled.
            Some(call.await)
        } else {
            tokio::select! {
                r = call => Some(r),
                _ = ended.wait_for(|e| *e) => None,
            }
        };
        heartbeat.abort();
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        let Some(outcome) = outcome else {
            tracing::info!(job_id = %job.id, "job ended while it ran; its dispatch was stopped");
            return Ok(());
        };
        let change = match outcome {
            Ok(Dispatch::Done(value)) if handle.subjobs_created() > 0 => {
                self.end_job(job.id, JobChange::to(JobState::InProgress).context(value))
                    .await?;
                self.settle_parent(job.id).await?;
                return Ok(());
            }
            Ok(Dispatch::Done(value)) => JobChange::to(JobState::Resolved).result(value),
            Ok(Dispatch::Accepted) => {
                if self.store.job(job.id).await?.state == JobState::Dispatched {
                    self.end_job(job.id, JobChange::to(JobState::InProgress))
                        .await?;
                }
                if handle.subjobs_created() > 0 {
                    self.settle_parent(job.id).await?;
                }
                return Ok(());
            }
            Err(e) => JobChange::to(JobState::Failed).error(format!("{}: {e}", e.code())),
        };
        self.end_job(job.id, change).await
    }

    /// Applies a change that may find the job already ended (cancelled or
    /// timed out meanwhile): that is not an error.
    async fn end_job(self: &Arc<Self>, id: JobId, change: JobChange) -> Result<(), RuntimeError> {
        match self.change_job(id, change).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Store(e)) if ended_already(&e) => {
                tracing::info!(job_id = %id, "job had already ended");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves overdue jobs to `timed_out` (their subjobs are cancelled).
    async fn time_out_overdue(self: &Arc<Self>) -> Result<usize, RuntimeError> {
        let mut n = 0;
        for job in self.store.overdue_jobs(self.clock.now()).await? {
            let reason = format!(
                "the job passed its deadline ({} ms after its creation)",
                job.deadline
                    .map(|d| d.since(job.created_at).as_millis())
                    .unwrap_or_default()
            );
            match self.cancel_tree(job.id, JobState::TimedOut, reason).await {
                Ok(_) => n += 1,
                Err(RuntimeError::Store(e)) if ended_already(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Claims a pending job, or takes over one whose worker's lease ran
    /// out: a repeatable one is dispatched again with its key; an
    /// `external` one fails as outcome unknown and `None` is returned for it.
    async fn claim_job(self: &Arc<Self>) -> Result<Option<Job>, RuntimeError> {
        loop {
            let Some(update) = self
                .store
                .claim_job(&[], &self.worker, self.clock.now(), self.config.task_lease)
                .await?
            else {
                return Ok(None);
            };
            if let Some(event) = update.event {
                self.publish(event);
            }
            if !update.notifications.is_empty() {
                self.jobs.wake.notify_one();
            }
            if update.taken_over && !self.repeatable(&update.job) {
                tracing::warn!(job_id = %update.job.id, "took over an external job whose worker died; its outcome is unknown");
                let e = CapabilityError::OutcomeUnknown;
                let change = JobChange::to(JobState::Failed).error(format!("{}: {e}", e.code()));
                self.end_job(update.job.id, change).await?;
                continue;
            }
            return Ok(Some(update.job));
        }
    }

    /// Whether a job's dispatch may run again with the same key.
    fn repeatable(&self, job: &Job) -> bool {
        self.capabilities.get(&job.capability).is_none_or(|c| {
            c.manifest().side_effect.is_repeatable() || c.manifest().kind == CapabilityKind::Agent
        })
    }

    /// Renews this runtime's lease of a dispatched job every third of its
    /// length while its dispatch runs.
    fn renew_job(self: &Arc<Self>, id: JobId) -> JoinHandle<()> {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let lease = inner.config.task_lease;
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = inner.clock.now().plus(lease);
                match inner.store.renew_job(id, &inner.worker, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "could not renew a job lease")
                    }
                }
            }
        })
    }

    /// Continues jobs a crash interrupted; see the module documentation.
    pub(crate) async fn recover_jobs(self: &Arc<Self>) -> Result<JobRecovery, RuntimeError> {
        let unfinished = self.store.unfinished_jobs().await?;
        let mut report = JobRecovery {
            unfinished: unfinished.len(),
            ..JobRecovery::default()
        };
        for job in unfinished {
            match job.state {
                // Its worker stopped (or, on a shared store, may still be
                // running it): a job worker takes it over when its lease runs
                // out, dispatching it again or failing it as outcome unknown.
                JobState::Dispatched => report.dispatched += 1,
                JobState::InProgress if self.settle_parent(job.id).await? => {
                    report.settled += 1;
                }
                _ => {}
            }
        }
        // A delegate's child interaction whose job ended while the process
        // was down is closed the way a running one closes itself.
        for child in self.store.unfinished_interactions().await? {
            let Some(job_id) = child
                .inbound_id
                .as_deref()
                .and_then(|k| k.strip_prefix("job:"))
                .and_then(|k| k.parse::<JobId>().ok())
            else {
                continue;
            };
            if child.parent_interaction_id.is_none()
                || !self.store.job(job_id).await?.state.is_terminal()
            {
                continue;
            }
            if self.close_child(child, job_id).await? {
                report.children_closed += 1;
            }
        }
        Ok(report)
    }

    async fn close_child(
        self: &Arc<Self>,
        child: Interaction,
        job: JobId,
    ) -> Result<bool, RuntimeError> {
        let session = self.session(child.session_id).await?;
        let agent = self.agent_of(&child).await?;
        let steps = self.store.steps(child.id).await?;
        let id = child.id;
        match Run::new(Arc::clone(self), session, agent, child, steps, false)
            .for_job(job)
            .drive()
            .await
        {
            Ok(_) | Err(RuntimeError::InteractionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        let state = InteractionState::derive(&self.store.steps(id).await?);
        Ok(state.is_finished())
    }

    /// One pass of a worker: deadlines, claims (and takeovers of jobs whose
    /// worker died), notices. With `inline`, dispatches run before it
    /// returns; otherwise they are spawned on the runtime's tokio workers.
    async fn job_pass(self: &Arc<Self>, inline: bool) -> Result<JobRun, RuntimeError> {
        let runtime = Runtime {
            inner: Arc::clone(self),
        };
        let mut run = JobRun {
            timed_out: self.time_out_overdue().await?,
            // Proposals nobody decided in time expire here too.
            approvals_expired: runtime.approvals().expire_due().await?,
            ..JobRun::default()
        };
        let mut jobs = Vec::new();
        while let Some(job) = self.claim_job().await? {
            jobs.push(job);
            if inline {
                break;
            }
        }
        for job in jobs {
            run.dispatched += 1;
            let rt = Arc::clone(self);
            let id = job.id;
            if inline {
                rt.run_job(job).await?;
            } else {
                tokio::spawn(async move {
                    if let Err(e) = rt.run_job(job).await {
                        tracing::error!(job_id = %id, error = %e, "job dispatch could not be recorded");
                    }
                });
            }
        }
        let (notified, failures) = self.deliver_notices().await?;
        run.notified = notified;
        run.notice_failures = failures;
        Ok(run)
    }
}

/// Jobs: deferred work, as one actor may read, cancel and report on it
/// ([`Runtime::jobs`]). A user reaches their own jobs; an admin (with the
/// directory enforced) or the host acting for the account reaches any of
/// the account's; no one reaches another account's.
#[derive(Clone, Copy)]
pub struct Jobs<'a> {
    pub(in crate::runtime) rt: &'a Runtime,
}

impl fmt::Debug for Jobs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Jobs<'_> {
    /// The job `id`, if `by` may see it.
    pub async fn get(&self, by: impl Into<Actor>, id: JobId) -> Result<Job, RuntimeError> {
        let inner = &self.rt.inner;
        let job = inner.store.job(id).await?;
        authorize_job(inner, &by.into(), &job).await?;
        Ok(job)
    }

    /// The subjobs of a job, in order of creation, if `by` may see it.
    pub async fn subjobs(&self, by: impl Into<Actor>, id: JobId) -> Result<Vec<Job>, RuntimeError> {
        let inner = &self.rt.inner;
        let job = inner.store.job(id).await?;
        authorize_job(inner, &by.into(), &job).await?;
        Ok(inner.store.subjobs(id).await?)
    }

    /// Dispatches `call` as a job in `session`, as `by` (the session's user,
    /// an admin of an enforced directory, or the host acting for the
    /// account). It is recorded as an interaction of kind
    /// [`Dispatch`](crate::interaction::InteractionKind::Dispatch): one
    /// deferred `act` step, governed like a model's call (the capability must
    /// be one the session's agent may call, within the account's policy and
    /// budgets), then a `respond` step saying the work is under way; no model
    /// is called. The job runs on the job worker and its end comes back to
    /// the session as a follow-up, also without a model call.
    ///
    /// `id` is the caller's id of the request: dispatching again with it
    /// returns the same job. A call that writes no job is refused with
    /// [`JobError::NotDispatched`], its reason recorded on the step.
    pub async fn dispatch(
        &self,
        by: impl Into<Actor>,
        session: SessionId,
        call: DispatchCall,
        id: Option<String>,
    ) -> Result<Job, RuntimeError> {
        let inner = &self.rt.inner;
        let found = inner.session(session).await?;
        let need = Need::User(found.principal.user);
        inner
            .authorize(&by.into(), found.principal.account, need)
            .await?;
        let message = Inbound {
            text: to_json(&call).to_string(),
            id,
            images: Vec::new(),
        };
        self.rt.check_message(&message)?;
        let _guard = inner.locks.lock(session).await;
        let mut hold = inner.hold_session(session).await?;
        let fresh = hold.fresh();
        let result = self
            .rt
            .send_held(session, message, InteractionKind::Dispatch, fresh)
            .await;
        hold.release().await;
        let steps = inner.store.steps(result?.interaction_id).await?;
        let act = steps.iter().find(|s| s.kind == StepKind::Act);
        let job = act
            .and_then(|s| s.output_as::<ActOutput>().ok().flatten())
            .and_then(|o| o.dispatched_job());
        match job {
            Some(job) => Ok(inner.store.job(job.job_id).await?),
            None => {
                let (code, message) = act.and_then(|s| s.error.as_ref()).map_or_else(
                    || (ErrorCode::StepFailed, "the call was not made".to_owned()),
                    |e| (e.code, e.message.clone()),
                );
                Err(JobError::NotDispatched {
                    capability: call.capability,
                    code,
                    message,
                }
                .into())
            }
        }
    }

    /// Registers (or replaces) the in-process observer named `name`.
    pub fn register_observer_callback(
        &self,
        name: impl Into<String>,
        callback: impl ObserverCallback,
    ) {
        self.rt
            .inner
            .jobs
            .observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::new(callback));
    }

    /// Cancels a job and its unfinished subjobs, as `by`; a delegate's
    /// child interaction stops at its next step. A user may cancel only
    /// their own jobs (an admin, with the directory enforced, any of the
    /// account's; [`JobError::Forbidden`] otherwise); the host acting for
    /// the account cancels as the system. An ended job is refused with
    /// [`JobError::Ended`].
    pub async fn cancel(
        &self,
        by: impl Into<Actor>,
        id: JobId,
        reason: &str,
    ) -> Result<Job, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        let job = inner.store.job(id).await?;
        authorize_job(inner, &by, &job).await?;
        let cancelled_by = match by {
            Actor::User(p) => CancelledBy::User(p.user),
            Actor::Account(_) => CancelledBy::System,
        };
        inner.cancel_job(&job, cancelled_by, reason).await
    }

    /// Takes a report from outside work on a job (the callback of a webhook
    /// dispatched as a job): `token` must be the job's
    /// [`JobCallback::token`], which stands for the actor. Progress moves a
    /// dispatched job to `in_progress`; a result or a failure ends it.
    pub async fn report(
        &self,
        id: JobId,
        token: &str,
        report: JobReport,
    ) -> Result<Job, RuntimeError> {
        let inner = &self.rt.inner;
        let callbacks = inner.jobs.callbacks.as_ref().ok_or(JobError::NoCallbacks)?;
        if !callbacks.verify(id, token) {
            return Err(JobError::BadToken { job: id }.into());
        }
        let job = inner.store.job(id).await?;
        if job.state.is_terminal() {
            return Err(JobError::Ended {
                job: id,
                state: job.state,
            }
            .into());
        }
        let change = match report {
            JobReport::Progress { progress } => {
                let mut c = if job.state == JobState::InProgress {
                    JobChange::default()
                } else {
                    JobChange::to(JobState::InProgress)
                };
                c.progress = progress;
                c
            }
            JobReport::Resolved { result, context } => {
                let mut c = JobChange::to(JobState::Resolved).result(result);
                c.context = context;
                c
            }
            JobReport::Failed { error } => JobChange::to(JobState::Failed).error(error),
        };
        Ok(inner.change_job(id, change).await?.job)
    }
}

/// Whether `by` may reach `job`: a refusal of a user is [`JobError::Forbidden`].
async fn authorize_job(inner: &Inner, by: &Actor, job: &Job) -> Result<(), RuntimeError> {
    match inner
        .authorize(by, job.principal.account, Need::User(job.principal.user))
        .await
    {
        Err(RuntimeError::Forbidden(_)) => Err(JobError::Forbidden { job: job.id }.into()),
        other => other,
    }
}

impl Inner {
    /// Cancels `job` and its unfinished subjobs (the check of who may is the
    /// caller's).
    pub(crate) async fn cancel_job(
        self: &Arc<Self>,
        job: &Job,
        by: CancelledBy,
        reason: &str,
    ) -> Result<Job, RuntimeError> {
        let id = job.id;
        if job.state.is_terminal() {
            return Err(JobError::Ended {
                job: id,
                state: job.state,
            }
            .into());
        }
        let why = if reason.is_empty() {
            format!("cancelled by {by}")
        } else {
            format!("cancelled by {by}: {reason}")
        };
        match self.cancel_tree(id, JobState::Cancelled, why).await {
            Err(RuntimeError::Store(StoreError::IllegalJobTransition { from, .. })) => {
                Err(JobError::Ended {
                    job: id,
                    state: from,
                }
                .into())
            }
            other => other,
        }
    }
}

impl Runtime {
    /// Runs the job work that is due now until none is: deadlines, claims
    /// and dispatches (one at a time, each to its end), notices. For tests
    /// and batch hosts; a server runs [`spawn_job_worker`](Self::spawn_job_worker).
    pub async fn run_due_jobs(&self) -> Result<JobRun, RuntimeError> {
        let mut total = JobRun::default();
        loop {
            let run = self.inner.job_pass(true).await?;
            total.dispatched += run.dispatched;
            total.timed_out += run.timed_out;
            total.notified += run.notified;
            total.notice_failures += run.notice_failures;
            total.approvals_expired += run.approvals_expired;
            if run.dispatched == 0 && run.timed_out == 0 && run.notified == 0 {
                return Ok(total);
            }
        }
    }

    /// Starts a background job worker: it dispatches jobs as they are
    /// created (each on its own tokio task), times out overdue ones,
    /// expires proposals nobody decided in time and delivers notices, waking when there is work and checking every
    /// `poll` for deadlines and retries.
    pub fn spawn_job_worker(&self, poll: Duration) -> JobWorker {
        let inner = Arc::clone(&self.inner);
        JobWorker::spawn(|mut stopped| async move {
            loop {
                if *stopped.borrow() || inner.closing() {
                    return;
                }
                let busy = match inner.job_pass(false).await {
                    Ok(run) => run.dispatched > 0 || run.timed_out > 0 || run.notified > 0,
                    Err(e) => {
                        tracing::error!(error = %e, "job worker could not reach the store");
                        false
                    }
                };
                if !busy {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = inner.closed() => {}
                        _ = inner.jobs.wake.notified() => {}
                        _ = inner.store.wait_for_work(poll) => {}
                    }
                }
            }
        })
    }
}
