//! Planning: what an interaction does next, read from its steps alone.

use crate::error::ErrorCode;
use serde_json::Value;

use super::Run;
use super::context::job_message;
use crate::approval::{Decision, Proposal};
use crate::ids::StepId;
use crate::interaction::InteractionKind;
use crate::model::ToolCall;
use crate::step::payload::{
    ActInput, ActOutput, ContextOutput, DispatchCall, ObserveInput, PayloadError, RespondInput,
    ThinkInput, ThinkOutput,
};
use crate::step::{Step, StepError, StepKind, StepMode, StepState};

/// The text of the reply when the model still wants tools after `max_turns`.
const MAX_TURNS_REPLY: &str =
    "I stopped before finishing: this request needed more steps than I am allowed to take.";

/// What to do next, planned from the steps.
#[derive(Debug)]
pub(super) enum Next {
    /// Run a step.
    Work(Work),
    /// A step found `running`: the process stopped while it ran.
    Interrupted(Box<Step>),
    /// The interaction has its reply.
    Done,
    /// Calls wait for a person's decision; nothing else can run until then.
    Wait,
    /// The interaction failed for good.
    Failed(StepError),
}

/// The work of one step.
#[derive(Debug)]
pub(super) enum Work {
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
        /// A person already approved this call (a later attempt of an
        /// approved step): it runs without asking again.
        approved: bool,
    },
    /// Runs a waiting `act` step's call that a person approved (maybe
    /// with edited arguments): the step moves back to `running`.
    Resume {
        act: Box<Step>,
        call: ToolCall,
    },
    /// Ends a waiting `act` step whose call a person rejected, or that
    /// expired: the model is told why.
    Refuse {
        act: Box<Step>,
        error: StepError,
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
}

impl Work {
    /// Whether the work begins a new step (resuming or refusing a waiting
    /// one does not).
    pub(super) fn begins_step(&self) -> bool {
        !matches!(self, Work::Resume { .. } | Work::Refuse { .. })
    }
}

impl Run {
    /// Plans the next step from the steps written so far. `in_flight` is a
    /// step this run has begun and not yet worked: it is planned again, not
    /// treated as interrupted.
    pub(super) fn plan(&self, in_flight: Option<StepId>) -> Next {
        let mut context_done = false;
        let mut turn = 0u32;
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut acts: Vec<Option<&Step>> = Vec::new();
        let mut observed: Vec<bool> = Vec::new();
        let mut final_text: Option<String> = None;
        let mut retry: Option<&Step> = None;
        // Answers that did not match the agent's schema.
        let mut invalid_answers = 0u32;
        let dispatch = self.interaction.kind == InteractionKind::Dispatch;
        if dispatch && self.interaction.job_id.is_none() {
            // A host's dispatch: the call is the input, made as if a model
            // had asked for it in turn 1; there is no context to assemble.
            match serde_json::from_str::<DispatchCall>(&self.interaction.input) {
                Ok(call) => calls.push(call.tool_call()),
                Err(e) => {
                    return Next::Failed(StepError::new(
                        ErrorCode::StepCorrupt,
                        format!("the dispatch's call does not parse: {e}"),
                    ));
                }
            }
            context_done = true;
            turn = 1;
            acts.push(None);
            observed.push(false);
        }
        for step in &self.steps {
            match step.state {
                StepState::Created | StepState::Running if Some(step.id) == in_flight => continue,
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
            let budget_spent = step.error.as_ref().filter(|e| {
                failed && step.kind == StepKind::Think && e.code == ErrorCode::BudgetExceeded
            });
            let blocked = step.error.as_ref().filter(|e| {
                failed
                    && step.kind == StepKind::Context
                    && e.code == ErrorCode::PolicyContentBlocked
            });
            if let Some(e) = blocked {
                // A message the content rules block is answered with the reason.
                context_done = true;
                final_text = Some(format!("I can't help with that: {}.", e.message));
                continue;
            }
            if let Some(e) = budget_spent {
                // A spent budget ends the interaction with a reply that says so.
                final_text = Some(format!("I have to stop here: {}.", e.message));
                continue;
            }
            let overdue = step.error.as_ref().filter(|e| {
                failed
                    && matches!(step.kind, StepKind::Context | StepKind::Think)
                    && e.code == ErrorCode::StepDeadlineExceeded
            });
            if let Some(e) = overdue {
                // The watchdog stopped a step that made no progress: the
                // user is told, rather than left waiting for a restart.
                context_done = true;
                final_text = Some(format!("I could not answer in time: {}.", e.message));
                continue;
            }
            match step.kind {
                StepKind::Context | StepKind::Think | StepKind::Respond if failed => {
                    return Next::Failed(step.error.clone().unwrap_or_else(|| {
                        StepError::new(
                            ErrorCode::StepFailed,
                            "the step failed without a recorded error",
                        )
                    }));
                }
                StepKind::Context => {
                    context_done = true;
                    if dispatch {
                        // A dispatched job's follow-up: the reply is the
                        // notice with the job's report, as the context step
                        // recorded it.
                        let job = match step.output_as::<ContextOutput>() {
                            Ok(out) => out.and_then(|o| o.job),
                            Err(e) => return Next::Failed(e.to_step_error()),
                        };
                        let report = job.map(|job| job_message(&job).content);
                        let details = report
                            .as_deref()
                            .and_then(|r| r.split_once('\n'))
                            .map_or("", |(_, rest)| rest);
                        let text = format!("{}\n{details}", self.interaction.input);
                        final_text = Some(text.trim_end().to_owned());
                    }
                }
                StepKind::Think => {
                    turn += 1;
                    let out = match step.output_as::<ThinkOutput>() {
                        Ok(out) => out.unwrap_or_default(),
                        Err(e) => return Next::Failed(e.to_step_error()),
                    };
                    if let Some(problem) = out.invalid_answer {
                        // Asked again, unless it has had all its attempts.
                        invalid_answers += 1;
                        if invalid_answers >= self.agent.answer_attempts {
                            return Next::Failed(StepError::new(
                                ErrorCode::AnswerInvalid,
                                format!(
                                    "the answer did not match its schema after {invalid_answers} attempts: {problem}"
                                ),
                            ));
                        }
                        final_text = None;
                        calls.clear();
                        acts.clear();
                        observed.clear();
                    } else if out.tool_calls.is_empty() {
                        final_text = Some(out.text);
                    } else {
                        final_text = None;
                        acts = vec![None; out.tool_calls.len()];
                        observed = vec![false; out.tool_calls.len()];
                        calls = out.tool_calls;
                    }
                }
                StepKind::Act => match step.input_as::<ActInput>() {
                    Ok(input) => {
                        if let Some(slot) = acts.get_mut(input.index) {
                            *slot = Some(step);
                        }
                    }
                    Err(e) => return Next::Failed(e.to_step_error()),
                },
                StepKind::Observe => match step.input_as::<ObserveInput>() {
                    Ok(input) => {
                        if let Some(slot) = observed.get_mut(input.index) {
                            *slot = true;
                        }
                    }
                    Err(e) => return Next::Failed(e.to_step_error()),
                },
                StepKind::Respond => return Next::Done,
            }
        }
        if let Some(step) = retry {
            return self.retry_of(step);
        }
        if !context_done {
            return Next::Work(Work::Context { attempt: 1 });
        }
        if let Some(text) = final_text {
            return Next::Work(Work::Respond { text, attempt: 1 });
        }
        let mut waiting = false;
        for (index, call) in calls.iter().enumerate() {
            if observed.get(index).copied().unwrap_or(true) {
                continue;
            }
            let act = acts.get(index).copied().flatten();
            if let Some(act) = act.filter(|a| a.state == StepState::Waiting) {
                if act.mode != StepMode::Interactive {
                    // A call to a delegate that waits: it runs again (and the
                    // delegate goes on) once every call it waits on is decided.
                    let proposal = act.output_as::<Proposal>().ok().flatten();
                    let decided = proposal.is_some_and(|p| {
                        p.waiting_on.iter().all(|s| self.decisions.contains_key(s))
                    });
                    if decided {
                        return Next::Work(Work::Resume {
                            act: Box::new(act.clone()),
                            call: call.clone(),
                        });
                    }
                    waiting = true;
                    continue;
                }
                // Each proposed call is decided on its own; the others are
                // proposed meanwhile, and the interaction goes on once all
                // are decided.
                match self.decisions.get(&act.id) {
                    Some(decided) => return Next::Work(decided_work(act, call, &decided.decision)),
                    None => {
                        waiting = true;
                        continue;
                    }
                }
            }
            return match act {
                // A dispatch answers with what its one call did.
                Some(act) if dispatch => Next::Work(Work::Respond {
                    text: dispatch_reply(act),
                    attempt: 1,
                }),
                Some(act) => Next::Work(Work::Observe {
                    turn,
                    index,
                    call_id: call.id.clone(),
                    act: Box::new(act.clone()),
                    attempt: 1,
                }),
                None => Next::Work(Work::Act {
                    turn,
                    index,
                    call: call.clone(),
                    attempt: 1,
                    approved: false,
                }),
            };
        }
        if waiting {
            return Next::Wait;
        }
        if turn >= self.agent.max_turns {
            return Next::Work(Work::Respond {
                text: MAX_TURNS_REPLY.to_owned(),
                attempt: 1,
            });
        }
        Next::Work(Work::Think {
            turn: turn + 1,
            attempt: 1,
        })
    }

    /// The next attempt of a step interrupted by a crash, from its stored input.
    fn retry_of(&self, step: &Step) -> Next {
        match self.retry_work(step) {
            Ok(next) => next,
            Err(e) => Next::Failed(e.to_step_error()),
        }
    }

    fn retry_work(&self, step: &Step) -> Result<Next, PayloadError> {
        let attempt = step.attempt + 1;
        Ok(match step.kind {
            StepKind::Context => Next::Work(Work::Context { attempt }),
            StepKind::Think => Next::Work(Work::Think {
                turn: step.input_as::<ThinkInput>()?.turn,
                attempt,
            }),
            StepKind::Act => {
                let input: ActInput = step.input_as()?;
                // An approved call interrupted while it ran goes again as
                // decided, without asking again.
                let decided = self.decisions.get(&step.id).map(|d| &d.decision);
                let call = match decided {
                    Some(Decision::Edit { arguments }) => ToolCall {
                        arguments: arguments.to_string(),
                        ..input.call()
                    },
                    _ => input.call(),
                };
                Next::Work(Work::Act {
                    turn: input.turn,
                    index: input.index,
                    call,
                    attempt,
                    approved: decided.is_some_and(Decision::runs),
                })
            }
            StepKind::Observe => {
                let input: ObserveInput = step.input_as()?;
                match self.steps.iter().find(|s| s.id == input.act_step) {
                    Some(act) => Next::Work(Work::Observe {
                        turn: input.turn,
                        index: input.index,
                        call_id: input.call_id,
                        act: Box::new(act.clone()),
                        attempt,
                    }),
                    None => Next::Failed(StepError::new(
                        ErrorCode::StepCorrupt,
                        "an observe step refers to an act step that does not exist",
                    )),
                }
            }
            StepKind::Respond => Next::Work(Work::Respond {
                text: step.input_as::<RespondInput>()?.text,
                attempt,
            }),
        })
    }
}

/// What a decision about a waiting `act` step makes of it.
fn decided_work(act: &Step, call: &ToolCall, decision: &Decision) -> Work {
    let act = Box::new(act.clone());
    match decision {
        Decision::Approve => Work::Resume {
            act,
            call: call.clone(),
        },
        Decision::Edit { arguments } => Work::Resume {
            act,
            call: ToolCall {
                arguments: arguments.to_string(),
                ..call.clone()
            },
        },
        Decision::Expire => Work::Refuse {
            act,
            error: StepError::new(
                ErrorCode::ApprovalExpired,
                "nobody decided about this call in time, so it was not run",
            ),
        },
        Decision::Reject { reason } => Work::Refuse {
            act,
            error: StepError::new(
                ErrorCode::ApprovalRejected,
                match reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                    Some(reason) => format!("the user rejected this call: {reason}"),
                    None => "the user rejected this call".to_owned(),
                },
            ),
        },
    }
}

/// The reply of a dispatch: the job it wrote, or why it wrote none.
fn dispatch_reply(act: &Step) -> String {
    let job = act
        .output_as::<ActOutput>()
        .ok()
        .flatten()
        .and_then(|o| o.dispatched_job());
    match (job, &act.capability) {
        (Some(job), Some(capability)) => {
            format!(
                "`{capability}` runs in the background as job {}.",
                job.job_id
            )
        }
        (Some(job), None) => format!("The work runs in the background as job {}.", job.job_id),
        (None, _) => observation(act).0,
    }
}

fn is_interrupted(step: &Step) -> bool {
    step.error
        .as_ref()
        .is_some_and(|e| e.code == ErrorCode::StepInterrupted)
}

/// What the model sees of an `act` step's outcome.
pub(super) fn observation(act: &Step) -> (String, bool) {
    if act.state == StepState::Succeeded {
        let content = match act.output_as::<ActOutput>() {
            Ok(Some(ActOutput {
                result: Value::String(s),
            })) => s,
            Ok(Some(ActOutput { result })) => result.to_string(),
            Ok(None) => Value::Null.to_string(),
            // What the model reads of a result that cannot be read.
            Err(e) => return (format!("Error ({}): {e}.", ErrorCode::StepCorrupt), true),
        };
        return (content, false);
    }
    let (code, message) = act
        .error
        .as_ref()
        .map(|e| (e.code, e.message.as_str()))
        .unwrap_or((ErrorCode::CapabilityFailed, "the call failed"));
    let hint = match code {
        ErrorCode::CapabilityInvalidJson | ErrorCode::CapabilityInvalidArguments => {
            " Fix the arguments to match the tool's schema and call it again."
        }
        ErrorCode::CapabilityNotFound => " Use only the tools you were given.",
        ErrorCode::CapabilityTooManyCalls => {
            " Make the calls that matter most first; call again if it is still needed."
        }
        ErrorCode::CapabilityOutcomeUnknown => {
            " It may or may not have taken effect; do not repeat it without checking."
        }
        ErrorCode::ApprovalRejected => " Do not propose it again unless the user asks for it.",
        ErrorCode::ApprovalExpired => " Ask the user whether it is still wanted.",
        ErrorCode::ApprovalObserveOnly => {
            " Tell the user what you would do; they can do it or change your mode."
        }
        _ => "",
    };
    (format!("Error ({code}): {message}.{hint}"), true)
}
