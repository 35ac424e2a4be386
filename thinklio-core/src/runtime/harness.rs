//! The harness loop of one interaction:
//! `context → think → (act → observe)* → respond`.
//!
//! The harness keeps no state of its own between steps: what to do next is
//! planned from the interaction's steps alone ([`Run::plan`]), so a run that
//! starts from steps read back after a crash continues exactly where the
//! crashed run stopped. Every step is written (`running`) before its work and
//! finished after it, and nothing else changes a step's state.

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{Instrument, field::Empty};

use super::{Inner, Reply, RuntimeError, interaction_event};
use crate::agent::AgentDefinition;
use crate::capability::{CapabilityError, InvocationContext, RegisteredCapability, SideEffect};
use crate::event::EventKind;
use crate::interaction::Interaction;
use crate::model::{ChatMessage, ChatRequest, ToolCall, ToolDefinition};
use crate::outbox::NewOutboxMessage;
use crate::session::{Session, Turn};
use crate::step::{
    ModelUsage, NewStep, Step, StepError, StepKind, StepMode, StepOutcome, StepState,
};
use crate::usage::Cost;

/// The text of the reply when the model still wants tools after `max_turns`.
const MAX_TURNS_REPLY: &str =
    "I stopped before finishing: this request needed more steps than I am allowed to take.";

/// What to do next, planned from the steps.
#[derive(Debug)]
enum Next {
    Context {
        attempt: u32,
    },
    Think {
        turn: u32,
        attempt: u32,
    },
    Act {
        turn: u32,
        index: usize,
        call: ToolCall,
        attempt: u32,
    },
    Observe {
        turn: u32,
        index: usize,
        call_id: String,
        act: Box<Step>,
        attempt: u32,
    },
    Respond {
        text: String,
        attempt: u32,
    },
    /// A step found `running`: the process stopped while it ran.
    Interrupted(Box<Step>),
    Done,
    Failed(StepError),
}

/// One interaction being driven to its end.
pub(crate) struct Run {
    rt: Arc<Inner>,
    session: Session,
    agent: Arc<AgentDefinition>,
    interaction: Interaction,
    steps: Vec<Step>,
    history: Option<Vec<Turn>>,
}

impl Run {
    pub(crate) fn new(
        rt: Arc<Inner>,
        session: Session,
        agent: Arc<AgentDefinition>,
        interaction: Interaction,
        steps: Vec<Step>,
    ) -> Self {
        Self {
            rt,
            session,
            agent,
            interaction,
            steps,
            history: None,
        }
    }

    /// Runs steps until the interaction has ended.
    pub(crate) async fn drive(mut self) -> Result<Reply, RuntimeError> {
        loop {
            match self.plan() {
                Next::Context { attempt } => self.context(attempt).await?,
                Next::Think { turn, attempt } => self.think(turn, attempt).await?,
                Next::Act {
                    turn,
                    index,
                    call,
                    attempt,
                } => self.act(turn, index, call, attempt).await?,
                Next::Observe {
                    turn,
                    index,
                    call_id,
                    act,
                    attempt,
                } => self.observe(turn, index, call_id, &act, attempt).await?,
                Next::Respond { text, attempt } => self.respond(text, attempt).await?,
                Next::Interrupted(step) => self.settle_interrupted(&step).await?,
                Next::Done => return self.finished_reply().await,
                Next::Failed(error) => {
                    self.rt
                        .append_event(interaction_event(
                            EventKind::InteractionFailed,
                            &self.interaction,
                            json!({ "code": error.code, "message": error.message }),
                        ))
                        .await?;
                    return Err(RuntimeError::InteractionFailed {
                        interaction: self.interaction.id,
                        error,
                    });
                }
            }
        }
    }

    /// Plans the next step from the steps written so far.
    fn plan(&self) -> Next {
        let mut context_done = false;
        let mut turn = 0u32;
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut acts: Vec<Option<&Step>> = Vec::new();
        let mut observed: Vec<bool> = Vec::new();
        let mut final_text: Option<String> = None;
        let mut retry: Option<&Step> = None;
        for step in &self.steps {
            match step.state {
                StepState::Created | StepState::Running => {
                    return Next::Interrupted(Box::new(step.clone()));
                }
                StepState::Failed if is_interrupted(step) => {
                    retry = Some(step);
                    continue;
                }
                _ => retry = None,
            }
            let failed = step.state == StepState::Failed;
            match step.kind {
                StepKind::Context | StepKind::Think | StepKind::Respond if failed => {
                    return Next::Failed(step.error.clone().unwrap_or_else(|| {
                        StepError::new("step.failed", "the step failed without a recorded error")
                    }));
                }
                StepKind::Context => context_done = true,
                StepKind::Think => {
                    turn += 1;
                    let out = ThinkOutput::read(step.output.as_ref());
                    if out.tool_calls.is_empty() {
                        final_text = Some(out.text);
                    } else {
                        final_text = None;
                        acts = vec![None; out.tool_calls.len()];
                        observed = vec![false; out.tool_calls.len()];
                        calls = out.tool_calls;
                    }
                }
                StepKind::Act => {
                    if let Some(slot) = index_of(step).and_then(|i| acts.get_mut(i)) {
                        *slot = Some(step);
                    }
                }
                StepKind::Observe => {
                    if let Some(slot) = index_of(step).and_then(|i| observed.get_mut(i)) {
                        *slot = true;
                    }
                }
                StepKind::Respond => return Next::Done,
            }
        }
        if let Some(step) = retry {
            return self.retry_of(step);
        }
        if !context_done {
            return Next::Context { attempt: 1 };
        }
        if let Some(text) = final_text {
            return Next::Respond { text, attempt: 1 };
        }
        for (index, call) in calls.iter().enumerate() {
            if observed.get(index).copied().unwrap_or(true) {
                continue;
            }
            return match acts.get(index).copied().flatten() {
                Some(act) => Next::Observe {
                    turn,
                    index,
                    call_id: call.id.clone(),
                    act: Box::new(act.clone()),
                    attempt: 1,
                },
                None => Next::Act {
                    turn,
                    index,
                    call: call.clone(),
                    attempt: 1,
                },
            };
        }
        if turn >= self.agent.max_turns {
            return Next::Respond {
                text: MAX_TURNS_REPLY.to_owned(),
                attempt: 1,
            };
        }
        Next::Think {
            turn: turn + 1,
            attempt: 1,
        }
    }

    /// The next attempt of a step interrupted by a crash, from its stored input.
    fn retry_of(&self, step: &Step) -> Next {
        let attempt = step.attempt + 1;
        let input = &step.input;
        let turn = input["turn"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(1);
        match step.kind {
            StepKind::Context => Next::Context { attempt },
            StepKind::Think => Next::Think { turn, attempt },
            StepKind::Act => Next::Act {
                turn,
                index: index_of(step).unwrap_or(0),
                call: ToolCall::new(
                    input["call_id"].as_str().unwrap_or_default(),
                    input["name"].as_str().unwrap_or_default(),
                    input["arguments"].as_str().unwrap_or_default(),
                ),
                attempt,
            },
            StepKind::Observe => {
                let act_id = input["act_step"].as_str().and_then(|s| s.parse().ok());
                match self.steps.iter().find(|s| Some(s.id) == act_id) {
                    Some(act) => Next::Observe {
                        turn,
                        index: index_of(step).unwrap_or(0),
                        call_id: input["call_id"].as_str().unwrap_or_default().to_owned(),
                        act: Box::new(act.clone()),
                        attempt,
                    },
                    None => Next::Failed(StepError::new(
                        "step.corrupt",
                        "an observe step refers to an act step that does not exist",
                    )),
                }
            }
            StepKind::Respond => Next::Respond {
                text: input["text"].as_str().unwrap_or_default().to_owned(),
                attempt,
            },
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.interaction.id)
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

    async fn begin(&mut self, new: NewStep) -> Result<Step, RuntimeError> {
        let (step, event) = self.rt.store.begin_step(new).await?;
        self.rt.publish(event);
        self.steps.push(step.clone());
        Ok(step)
    }

    async fn finish(
        &mut self,
        step: &Step,
        outcome: StepOutcome,
        reply: Option<NewOutboxMessage>,
    ) -> Result<Step, RuntimeError> {
        let (done, event) = self.rt.store.finish_step(step.id, outcome, reply).await?;
        self.rt.publish(event);
        let span = tracing::Span::current();
        span.record("thinklio.step.state", done.state.as_str());
        if let Some(e) = &done.error {
            span.record("error.type", e.code.as_str());
        }
        if let Some(slot) = self.steps.iter_mut().find(|s| s.id == done.id) {
            *slot = done.clone();
        }
        Ok(done)
    }

    fn span(&self, kind: StepKind, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "thinklio.step",
            otel.name = %format_args!("{} {}", operation, self.agent.id),
            gen_ai.operation.name = operation,
            gen_ai.system = Empty,
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
            thinklio.step.kind = kind.as_str(),
            thinklio.step.attempt = Empty,
            thinklio.step.state = Empty,
            thinklio.cost.usd = Empty,
            error.type = Empty,
        )
    }

    async fn context(&mut self, attempt: u32) -> Result<(), RuntimeError> {
        let span = self.span(StepKind::Context, "context");
        async {
            let input = json!({ "message_bytes": self.interaction.input.len() });
            let new = self.new_step(StepKind::Context, attempt, self.key("context"), input);
            let step = self.begin(new).await?;
            tracing::Span::current().record("thinklio.step.attempt", attempt);
            let limit = self.agent.history_turns;
            let outcome = match self
                .rt
                .store
                .history(self.session.id, self.interaction.seq, limit)
                .await
            {
                Ok(history) => {
                    let output = json!({
                        "system_prompt_bytes": self.agent.system_prompt.len(),
                        "history_before_seq": self.interaction.seq,
                        "history_limit": limit,
                        "history_turns": history.len(),
                    });
                    self.history = Some(history);
                    StepOutcome::Succeeded {
                        output,
                        usage: None,
                    }
                }
                Err(e) => StepOutcome::Failed {
                    error: StepError::new(e.code(), e.to_string()),
                    usage: None,
                },
            };
            self.finish(&step, outcome, None).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The conversation so far, rebuilt from the session history and the steps.
    async fn transcript(&mut self) -> Result<Vec<ChatMessage>, RuntimeError> {
        if self.history.is_none() {
            let limit = self.agent.history_turns;
            self.history = Some(
                self.rt
                    .store
                    .history(self.session.id, self.interaction.seq, limit)
                    .await?,
            );
        }
        let mut messages = Vec::with_capacity(self.steps.len() + 8);
        if !self.agent.system_prompt.is_empty() {
            messages.push(ChatMessage::system(self.agent.system_prompt.clone()));
        }
        for turn in self.history.iter().flatten() {
            messages.push(ChatMessage::user(turn.user.clone()));
            messages.push(ChatMessage::assistant(turn.assistant.clone()));
        }
        messages.push(ChatMessage::user(self.interaction.input.clone()));
        for step in &self.steps {
            if step.state != StepState::Succeeded {
                continue;
            }
            match step.kind {
                StepKind::Think => {
                    let out = ThinkOutput::read(step.output.as_ref());
                    messages.push(ChatMessage::assistant_with_tools(out.text, out.tool_calls));
                }
                StepKind::Observe => {
                    let out = step.output.as_ref();
                    let call_id = out.and_then(|o| o["call_id"].as_str()).unwrap_or_default();
                    let content = out.and_then(|o| o["content"].as_str()).unwrap_or_default();
                    messages.push(ChatMessage::tool_result(call_id, content));
                }
                _ => {}
            }
        }
        Ok(messages)
    }

    /// The capability `name` if this agent may see and call it.
    fn visible(&self, name: &str) -> Option<Arc<RegisteredCapability>> {
        if !self.agent.capabilities.iter().any(|c| c == name) {
            return None;
        }
        self.rt
            .capabilities
            .get(name)
            .filter(|c| c.manifest().trust_level <= self.agent.trust_level)
    }

    fn tools(&self) -> Vec<ToolDefinition> {
        self.agent
            .capabilities
            .iter()
            .filter_map(|name| self.visible(name))
            .map(|c| c.tool_definition())
            .collect()
    }

    async fn think(&mut self, turn: u32, attempt: u32) -> Result<(), RuntimeError> {
        let span = self.span(StepKind::Think, "chat");
        async {
            let model = self.agent.model.clone();
            let input = json!({ "turn": turn, "model": model });
            let new = self.new_step(
                StepKind::Think,
                attempt,
                self.key(&format!("think:{turn}")),
                input,
            );
            let step = self.begin(new).await?;
            let current = tracing::Span::current();
            current.record("thinklio.step.attempt", attempt);
            current.record("gen_ai.request.model", model.as_str());
            let outcome = match self.transcript().await {
                Err(e) => StepOutcome::Failed {
                    error: StepError::new(e.code(), e.to_string()),
                    usage: None,
                },
                Ok(messages) => {
                    let request = ChatRequest {
                        model: model.clone(),
                        messages,
                        tools: self.tools(),
                        max_tokens: self.agent.max_output_tokens,
                        temperature: None,
                    };
                    match self.rt.model.chat(&request).await {
                        Ok(response) => {
                            let cost = self
                                .rt
                                .prices
                                .cost(&response.model, response.usage)
                                .unwrap_or(Cost::ZERO);
                            current.record("gen_ai.response.model", response.model.as_str());
                            current
                                .record("gen_ai.usage.input_tokens", response.usage.input_tokens);
                            current
                                .record("gen_ai.usage.output_tokens", response.usage.output_tokens);
                            current.record("thinklio.cost.usd", cost.as_usd());
                            current.record(
                                "gen_ai.response.finish_reasons",
                                format!("{:?}", response.finish_reason).as_str(),
                            );
                            StepOutcome::Succeeded {
                                output: json!({
                                    "text": response.message.content,
                                    "tool_calls": response.message.tool_calls,
                                }),
                                usage: Some(ModelUsage {
                                    model: response.model,
                                    tokens: response.usage,
                                    cost,
                                }),
                            }
                        }
                        Err(e) => StepOutcome::Failed {
                            error: e.into(),
                            usage: None,
                        },
                    }
                }
            };
            self.finish(&step, outcome, None).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn act(
        &mut self,
        turn: u32,
        index: usize,
        call: ToolCall,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let span = self.span(StepKind::Act, "execute_tool");
        async {
            let current = tracing::Span::current();
            current.record("gen_ai.tool.name", call.name.as_str());
            current.record("gen_ai.tool.call.id", call.id.as_str());
            current.record("thinklio.step.attempt", attempt);
            let capability = self.visible(&call.name);
            let key = self.key(&format!("act:{turn}:{index}"));
            let mut new = self.new_step(
                StepKind::Act,
                attempt,
                key.clone(),
                json!({
                    "turn": turn,
                    "index": index,
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }),
            );
            new.capability = Some(call.name.clone());
            new.side_effect = capability.as_ref().map(|c| c.manifest().side_effect);
            // The `running` row is committed here, before the capability runs:
            // an `external` call interrupted after this point is never re-run.
            let step = self.begin(new).await?;
            let result = match &capability {
                None => Err(CapabilityError::NotFound(call.name.clone())),
                Some(cap) => match cap.parse_arguments(&call.arguments) {
                    Err(e) => Err(e),
                    Ok(arguments) => {
                        let context = InvocationContext {
                            interaction_id: self.interaction.id,
                            step_id: step.id,
                            idempotency_key: key,
                            attempt,
                            principal: self.interaction.principal,
                            agent_id: self.agent.id.clone(),
                            delegation_depth: self.interaction.delegation_depth,
                        };
                        let timeout = cap.manifest().timeout;
                        match tokio::time::timeout(timeout, cap.invoke(&context, arguments)).await {
                            Ok(result) => result,
                            Err(_) => Err(CapabilityError::Timeout(timeout)),
                        }
                    }
                },
            };
            let outcome = match result {
                Ok(value) => StepOutcome::Succeeded {
                    output: json!({ "result": value }),
                    usage: None,
                },
                Err(e) => StepOutcome::Failed {
                    error: StepError::new(e.code(), e.to_string()),
                    usage: None,
                },
            };
            self.finish(&step, outcome, None).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn observe(
        &mut self,
        turn: u32,
        index: usize,
        call_id: String,
        act: &Step,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let span = self.span(StepKind::Observe, "observe");
        async {
            let (content, is_error) = observation(act);
            let new = self.new_step(
                StepKind::Observe,
                attempt,
                self.key(&format!("observe:{turn}:{index}")),
                json!({ "turn": turn, "index": index, "call_id": call_id, "act_step": act.id }),
            );
            let step = self.begin(new).await?;
            let output = json!({ "call_id": call_id, "content": content, "is_error": is_error });
            self.finish(
                &step,
                StepOutcome::Succeeded {
                    output,
                    usage: None,
                },
                None,
            )
            .await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn respond(&mut self, text: String, attempt: u32) -> Result<(), RuntimeError> {
        let span = self.span(StepKind::Respond, "respond");
        async {
            let new = self.new_step(
                StepKind::Respond,
                attempt,
                self.key("respond"),
                json!({ "text": text }),
            );
            let step = self.begin(new).await?;
            let output = json!({ "bytes": text.len() });
            self.finish(
                &step,
                StepOutcome::Succeeded {
                    output,
                    usage: None,
                },
                Some(NewOutboxMessage { text }),
            )
            .await?;
            Ok::<(), RuntimeError>(())
        }
        .instrument(span)
        .await?;
        self.rt
            .append_event(interaction_event(
                EventKind::InteractionCompleted,
                &self.interaction,
                Value::Null,
            ))
            .await?;
        if let Some(message) = self.rt.store.reply_of(self.interaction.id).await? {
            self.rt.deliver(&message).await?;
        }
        Ok(())
    }

    /// Settles a step the process stopped while it ran: an `external`
    /// capability call is never re-run (its outcome is unknown, and the model
    /// is told so); anything else fails as interrupted and is run again with
    /// the same idempotency key.
    async fn settle_interrupted(&mut self, step: &Step) -> Result<(), RuntimeError> {
        let error = if step.kind == StepKind::Act && step.side_effect == Some(SideEffect::External)
        {
            let e = CapabilityError::OutcomeUnknown;
            StepError::new(e.code(), e.to_string())
        } else {
            StepError::new(
                StepError::INTERRUPTED,
                "the process stopped while this step ran; it runs again",
            )
        };
        tracing::info!(
            step_id = %step.id,
            kind = step.kind.as_str(),
            code = error.code.as_str(),
            "settling a step interrupted by a crash"
        );
        let outcome = StepOutcome::Failed { error, usage: None };
        self.finish(step, outcome, None).await?;
        Ok(())
    }

    async fn finished_reply(&self) -> Result<Reply, RuntimeError> {
        let text = match self.rt.store.reply_of(self.interaction.id).await? {
            Some(message) => message.text,
            None => String::new(),
        };
        Ok(Reply::from_steps(self.interaction.id, text, &self.steps))
    }
}

fn is_interrupted(step: &Step) -> bool {
    step.error
        .as_ref()
        .is_some_and(|e| e.code == StepError::INTERRUPTED)
}

fn index_of(step: &Step) -> Option<usize> {
    step.input["index"]
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
}

/// What the model sees of an `act` step's outcome.
fn observation(act: &Step) -> (String, bool) {
    if act.state == StepState::Succeeded {
        let result = act
            .output
            .as_ref()
            .map(|o| &o["result"])
            .unwrap_or(&Value::Null);
        let content = match result {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return (content, false);
    }
    let (code, message) = act
        .error
        .as_ref()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .unwrap_or(("capability.failed", "the call failed"));
    let hint = match code {
        "capability.invalid_json" | "capability.invalid_arguments" => {
            " Fix the arguments to match the tool's schema and call it again."
        }
        "capability.not_found" => " Use only the tools you were given.",
        "capability.outcome_unknown" => {
            " It may or may not have taken effect; do not repeat it without checking."
        }
        _ => "",
    };
    (format!("Error ({code}): {message}.{hint}"), true)
}

/// The output of a `think` step.
struct ThinkOutput {
    text: String,
    tool_calls: Vec<ToolCall>,
}

impl ThinkOutput {
    fn read(output: Option<&Value>) -> Self {
        let text = output
            .and_then(|o| o["text"].as_str())
            .unwrap_or_default()
            .to_owned();
        let tool_calls = output
            .and_then(|o| o.get("tool_calls"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        Self { text, tool_calls }
    }
}
