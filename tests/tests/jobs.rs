//! Jobs end to end: deferred `act` steps, subjobs, observers, follow-ups,
//! deadlines and cancellation by each party.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use thinklio_core::step::payload::DispatchCall;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

#[derive(Deserialize, JsonSchema)]
struct Topic {
    /// What to research.
    topic: String,
}

/// `research(topic)`: deferred; splits the work into two `lookup` subjobs
/// and hands its topic to the follow-up as the context bundle.
fn research() -> FunctionCapability {
    FunctionCapability::builder("research", "Researches a topic in the background.")
        .default_mode(StepMode::Deferred)
        .usefulness(Usefulness::AnyCompletedSubjob)
        .timeout(Duration::from_secs(3600))
        .handler_with_context(|cx: InvocationContext, args: Topic| async move {
            let job = cx.job.ok_or("research runs as a job")?;
            for source in ["papers", "forums"] {
                job.subjob("lookup", json!({ "topic": args.topic, "source": source }))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(json!({ "topic": args.topic, "asked_by": "research" }))
        })
}

#[derive(Deserialize, JsonSchema)]
struct Lookup {
    /// The topic.
    topic: String,
    /// Where to look.
    source: String,
}

fn lookup() -> FunctionCapability {
    FunctionCapability::builder("lookup", "Looks a topic up in one source.").handler(
        |args: Lookup| async move { Ok::<_, String>(format!("{} on {}", args.source, args.topic)) },
    )
}

/// The content of the system message a follow-up carries, if any.
fn job_report(r: &ChatRequest) -> Option<String> {
    r.messages
        .iter()
        .find(|m| m.role == Role::System && m.content.starts_with("Deferred work reported back"))
        .map(|m| m.content.clone())
}

/// The model of these tests: a follow-up is answered with the job report it
/// carries; `research X` calls the research tool; `cancel job ID` calls
/// `cancel_job`; a tool result is acknowledged.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        match last.role {
            Role::Tool => ScriptedReply::text(format!("Under way: {}", last.content)),
            Role::User => {
                if let Some(report) = job_report(r) {
                    return ScriptedReply::text(format!("Follow-up. {report}"));
                }
                let text = last.content.clone();
                if let Some(id) = text.strip_prefix("cancel job ") {
                    return ScriptedReply::tool_call(
                        "c1",
                        CANCEL_JOB,
                        json!({ "job_id": id, "reason": "the user asked" }).to_string(),
                    );
                }
                if let Some(topic) = text.strip_prefix("research ") {
                    let tool = r
                        .tools
                        .iter()
                        .find(|t| t.name != CANCEL_JOB && t.name != JOB_STATUS)
                        .map(|t| t.name.clone())
                        .unwrap();
                    return ScriptedReply::tool_call(
                        "r1",
                        tool,
                        json!({ "topic": topic, "task": topic }).to_string(),
                    );
                }
                ScriptedReply::text(format!("ok: {text}"))
            }
            _ => ScriptedReply::text("ok"),
        }
    })
}

/// Records what an in-process observer was told.
#[derive(Clone, Default)]
struct Audit(Arc<Mutex<Vec<(NotificationId, JobId, Notice)>>>);

#[async_trait::async_trait]
impl ObserverCallback for Audit {
    async fn notify(&self, n: &JobNotice) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((n.notification_id, n.job.id, n.notice));
        Ok(())
    }
}

impl Audit {
    fn notices_of(&self, job: JobId) -> Vec<Notice> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, j, _)| *j == job)
            .map(|(_, _, n)| *n)
            .collect()
    }
}

/// Makes every deferred job of a runtime tell an audit.
trait Audited {
    fn audited(self, audit: &Audit) -> Self;
}

impl Audited for RuntimeBuilder {
    fn audited(self, audit: &Audit) -> Self {
        self.observer_callback("audit", audit.clone())
            .job_observer(ObserverKind::Callback {
                name: "audit".into(),
            })
    }
}

/// Opens a session, sends `text` (which dispatches a job) and returns both.
async fn start(rt: &Runtime, text: &str) -> (Session, Job) {
    let session = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    rt.send(session.id, text).await.unwrap();
    let job = job_of_first_interaction(rt, session.id).await;
    (session, job)
}

/// A job made by hand beside `job`, for `capability`.
fn beside(job: &Job, parent: Option<JobId>, capability: &str, key: Option<&str>) -> NewJob {
    NewJob {
        parent_id: parent,
        session_id: job.session_id,
        interaction_id: job.interaction_id,
        step_id: job.step_id,
        principal: job.principal,
        capability: capability.into(),
        input: json!({}),
        usefulness: Usefulness::AllSubjobs,
        deadline: None,
        observers: vec![],
        key: key.map(str::to_owned),
    }
}

async fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("jobs.db")).await.unwrap()
}

fn assistant() -> AgentDefinition {
    AgentDefinition::new("assistant", "m").capabilities(["research", CANCEL_JOB, JOB_STATUS])
}

/// The only job the first interaction of `session` dispatched.
async fn job_of_first_interaction(rt: &Runtime, session: SessionId) -> Job {
    let first = &rt
        .sessions()
        .interactions(Principal::local(), session)
        .await
        .unwrap()[0];
    let act = rt
        .sessions()
        .steps(Principal::local(), first.id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.kind == StepKind::Act)
        .unwrap();
    assert_eq!(act.mode, StepMode::Deferred);
    assert_eq!(act.state, StepState::Succeeded);
    let id: JobId = act.output.unwrap()["result"]["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    rt.jobs().get(Principal::local(), id).await.unwrap()
}

async fn reply_of(rt: &Runtime, interaction: InteractionId) -> String {
    rt.sessions()
        .reply(Principal::local(), interaction)
        .await
        .unwrap()
        .expect("the follow-up replied")
        .text
}

#[tokio::test]
async fn a_deferred_job_with_two_subjobs_reports_back_in_follow_ups() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::default();
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model(model())
        .capability(research())
        .capability(lookup())
        .agent(assistant())
        .audited(&audit)
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();

    let reply = rt.send(session.id, "research sqlite").await.unwrap();
    assert!(reply.text.starts_with("Under way:"), "{}", reply.text);
    assert!(
        reply.text.contains("runs in the background"),
        "{}",
        reply.text
    );
    let job = job_of_first_interaction(&rt, session.id).await;
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.capability, "research");
    assert_eq!(job.session_id, session.id);
    assert!(job.deadline.is_some());

    let mut events = rt.subscribe();
    let run = rt.run_due_jobs().await.unwrap();
    assert_eq!(run.dispatched, 3, "the job and its two subjobs");
    let mut moves = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::JobStateChanged && e.payload["job_id"] == json!(job.id) {
            moves.push(e.payload["to"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        moves,
        ["dispatched", "in_progress", "resolved"],
        "subscribers see each move"
    );
    assert_eq!(run.notice_failures, 0);

    let job = rt.jobs().get(Principal::local(), job.id).await.unwrap();
    assert_eq!(job.state, JobState::Resolved);
    assert_eq!(
        job.context,
        Some(json!({ "topic": "sqlite", "asked_by": "research" }))
    );
    let subjobs = rt.jobs().subjobs(Principal::local(), job.id).await.unwrap();
    assert_eq!(subjobs.len(), 2);
    assert!(subjobs.iter().all(|s| s.state == JobState::Resolved));
    let results: Vec<&Value> = job.result.as_ref().unwrap()["subjobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["result"])
        .collect();
    assert_eq!(
        results,
        [&json!("papers on sqlite"), &json!("forums on sqlite")]
    );

    // The observer heard each relevant change exactly once.
    assert_eq!(
        audit.notices_of(job.id),
        [Notice::Dispatched, Notice::Partial, Notice::Resolved]
    );
    // The follow-ups: one for the partial output, one for the result, in
    // the same session, each with the job in its context step.
    let interactions = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    assert_eq!(interactions.len(), 3);
    let follow_ups = &interactions[1..];
    assert!(follow_ups.iter().all(|i| i.job_id == Some(job.id)));
    assert!(
        follow_ups[0].input.contains("partial"),
        "{}",
        follow_ups[0].input
    );
    let last = reply_of(&rt, follow_ups[1].id).await;
    assert!(last.starts_with("Follow-up."), "{last}");
    assert!(last.contains("is resolved"), "{last}");
    assert!(
        last.contains("papers on sqlite") && last.contains("forums on sqlite"),
        "{last}"
    );
    assert!(last.contains(r#""asked_by":"research""#), "{last}");
    let context = rt
        .sessions()
        .steps(Principal::local(), follow_ups[1].id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.kind == StepKind::Context)
        .unwrap();
    assert_eq!(context.output.unwrap()["job"]["state"], "resolved");
    let partial = reply_of(&rt, follow_ups[0].id).await;
    assert!(partial.contains("Follow-up."), "{partial}");

    // Nothing is left to do, and nothing is told twice.
    let again = rt.run_due_jobs().await.unwrap();
    assert_eq!((again.dispatched, again.notified), (0, 0));
    assert_eq!(audit.0.lock().unwrap().len(), 3);
    assert_eq!(
        rt.sessions()
            .interactions(Principal::local(), session.id)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn a_deferred_step_run_again_finds_its_job_instead_of_creating_another() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model(model())
        .capability(research())
        .capability(lookup())
        .agent(assistant())
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    rt.send(session.id, Inbound::with_id("research wal", "m1"))
        .await
        .unwrap();
    // The same message again is the same interaction: no second job.
    rt.send(session.id, Inbound::with_id("research wal", "m1"))
        .await
        .unwrap();
    assert_eq!(store(&dir).await.unfinished_jobs().await.unwrap().len(), 1);
}

/// A capability whose work is taken over by something outside that
/// reports back later (or never).
struct Outside {
    manifest: CapabilityManifest,
}

impl Outside {
    fn new(timeout: Duration) -> Self {
        let mut manifest = CapabilityManifest::new(
            "research",
            "Hands research to an outside workflow.",
            CapabilityKind::Webhook,
            json!({ "type": "object" }),
        );
        manifest.default_mode = StepMode::Deferred;
        manifest.side_effect = SideEffect::Idempotent;
        manifest.timeout = timeout;
        Self { manifest }
    }
}

#[async_trait::async_trait]
impl Capability for Outside {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(&self, _: &InvocationContext, _: Value) -> Result<Value, CapabilityError> {
        Err(CapabilityError::failed("only runs as a job"))
    }

    async fn dispatch(
        &self,
        cx: &InvocationContext,
        _: Value,
    ) -> Result<Dispatch, CapabilityError> {
        cx.job
            .as_ref()
            .and_then(|j| j.callback())
            .ok_or_else(|| CapabilityError::failed("no callback"))?;
        Ok(Dispatch::Accepted)
    }
}

#[tokio::test]
async fn an_overdue_job_times_out_and_its_observers_hear_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let audit = Audit::default();
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model(model())
        .clock(clock.clone())
        .capability(Outside::new(Duration::from_secs(60)))
        .agent(assistant())
        .job_callbacks(JobCallbacks::new(
            "http://host/v1/jobs/{job}/report",
            "s3cret",
        ))
        .audited(&audit)
        .build()
        .unwrap();
    let (session, job) = start(&rt, "research lsm trees").await;
    rt.run_due_jobs().await.unwrap();
    assert_eq!(
        rt.jobs()
            .get(Principal::local(), job.id)
            .await
            .unwrap()
            .state,
        JobState::InProgress
    );

    clock.advance(Duration::from_secs(59));
    assert_eq!(rt.run_due_jobs().await.unwrap().timed_out, 0);
    clock.advance(Duration::from_secs(1));
    let run = rt.run_due_jobs().await.unwrap();
    assert_eq!(run.timed_out, 1);
    let ended = rt.jobs().get(Principal::local(), job.id).await.unwrap();
    assert_eq!(ended.state, JobState::TimedOut);
    assert!(ended.error.unwrap().contains("deadline"));
    assert_eq!(
        audit.notices_of(job.id),
        [Notice::Dispatched, Notice::TimedOut]
    );
    let interactions = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    let follow_up = reply_of(&rt, interactions.last().unwrap().id).await;
    assert!(follow_up.contains("is timed_out"), "{follow_up}");

    // A late report is refused; nothing changes and nobody is told again.
    let token = JobCallbacks::new("http://host/v1/jobs/{job}/report", "s3cret")
        .callback(job.id)
        .token()
        .to_owned();
    let late = rt
        .jobs()
        .report(
            job.id,
            &token,
            JobReport::Resolved {
                result: json!(1),
                context: None,
            },
        )
        .await;
    assert!(matches!(
        late,
        Err(RuntimeError::Job(JobError::Ended {
            state: JobState::TimedOut,
            ..
        }))
    ));
    assert_eq!(rt.run_due_jobs().await.unwrap().notified, 0);
}

#[tokio::test]
async fn outside_work_reports_progress_and_its_result_with_the_jobs_token() {
    let dir = tempfile::tempdir().unwrap();
    let callbacks = JobCallbacks::new("https://host/v1/jobs/{job}/report", "s3cret");
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model(model())
        .capability(Outside::new(Duration::from_secs(600)))
        .agent(assistant())
        .job_callbacks(callbacks.clone())
        .build()
        .unwrap();
    let (session, job) = start(&rt, "research btrees").await;
    rt.run_due_jobs().await.unwrap();
    let callback = callbacks.callback(job.id);
    assert_eq!(
        callback.url(),
        format!("https://host/v1/jobs/{}/report", job.id)
    );
    assert!(
        !format!("{callback:?}").contains(callback.token()),
        "the token stays out of Debug"
    );

    let wrong = rt
        .jobs()
        .report(job.id, "00ff", JobReport::Progress { progress: None })
        .await;
    assert!(matches!(
        wrong,
        Err(RuntimeError::Job(JobError::BadToken { .. }))
    ));
    let other = callbacks.callback(JobId::new());
    let stolen = rt
        .jobs()
        .report(
            job.id,
            other.token(),
            JobReport::Progress { progress: None },
        )
        .await;
    assert!(matches!(
        stolen,
        Err(RuntimeError::Job(JobError::BadToken { .. }))
    ));

    let progress = rt
        .jobs()
        .report(
            job.id,
            callback.token(),
            JobReport::Progress {
                progress: Some(json!({ "done": 0.5 })),
            },
        )
        .await
        .unwrap();
    assert_eq!(progress.state, JobState::InProgress);
    assert_eq!(progress.progress, Some(json!({ "done": 0.5 })));
    let resolved = rt
        .jobs()
        .report(
            job.id,
            callback.token(),
            JobReport::Resolved {
                result: json!("b-trees win"),
                context: Some(json!({ "k": 1 })),
            },
        )
        .await
        .unwrap();
    assert_eq!(resolved.state, JobState::Resolved);
    rt.run_due_jobs().await.unwrap();
    let interactions = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    let follow_up = reply_of(&rt, interactions.last().unwrap().id).await;
    assert!(follow_up.contains("b-trees win"), "{follow_up}");

    // Without callbacks configured, reports are refused with a clear error.
    let dir2 = tempfile::tempdir().unwrap();
    let bare = Runtime::builder()
        .store(store(&dir2).await)
        .model(model())
        .build()
        .unwrap();
    let none = bare
        .jobs()
        .report(
            job.id,
            callback.token(),
            JobReport::Failed { error: "x".into() },
        )
        .await
        .unwrap_err();
    assert_eq!(none.code(), "job.no_callbacks");
}

async fn dispatched_research(dir: &tempfile::TempDir) -> (Runtime, Session, Job, Audit) {
    let audit = Audit::default();
    let rt = Runtime::builder()
        .store(store(dir).await)
        .model(model())
        .capability(Outside::new(Duration::from_secs(600)))
        .capability(lookup())
        .agent(assistant())
        .job_callbacks(JobCallbacks::new("https://host/{job}", "k"))
        .audited(&audit)
        .build()
        .unwrap();
    let (session, job) = start(&rt, "research queues").await;
    rt.run_due_jobs().await.unwrap();
    (rt, session, job, audit)
}

#[tokio::test]
async fn the_user_cancels_their_own_job_and_its_subjobs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _session, job, audit) = dispatched_research(&dir).await;
    // Subjobs added by hand, as outside work reporting in parts would.
    let now = Timestamp::from_millis(0);
    let a = store(&dir)
        .await
        .create_job(
            beside(&job, Some(job.id), "unregistered_worker", Some("a")),
            now,
        )
        .await
        .unwrap();
    let b = store(&dir)
        .await
        .create_job(
            beside(&job, Some(job.id), "unregistered_worker", Some("b")),
            now,
        )
        .await
        .unwrap();

    let stranger = UserId::new();
    let refused = rt
        .jobs()
        .cancel(
            Principal::new(job.principal.account, stranger),
            job.id,
            "mine now",
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "job.forbidden");
    assert_eq!(
        rt.jobs()
            .get(Principal::local(), job.id)
            .await
            .unwrap()
            .state,
        JobState::InProgress
    );

    let cancelled = rt
        .jobs()
        .cancel(job.principal, job.id, "changed my mind")
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        cancelled.error.as_deref(),
        Some("cancelled by the user: changed my mind")
    );
    for s in [a.id, b.id] {
        let s = rt.jobs().get(Principal::local(), s).await.unwrap();
        assert_eq!(s.state, JobState::Cancelled);
        assert!(s.error.unwrap().contains("its parent job"));
    }
    let again = rt
        .jobs()
        .cancel(job.principal, job.id, "")
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        RuntimeError::Job(JobError::Ended {
            state: JobState::Cancelled,
            ..
        })
    ));
    rt.run_due_jobs().await.unwrap();
    assert_eq!(
        audit.notices_of(job.id),
        [Notice::Dispatched, Notice::Cancelled]
    );
}

#[tokio::test]
async fn the_agent_cancels_a_job_through_the_built_in_capability() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, session, job, audit) = dispatched_research(&dir).await;
    let reply = rt
        .send(session.id, format!("cancel job {}", job.id))
        .await
        .unwrap();
    assert!(reply.text.contains("cancelled"), "{}", reply.text);
    let job = rt.jobs().get(Principal::local(), job.id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        job.error.as_deref(),
        Some("cancelled by the agent `assistant`: the user asked")
    );
    rt.run_due_jobs().await.unwrap();
    assert_eq!(
        audit.notices_of(job.id),
        [Notice::Dispatched, Notice::Cancelled]
    );

    // Another user's agent cannot see the job, let alone cancel it.
    let other = rt
        .open_session(
            Principal::new(AccountId::new(), UserId::new()),
            "assistant",
            "chat",
            None,
        )
        .await
        .unwrap();
    let reply = rt
        .send(other.id, format!("cancel job {}", job.id))
        .await
        .unwrap();
    assert!(reply.text.contains("no job"), "{}", reply.text);
}

/// A model that holds the delegate's `think` until released, to cancel the
/// job while its child interaction runs.
fn gated_model(
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<tokio::sync::Notify>,
) -> impl ChatModel {
    struct Gated {
        inner: ScriptedModel,
        gate: Arc<tokio::sync::Semaphore>,
        entered: Arc<tokio::sync::Notify>,
    }
    #[async_trait::async_trait]
    impl ChatModel for Gated {
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ModelError> {
            if r.model == "helper-model" {
                self.entered.notify_one();
                let _permit = self.gate.acquire().await.unwrap();
            }
            self.inner.chat(r).await
        }
        async fn chat_stream(&self, r: &ChatRequest) -> Result<ChatStream, ModelError> {
            self.inner.chat_stream(r).await
        }
    }
    Gated {
        inner: model(),
        gate,
        entered,
    }
}

#[tokio::test]
async fn the_system_cancels_a_delegated_job_and_the_child_interaction_stops() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model_arc(Arc::new(gated_model(gate.clone(), entered.clone())))
        .agent(AgentDefinition::new("assistant", "m").capabilities(["ask_helper"]))
        .agent(AgentDefinition::new("helper", "helper-model"))
        .delegate(
            Delegate::new("helper", "ask_helper", "Hands a task to the helper.")
                .default_mode(StepMode::Deferred),
        )
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "research caches").await.unwrap();
    assert!(reply.text.starts_with("Under way:"), "{}", reply.text);
    let job = job_of_first_interaction(&rt, session.id).await;

    let worker = rt.spawn_job_worker(Duration::from_secs(60));
    entered.notified().await; // the child's think step is running
    let child = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.parent_interaction_id.is_some())
        .unwrap();
    assert_eq!(child.agent_id.as_str(), "helper");
    assert_eq!(
        rt.jobs()
            .get(Principal::local(), job.id)
            .await
            .unwrap()
            .state,
        JobState::Dispatched
    );

    rt.jobs()
        .cancel(
            Actor::Account(job.principal.account),
            job.id,
            "shutting down",
        )
        .await
        .unwrap();
    gate.add_permits(10);
    // The child stops at its next step; wait for it to settle.
    let mut events = rt.subscribe();
    loop {
        let steps = rt
            .sessions()
            .steps(Principal::local(), child.id)
            .await
            .unwrap();
        if InteractionState::derive(&steps) == InteractionState::Failed {
            let last = steps.last().unwrap();
            assert_eq!(last.error.as_ref().unwrap().code, ErrorCode::JobCancelled);
            assert!(steps.iter().all(|s| s.state != StepState::Running));
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    }
    worker.stop().await;
    let job = rt.jobs().get(Principal::local(), job.id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        job.error.as_deref(),
        Some("cancelled by the system: shutting down")
    );
    // Nothing is left for recovery to resume.
    assert!(
        store(&dir)
            .await
            .unfinished_interactions()
            .await
            .unwrap()
            .iter()
            .all(|i| i.id != child.id)
    );
}

#[tokio::test]
async fn a_job_of_an_unregistered_capability_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _session, job, _audit) = dispatched_research(&dir).await;
    let orphan = store(&dir)
        .await
        .create_job(beside(&job, None, "gone", None), Timestamp::from_millis(0))
        .await
        .unwrap();
    rt.run_due_jobs().await.unwrap();
    let failed = rt.jobs().get(Principal::local(), orphan.id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.unwrap().contains("no capability named `gone`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_on_one_store_never_run_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn Store> = Arc::new(store(&dir).await);
    let runs = Arc::new(Mutex::new(Vec::<JobId>::new()));
    let counted = |runs: Arc<Mutex<Vec<JobId>>>| {
        FunctionCapability::builder("count", "Counts its runs.")
            .side_effect(SideEffect::External)
            .default_mode(StepMode::Deferred)
            .handler_with_context(move |cx: InvocationContext, _: Topic| {
                let runs = runs.clone();
                async move {
                    runs.lock().unwrap().push(cx.job.unwrap().id());
                    tokio::task::yield_now().await;
                    Ok::<_, String>("counted")
                }
            })
    };
    let build = || {
        Runtime::builder()
            .store_arc(shared.clone())
            .model(model())
            .capability(counted(runs.clone()))
            .agent(AgentDefinition::new("assistant", "m").capabilities(["count"]))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let session = a
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    for i in 0..40 {
        a.send(session.id, format!("research {i}")).await.unwrap();
    }
    let (wa, wb) = (
        a.spawn_job_worker(Duration::from_millis(5)),
        b.spawn_job_worker(Duration::from_millis(5)),
    );
    let mut events = a.subscribe();
    while !shared.unfinished_jobs().await.unwrap().is_empty() {
        let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    }
    wa.stop().await;
    wb.stop().await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 40, "every job ran");
    let distinct: std::collections::HashSet<_> = runs.iter().collect();
    assert_eq!(distinct.len(), 40, "and none twice");
}

#[tokio::test]
async fn a_host_dispatches_a_capability_as_a_job_without_a_model_call() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let model = ScriptedModel::responder(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ScriptedReply::text("a model was asked")
    });
    let rt = Runtime::builder()
        .store(store(&dir).await)
        .model(model)
        .capability(lookup())
        .capability(research())
        .agent(AgentDefinition::new("assistant", "m").capabilities(["lookup"]))
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "assistant", "jobs", None)
        .await
        .unwrap();
    let call = DispatchCall::new("lookup", json!({ "topic": "sqlite", "source": "papers" }));
    let job = rt
        .jobs()
        .dispatch(
            Principal::local(),
            session.id,
            call.clone(),
            Some("r1".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        (job.capability.as_str(), job.state, job.session_id),
        ("lookup", JobState::Pending, session.id),
        "an immediate capability dispatched runs as a job"
    );
    // The same request id is the same job, and no second interaction.
    let again = rt
        .jobs()
        .dispatch(Principal::local(), session.id, call, Some("r1".into()))
        .await
        .unwrap();
    assert_eq!(again.id, job.id);
    let interactions = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    assert_eq!(interactions.len(), 1);
    assert_eq!(interactions[0].kind, InteractionKind::Dispatch);
    let steps = rt
        .sessions()
        .steps(Principal::local(), interactions[0].id)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StepKind::Act, StepKind::Respond]);
    assert_eq!(steps[0].mode, StepMode::Deferred);
    let reply = reply_of(&rt, interactions[0].id).await;
    assert!(reply.contains(&job.id.to_string()), "{reply}");

    // A capability the agent may not call is refused with the step's reason.
    let refused = rt
        .jobs()
        .dispatch(
            Principal::local(),
            session.id,
            DispatchCall::new("research", json!({ "topic": "x" })),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::JobNotDispatched);
    assert!(
        refused.to_string().contains("capability.not_found"),
        "{refused}"
    );
    // Arguments that do not fit the schema too.
    let refused = rt
        .jobs()
        .dispatch(
            Principal::local(),
            session.id,
            DispatchCall::new("lookup", json!({ "topic": 7 })),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("capability.invalid_arguments"),
        "{refused}"
    );
    // Nobody of another account dispatches in the session.
    let other = Principal::new(AccountId::new(), UserId::new());
    let refused = rt
        .jobs()
        .dispatch(
            other,
            session.id,
            DispatchCall::new("lookup", json!({ "topic": "a", "source": "b" })),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DirectoryOtherAccount);

    // The job's end comes back to the session, also without a model.
    rt.run_due_jobs().await.unwrap();
    let done = rt.jobs().get(Principal::local(), job.id).await.unwrap();
    assert_eq!(done.state, JobState::Resolved);
    let interactions = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    let follow_up = interactions
        .iter()
        .find(|i| i.job_id == Some(job.id))
        .expect("a follow-up");
    assert_eq!(follow_up.kind, InteractionKind::Dispatch);
    let reply = reply_of(&rt, follow_up.id).await;
    assert!(
        reply.contains(&format!("[job {} resolved]", job.id)) && reply.contains("papers on sqlite"),
        "{reply}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}
