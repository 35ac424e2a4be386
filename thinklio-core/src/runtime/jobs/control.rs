//! The built-in capabilities through which an agent cancels or looks up a
//! job of the principal it serves.

use super::*;

/// The built-in `cancel_job` and `job_status` capabilities: an agent
/// cancels or looks at jobs of the principal it serves.
pub(crate) struct JobControl {
    manifest: CapabilityManifest,
    runtime: Weak<Inner>,
    cancel: bool,
}

/// The name of the built-in capability that cancels a job.
pub const CANCEL_JOB: &str = "cancel_job";
/// The name of the built-in capability that reports a job's state.
pub const JOB_STATUS: &str = "job_status";

impl JobControl {
    pub(crate) fn both(runtime: &Arc<Inner>) -> [JobControl; 2] {
        let params = |reason: bool| {
            let mut properties = json!({
                "job_id": { "type": "string", "description": "The job's id." }
            });
            if reason {
                properties["reason"] =
                    json!({ "type": "string", "description": "Why it is cancelled." });
            }
            json!({ "type": "object", "properties": properties, "required": ["job_id"] })
        };
        let mut cancel = CapabilityManifest::new(
            CANCEL_JOB,
            "Cancels a job started earlier for this user, with its subjobs.",
            CapabilityKind::Function,
            params(true),
        );
        cancel.side_effect = SideEffect::Idempotent;
        let mut status = CapabilityManifest::new(
            JOB_STATUS,
            "Tells where a job started earlier for this user stands, with its result when done.",
            CapabilityKind::Function,
            params(false),
        );
        status.side_effect = SideEffect::ReadOnly;
        [
            JobControl {
                manifest: cancel,
                runtime: Arc::downgrade(runtime),
                cancel: true,
            },
            JobControl {
                manifest: status,
                runtime: Arc::downgrade(runtime),
                cancel: false,
            },
        ]
    }
}

#[async_trait]
impl Capability for JobControl {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        let inner = self
            .runtime
            .upgrade()
            .ok_or_else(|| CapabilityError::failed("the runtime is gone"))?;
        let id: JobId = arguments["job_id"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| CapabilityError::InvalidArguments(format!("job_id: {e}")))?;
        let job = inner.store.job(id).await.map_err(|e| match e {
            StoreError::NotFound { .. } => CapabilityError::failed(format!("no job {id}")),
            other => CapabilityError::failed(other),
        })?;
        if job.principal.account != context.principal.account
            || job.principal.user != context.principal.user
        {
            // Another user's job is treated as absent.
            return Err(CapabilityError::failed(format!("no job {id}")));
        }
        if !self.cancel {
            let subjobs = inner
                .store
                .subjobs(id)
                .await
                .map_err(CapabilityError::failed)?;
            return Ok(crate::step::payload::to_json(&job_record(&job, &subjobs)));
        }
        if job.state.is_terminal() {
            return Ok(
                json!({ "job_id": id, "state": job.state, "note": "the job had already ended" }),
            );
        }
        let reason = arguments["reason"].as_str().unwrap_or_default();
        match inner
            .cancel_job(&job, CancelledBy::Agent(context.agent_id.clone()), reason)
            .await
        {
            Ok(job) => Ok(json!({ "job_id": id, "state": job.state })),
            Err(RuntimeError::Job(JobError::Ended { state, .. })) => {
                Ok(json!({ "job_id": id, "state": state, "note": "the job had already ended" }))
            }
            Err(e) => Err(CapabilityError::failed(e)),
        }
    }
}
