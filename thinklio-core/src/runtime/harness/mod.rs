//! The harness loop of one interaction:
//! `context → think → (act → observe)* → respond`.
//!
//! The harness keeps no state of its own between steps: what to do next is
//! planned from the interaction's steps alone ([`Run::plan`]), so a run that
//! starts from steps read back after a crash continues exactly where the
//! crashed run stopped. Every step is written (`running`) before its work and
//! finished after it, and nothing else changes a step's state.

mod act;
mod approval;
mod context;
mod jobs;
mod model;
mod plan;
mod stop;

pub(crate) use self::act::panic_message;
use self::act::truncated;
use self::plan::{Next, Work, observation};
use crate::approval::StoredDecision;
use crate::error::ErrorCode;
use crate::ids::StepId;
use std::collections::HashMap;

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{Instrument, field::Empty};

use super::{Inner, Reply, RuntimeError, interaction_event};
use crate::agent::AgentDefinition;
use crate::capability::{CapabilityError, RegisteredCapability, SideEffect, TrustLevel};
use crate::directory::Access;
use crate::event::EventKind;
use crate::interaction::{Interaction, InteractionKind};
use crate::model::{ChatRequest, ToolDefinition};
use crate::outbox::NewOutboxMessage;
use crate::session::{Session, Turn};
use crate::step::payload::{
    ActInput, Blocked, ContextInput, ContextOutput, ObserveInput, ObserveOutput, RespondInput,
    RespondOutput, ThinkInput, ThinkOutput, to_json,
};
use crate::step::{
    ModelUsage, NewStep, Step, StepError, StepKind, StepMode, StepOutcome, StepState,
};
use crate::store::FinishedStep;

/// One interaction being driven to its end.
pub(crate) struct Run {
    rt: Arc<Inner>,
    session: Session,
    agent: Arc<AgentDefinition>,
    interaction: Interaction,
    steps: Vec<Step>,
    history: Option<Vec<Turn>>,
    /// The message's images, read from the store once per run.
    images: Option<Vec<crate::image::ChatImage>>,
    reply_text: Option<String>,
    caller_is_channel: bool,
    /// Set when this run is a delegate's, working for another interaction.
    delegation: Option<Delegation>,
    /// What the directory allows, when it is enforced.
    access: Option<Access>,
    /// The job this run works for (a delegate dispatched as a job): the run
    /// stops at its next step once the job has ended.
    job: Option<crate::ids::JobId>,
    /// Decisions taken about this interaction's `interactive` act steps.
    decisions: HashMap<StepId, StoredDecision>,
    /// The first step, begun with the interaction: its work is next.
    begun: Option<Step>,
    /// Whether `session` was read from the store as this run began.
    session_fresh: bool,
}

/// The name of the context step's key.
const CONTEXT: &str = "context";

fn context_input(message: &str) -> Value {
    to_json(&ContextInput {
        message_bytes: message.len(),
    })
}

/// The first step of a new interaction of `kind` with the message `input`,
/// to begin in the commit that creates it: the context step every message's
/// plan begins with. A host's dispatch begins with its call: none.
pub(crate) fn first_step(kind: InteractionKind, input: &str) -> Option<crate::step::FirstStep> {
    (kind == InteractionKind::Message).then(|| crate::step::FirstStep {
        kind: StepKind::Context,
        name: CONTEXT.to_owned(),
        input: context_input(input),
    })
}

/// What a delegate's run knows of the chain that called it.
#[derive(Debug, Clone)]
pub(crate) struct Delegation {
    /// The lowest trust level along the chain.
    pub(crate) trust_ceiling: TrustLevel,
    /// The most careful approval mode along the chain.
    pub(crate) approval_ceiling: crate::approval::ApprovalMode,
    /// Whether its callers can wait with it for a person's decision.
    pub(crate) can_wait: bool,
    /// The capabilities of its own it may use, when its caller's
    /// delegation narrows them ([`DelegateTo::capabilities`](crate::DelegateTo)).
    pub(crate) allowed: Option<Vec<String>>,
}

impl Run {
    pub(crate) fn new(
        rt: Arc<Inner>,
        session: Session,
        agent: Arc<AgentDefinition>,
        interaction: Interaction,
        steps: Vec<Step>,
        caller_is_channel: bool,
    ) -> Self {
        Self {
            rt,
            session,
            agent,
            interaction,
            steps,
            history: None,
            images: None,
            reply_text: None,
            caller_is_channel,
            delegation: None,
            access: None,
            job: None,
            decisions: HashMap::new(),
            begun: None,
            session_fresh: false,
        }
    }

    /// The run of a session read from the store as the run began (with its
    /// lease): it is not read again.
    pub(crate) fn with_fresh_session(mut self, fresh: bool) -> Self {
        self.session_fresh = fresh;
        self
    }

    /// The run of an interaction whose first step was begun with it
    /// ([`first_step`]): that step's work comes first.
    pub(crate) fn with_begun(mut self, step: Option<Step>) -> Self {
        if let Some(step) = &step {
            self.steps.push(step.clone());
        }
        self.begun = step;
        self
    }

    /// A run that works for a job and stops when the job ends.
    pub(crate) fn for_job(mut self, job: crate::ids::JobId) -> Self {
        self.job = Some(job);
        self
    }

    /// Narrows the agent's capabilities by what the directory allows.
    pub(crate) fn with_access(mut self, access: Option<Access>) -> Self {
        self.access = access;
        self
    }

    /// A delegate's run: it sees no session history (its context is the task
    /// it was given), its answer goes back to its caller rather than to the
    /// outbox, and its trust is capped by the chain's.
    pub(crate) fn delegate(mut self, delegation: Delegation) -> Self {
        self.delegation = Some(delegation);
        self.history = Some(Vec::new());
        self
    }

    /// Runs steps until the interaction has ended.
    ///
    /// Each turn of the loop plans the next step from the steps, runs its
    /// work, and commits its outcome together with the start of the step
    /// after it (one transaction per step); only the first step of a run and
    /// a re-run after a crash are begun on their own.
    pub(crate) fn drive(self) -> impl Future<Output = Result<Reply, RuntimeError>> + Send {
        // The run lives in a box the loop's future holds: an async fn that
        // takes a value keeps it twice (its argument and its local), and
        // the run is the largest part of an interaction in flight.
        Box::new(self).run_loop()
    }

    async fn run_loop(mut self: Box<Self>) -> Result<Reply, RuntimeError> {
        let _counted = crate::telemetry::InFlight::start();
        // The step begun by the last commit, whose work is next.
        let mut in_flight: Option<Step> = self.begun.take();
        // A root run can be cancelled, and stops at its agent's deadline.
        let (_running, mut stop) = match self.delegation {
            None => {
                let (guard, cancelled) = self.rt.running(self.interaction.id);
                (
                    Some(guard),
                    stop::StopSignal::new(cancelled, self.agent.interaction_deadline),
                )
            }
            Some(_) => {
                let (_, never) = tokio::sync::watch::channel(false);
                (None, stop::StopSignal::new(never, None))
            }
        };
        if self.rt.config.shared_store && !self.session_fresh {
            // Another process may have changed the session's approval mode:
            // a run on a shared store reads it fresh, never from a cache.
            self.session = self.rt.store.session(self.session.id).await?;
        }
        self.load_decisions().await?;
        loop {
            if in_flight.is_none() && self.hands_over() {
                return Err(RuntimeError::ShuttingDown);
            }
            let work = match self.plan(in_flight.as_ref().map(|s| s.id)) {
                Next::Work(work) => work,
                Next::Done | Next::Wait => return Ok(self.finished_reply()),
                Next::Failed(error) => return Err(self.fail(error).await?),
                Next::Interrupted(step) => {
                    self.settle_interrupted(&step).await?;
                    continue;
                }
            };
            if self.delegation.is_none() {
                // On a shared store, the session must still be this runtime's.
                self.rt.confirm_hold(self.session.id).await?;
            }
            if let Some(error) = self.job_ended().await? {
                return Err(self.stop_run(error, false, "respond:job_ended").await?);
            }
            let step = match (in_flight.take(), &work) {
                (Some(step), _) => step,
                (None, Work::Resume { act, .. }) => {
                    // Approved: the waiting step runs its call now.
                    let (step, event) = self.rt.store.resume_step(act.id).await?;
                    self.rt.publish(event);
                    self.replace(step.clone());
                    step
                }
                (None, Work::Refuse { act, .. }) => (**act).clone(),
                (None, _) => {
                    let (step, event) = self.rt.store.begin_step(self.new_step_for(&work)).await?;
                    self.rt.publish(event);
                    self.steps.push(step.clone());
                    step
                }
            };
            let span = self.span(&step);
            let began = std::time::Instant::now();
            let finished = tokio::select! {
                biased;
                error = stop.stopped() => {
                    // The work is dropped where it stands, as a crash
                    // would stop it, and settled the same way.
                    drop(span);
                    return Err(self.stop_run(error, true, "respond:stopped").await?);
                }
                finished = self.run_step(work, &step).instrument(span.clone()) => finished?,
            };
            crate::telemetry::step_ended(&finished.step, Some(began.elapsed()));
            span.record("thinklio.step.state", finished.step.state.as_str());
            if let Some(e) = &finished.step.error {
                span.record("error.type", e.code.as_str());
            }
            for event in finished.events {
                self.rt.publish(event);
            }
            self.replace(finished.step);
            if let Some(next_step) = finished.next {
                self.steps.push(next_step.clone());
                in_flight = Some(next_step);
            }
            if let Some(message) = finished.reply {
                self.reply_text = Some(message.text.clone());
                if message.delivered_at.is_none() {
                    self.rt.deliver(&message).await?;
                }
            }
        }
    }

    /// Does the work of a `running` step, then commits its outcome together
    /// with the start of the step after it, planned as if this one had ended.
    async fn run_step(&mut self, work: Work, step: &Step) -> Result<FinishedStep, RuntimeError> {
        let (outcome, reply) = self.work(work, step).await;
        self.replace(ended(step, &outcome));
        // The next step is begun with this one's end, unless the run hands
        // its session over: then it stops here and the next holder plans it.
        let stopping = self.hands_over();
        let following = match self.plan(None) {
            Next::Work(work) if work.begins_step() && !stopping => Some(self.new_step_for(&work)),
            _ => None,
        };
        Ok(self
            .rt
            .store
            .finish_step(step, outcome, reply, following)
            .await?)
    }

    /// Whether this run stops between steps because the runtime shuts
    /// down: a root run on a shared store, whose session another worker
    /// continues at once from the next step (nothing begun is left half
    /// done). In one process nobody else would continue it, so the run goes
    /// on to its reply (within the shutdown's deadline); a delegate's run is
    /// part of its caller's step and goes on too.
    fn hands_over(&self) -> bool {
        self.delegation.is_none() && self.rt.config.shared_store && self.rt.closing()
    }

    /// Records the end of an interaction that failed for good.
    async fn fail(&self, error: StepError) -> Result<RuntimeError, RuntimeError> {
        self.rt
            .append_event(interaction_event(
                EventKind::InteractionFailed,
                &self.interaction,
                json!({ "code": error.code, "message": error.message }),
            ))
            .await?;
        Ok(RuntimeError::InteractionFailed {
            interaction: self.interaction.id,
            error,
        })
    }

    /// Puts the stored version of a step in place of the one in memory.
    fn replace(&mut self, step: Step) {
        match self.steps.iter_mut().find(|s| s.id == step.id) {
            Some(slot) => *slot = step,
            None => self.steps.push(step),
        }
    }

    fn key(&self, suffix: &str) -> String {
        crate::step::step_key(self.interaction.id, suffix)
    }

    fn new_step(&self, kind: StepKind, attempt: u32, key: String, input: Value) -> NewStep {
        NewStep {
            interaction_id: self.interaction.id,
            seq: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
            kind,
            mode: StepMode::Immediate,
            attempt,
            idempotency_key: key,
            capability: None,
            side_effect: None,
            input,
        }
    }

    /// The row of the step that does `work`.
    fn new_step_for(&self, work: &Work) -> NewStep {
        match work {
            Work::Context { attempt } => self.new_step(
                StepKind::Context,
                *attempt,
                self.key(CONTEXT),
                context_input(&self.interaction.input),
            ),
            Work::Think { turn, attempt } => self.new_step(
                StepKind::Think,
                *attempt,
                self.key(&format!("think:{turn}")),
                to_json(&ThinkInput {
                    turn: *turn,
                    model: self.agent.model.clone(),
                }),
            ),
            Work::Act {
                turn,
                index,
                call,
                attempt,
                approved,
            } => {
                let mut new = self.new_step(
                    StepKind::Act,
                    *attempt,
                    self.key(&format!("act:{turn}:{index}")),
                    to_json(&ActInput::new(*turn, *index, call)),
                );
                new.capability = Some(call.name.clone());
                let cap = self.visible(&call.name);
                new.mode = match &cap {
                    // A host's dispatch always runs as a job.
                    Some(_) if self.interaction.kind == InteractionKind::Dispatch => {
                        StepMode::Deferred
                    }
                    // The call waits for a person (or, observing, is only
                    // proposed).
                    // (A call beyond the turn's limit is never proposed.)
                    Some(c)
                        if !approved
                            && !self.beyond_call_limit(*index)
                            && self.needs_decision(c) =>
                    {
                        StepMode::Interactive
                    }
                    Some(c) if self.mode_of(c) == StepMode::Interactive => StepMode::Immediate,
                    Some(c) => self.mode_of(c),
                    None => StepMode::Immediate,
                };
                new.side_effect = cap.map(|c| {
                    if new.mode == StepMode::Deferred {
                        // A deferred call only writes its job, keyed by
                        // this step's idempotency key: safe to repeat.
                        SideEffect::Idempotent
                    } else {
                        c.manifest().side_effect
                    }
                });
                new
            }
            Work::Observe {
                turn,
                index,
                call_id,
                act,
                attempt,
            } => self.new_step(
                StepKind::Observe,
                *attempt,
                self.key(&format!("observe:{turn}:{index}")),
                to_json(&ObserveInput {
                    turn: *turn,
                    index: *index,
                    call_id: call_id.clone(),
                    act_step: act.id,
                }),
            ),
            // A decided step is the waiting one: it is not begun again.
            Work::Resume { act, .. } | Work::Refuse { act, .. } => NewStep {
                interaction_id: act.interaction_id,
                seq: act.seq,
                kind: act.kind,
                mode: act.mode,
                attempt: act.attempt,
                idempotency_key: act.idempotency_key.clone(),
                capability: act.capability.clone(),
                side_effect: act.side_effect,
                input: act.input.clone(),
            },
            Work::Respond { text, attempt } => self.new_step(
                StepKind::Respond,
                *attempt,
                self.key("respond"),
                to_json(&RespondInput {
                    text: text.clone(),
                    job_ended: false,
                }),
            ),
        }
    }

    /// The work of a step that has been written `running`. Writes nothing.
    async fn work(&mut self, work: Work, step: &Step) -> (StepOutcome, Option<NewOutboxMessage>) {
        // The watchdog: a context or think step that makes no progress
        // within the deadline is failed, and the interaction goes on.
        let deadline = self.rt.config.step_deadline;
        let interaction = self.interaction.id;
        let overdue = || {
            tracing::warn!(
                interaction = %interaction,
                step = %step.id,
                kind = step.kind.as_str(),
                seconds = deadline.as_secs_f64(),
                "a step made no progress within its deadline; it is failed and the interaction goes on"
            );
            StepOutcome::Failed {
                error: StepError::new(
                    ErrorCode::StepDeadlineExceeded,
                    format!(
                        "the {} step took longer than {:?}",
                        step.kind.as_str(),
                        deadline
                    ),
                ),
                usage: None,
            }
        };
        let outcome = match work {
            // The context step's future is the largest of the steps' and
            // runs once: boxed, it does not size every other step's wait.
            Work::Context { .. } => {
                match tokio::time::timeout(deadline, Box::pin(self.context())).await {
                    Ok(outcome) => outcome,
                    Err(_) => overdue(),
                }
            }
            Work::Think { .. } => match tokio::time::timeout(deadline, self.think(step)).await {
                Ok(outcome) => outcome,
                Err(_) => overdue(),
            },
            // Beyond the agent's calls per turn: not run, not proposed.
            Work::Act { index, .. } if self.beyond_call_limit(index) => StepOutcome::Failed {
                error: StepError::new(
                    ErrorCode::CapabilityTooManyCalls,
                    format!(
                        "not run: this agent makes at most {} tool calls per turn",
                        self.agent.max_tool_calls_per_turn
                    ),
                ),
                usage: None,
            },
            Work::Act { call, .. } if step.mode == StepMode::Interactive => self.propose(call),
            Work::Act { call, .. } | Work::Resume { call, .. } => self.act(step, call).await,
            Work::Refuse { error, .. } => StepOutcome::Failed { error, usage: None },
            Work::Observe { call_id, act, .. } => {
                let (content, is_error) = observation(&act);
                let limit = usize::try_from(self.agent.max_tool_result_bytes).unwrap_or(usize::MAX);
                let (content, truncated_from) = truncated(content, limit, act.id);
                StepOutcome::Succeeded {
                    output: to_json(&ObserveOutput {
                        call_id,
                        content,
                        is_error,
                        truncated_from,
                    }),
                    usage: None,
                }
            }
            Work::Respond { text, .. } if self.delegation.is_some() => {
                // A delegate's answer is its caller's observation, not a reply
                // to the channel: it stays in the step, out of the outbox.
                let output = to_json(&RespondOutput {
                    bytes: text.len(),
                    blocked: None,
                });
                self.reply_text = Some(text);
                StepOutcome::Succeeded {
                    output,
                    usage: None,
                }
            }
            Work::Respond { text, .. } => {
                let mut output = RespondOutput {
                    bytes: text.len(),
                    blocked: None,
                };
                let mut text = text;
                let mut blocked = self.steps.iter().any(|s| {
                    s.error
                        .as_ref()
                        .is_some_and(|e| e.code == ErrorCode::PolicyContentBlocked)
                });
                if let Some(rules) = &self.rt.content
                    && let Err(reason) = rules.check_reply(&self.interaction.principal, &text).await
                {
                    // The reason stays on the step; the channel gets a refusal.
                    output.blocked = Some(Blocked {
                        code: ErrorCode::PolicyContentBlocked,
                        reason: reason.clone(),
                    });
                    text = format!("I can't send that reply: {reason}.");
                    blocked = true;
                }
                // Without a sink, the caller of `send` is the channel: the
                // reply is delivered when `send` returns it.
                let delivered = self.rt.sink.is_none() && self.caller_is_channel;
                return (
                    StepOutcome::Succeeded {
                        output: to_json(&output),
                        usage: None,
                    },
                    Some(NewOutboxMessage {
                        text,
                        delivered,
                        // Nothing is learned from an exchange the content
                        // rules blocked.
                        // Nor from a dispatch, which says nothing of the user.
                        tasks: if blocked || self.interaction.kind == InteractionKind::Dispatch {
                            Vec::new()
                        } else {
                            self.follow_up_tasks()
                        },
                    }),
                );
            }
        };
        (outcome, None)
    }

    fn span(&self, step: &Step) -> tracing::Span {
        let kind = step.kind;
        let operation = match kind {
            StepKind::Think => "chat",
            StepKind::Act => "execute_tool",
            other => other.as_str(),
        };
        let span = tracing::info_span!(
            "thinklio.step",
            otel.name = %format_args!("{} {}", operation, self.agent.id),
            gen_ai.operation.name = operation,
            gen_ai.agent.name = %self.agent.id,
            gen_ai.conversation.id = %self.session.id,
            gen_ai.request.model = Empty,
            gen_ai.response.model = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.tool.name = Empty,
            gen_ai.tool.call.id = Empty,
            thinklio.interaction.id = %self.interaction.id,
            thinklio.step.id = %step.id,
            thinklio.step.kind = kind.as_str(),
            thinklio.step.attempt = step.attempt,
            thinklio.step.state = Empty,
            thinklio.cost.usd = Empty,
            error.type = Empty,
        );
        if kind == StepKind::Think {
            span.record("gen_ai.request.model", self.agent.model.as_str());
        }
        if let Some(name) = &step.capability {
            span.record("gen_ai.tool.name", name.as_str());
            if let Ok(input) = step.input_as::<ActInput>() {
                span.record("gen_ai.tool.call.id", input.call_id.as_str());
            }
        }
        span
    }

    /// Background tasks committed with this interaction's reply.
    fn follow_up_tasks(&self) -> Vec<crate::queue::NewTask> {
        let mut tasks = self.rt.extraction_tasks(&self.interaction);
        // Older turns went unshown past the threshold: a summary folds them.
        let through = self
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Context && s.state == StepState::Succeeded)
            .and_then(|s| s.output_as::<ContextOutput>().ok().flatten())
            .and_then(|c| c.summarize_through);
        if let Some(through) = through {
            tasks.push(self.rt.summary_task(&self.interaction, through));
        }
        tasks
    }

    /// The capability `name` if this agent may see and call it.
    fn visible(&self, name: &str) -> Option<Arc<RegisteredCapability>> {
        if !self.agent.capabilities.iter().any(|c| c == name) {
            return None;
        }
        if let Some(allowed) = self.delegation.as_ref().and_then(|d| d.allowed.as_ref())
            && !allowed.iter().any(|c| c == name)
        {
            return None;
        }
        if self.access.as_ref().is_some_and(|a| !a.allows(name)) {
            return None;
        }
        self.rt
            .capabilities
            .get(name)
            .filter(|c| c.manifest().trust_level <= self.trust_level())
    }

    /// The agent's trust level, capped by every agent above it in a
    /// delegation chain: a delegate never sees more than its callers may.
    fn trust_level(&self) -> TrustLevel {
        let level = match &self.delegation {
            Some(d) => self.agent.trust_level.min(d.trust_ceiling),
            None => self.agent.trust_level,
        };
        // The account's ceiling caps every agent that serves it.
        match self.access.as_ref().and_then(|a| a.policy.max_trust_level) {
            Some(ceiling) => level.min(ceiling),
            None => level,
        }
    }

    fn tools(&self) -> Vec<ToolDefinition> {
        self.agent
            .capabilities
            .iter()
            .filter_map(|name| self.visible(name))
            .map(|c| c.tool_definition())
            .collect()
    }

    async fn think(&mut self, step: &Step) -> StepOutcome {
        if let Err(error) = self
            .rt
            .check_budgets(&self.interaction.principal, &self.interaction)
            .await
        {
            return StepOutcome::Failed { error, usage: None };
        }
        let messages = match self.transcript().await {
            Ok(m) => m,
            Err(e) => {
                return StepOutcome::Failed {
                    error: StepError::new(e.code(), e.to_string()),
                    usage: None,
                };
            }
        };
        let request = ChatRequest {
            model: self.agent.model.clone(),
            messages,
            tools: self.tools(),
            max_tokens: self.agent.max_output_tokens,
            temperature: self.agent.temperature,
            top_p: self.agent.top_p,
            stop: self.agent.stop.clone(),
            output_schema: self.agent.answer_schema.clone(),
        };
        match self.call_model(&request, step).await {
            Ok(response) => {
                let cost = self
                    .rt
                    .cost_of(
                        &response.model,
                        &request.model,
                        response.usage,
                        &self.interaction,
                    )
                    .await;
                let span = tracing::Span::current();
                span.record("gen_ai.response.model", response.model.as_str());
                span.record("gen_ai.usage.input_tokens", response.usage.input_tokens);
                span.record("gen_ai.usage.output_tokens", response.usage.output_tokens);
                span.record("thinklio.cost.usd", cost.as_usd());
                span.record(
                    "gen_ai.response.finish_reasons",
                    format!("{:?}", response.finish_reason).as_str(),
                );
                // An answer (no tool calls) is checked against the schema the
                // agent declares; what is wrong is kept for the re-ask.
                let invalid_answer = match &self.agent.answer_schema {
                    Some(schema) if response.message.tool_calls.is_empty() => {
                        schema.check(&response.message.content).err()
                    }
                    _ => None,
                };
                StepOutcome::Succeeded {
                    output: to_json(&ThinkOutput {
                        text: response.message.content,
                        tool_calls: response.message.tool_calls,
                        invalid_answer,
                    }),
                    usage: Some(ModelUsage {
                        model: response.model,
                        tokens: response.usage,
                        cost,
                        rolled_up: false,
                    }),
                }
            }
            Err(e) => StepOutcome::Failed {
                error: e.into(),
                usage: None,
            },
        }
    }

    /// Settles a step the process stopped while it ran: an `external`
    /// capability call is never re-run (its outcome is unknown, and the model
    /// is told so); anything else fails as interrupted and is run again with
    /// the same idempotency key.
    async fn settle_interrupted(&mut self, step: &Step) -> Result<(), RuntimeError> {
        // An interactive call nobody approved was only being proposed: it
        // never ran, so it is proposed again.
        let unapproved = step.mode == StepMode::Interactive
            && !self
                .decisions
                .get(&step.id)
                .is_some_and(|d| d.decision.runs());
        let error = if step.kind == StepKind::Act
            && step.side_effect == Some(SideEffect::External)
            && !unapproved
        {
            let e = CapabilityError::OutcomeUnknown;
            StepError::new(e.code(), e.to_string())
        } else {
            StepError::new(
                ErrorCode::StepInterrupted,
                "the process stopped while this step ran; it runs again",
            )
        };
        tracing::info!(
            step_id = %step.id,
            kind = step.kind.as_str(),
            code = error.code.as_str(),
            "settling a step interrupted by a crash"
        );
        self.fail_step(step, error).await
    }

    /// Ends a `running` step failed, outside the step loop (a step a crash
    /// interrupted, a step of a run whose job ended).
    async fn fail_step(&mut self, step: &Step, error: StepError) -> Result<(), RuntimeError> {
        let outcome = StepOutcome::Failed { error, usage: None };
        let finished = self.rt.store.finish_step(step, outcome, None, None).await?;
        crate::telemetry::step_ended(&finished.step, None);
        for event in finished.events {
            self.rt.publish(event);
        }
        self.replace(finished.step);
        Ok(())
    }

    fn finished_reply(&self) -> Reply {
        let text = self.reply_text.clone().unwrap_or_else(|| {
            // A run resumed after its reply was written: the reply is the
            // `respond` step's input.
            self.steps
                .iter()
                .rev()
                .find(|s| s.kind == StepKind::Respond && s.state == StepState::Succeeded)
                .and_then(|s| s.input_as::<RespondInput>().ok())
                .map(|input| input.text)
                .unwrap_or_default()
        });
        let mut reply = Reply::from_steps(self.interaction.id, text, &self.steps);
        if self.agent.answer_schema.is_some() && reply.waiting.is_empty() {
            reply.answer = serde_json::from_str(reply.text.trim()).ok();
        }
        reply
    }
}

/// `step` as it will be once `outcome` is stored, for planning ahead.
fn ended(step: &Step, outcome: &StepOutcome) -> Step {
    let mut s = step.clone();
    s.state = outcome.state();
    match outcome {
        StepOutcome::Succeeded { output, .. } => s.output = Some(output.clone()),
        StepOutcome::Failed { error, .. } => s.error = Some(error.clone()),
        StepOutcome::Waiting { proposal } => s.output = Some(proposal.clone()),
    }
    s
}
