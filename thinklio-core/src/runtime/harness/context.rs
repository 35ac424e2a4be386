//! What the model sees: the `context` step (content rules on the message,
//! the facts recalled, a job's report, the history's bounds, all recorded
//! on the step) and the transcript rebuilt from the session history and the
//! interaction's steps, so a resumed run sees exactly what the first saw.

use crate::error::ErrorCode;

use super::Run;
use crate::model::ChatMessage;
use crate::runtime::RuntimeError;
use crate::step::payload::{ContextOutput, ObserveInput, ObserveOutput, ThinkOutput, to_json};
use crate::step::{StepError, StepKind, StepOutcome, StepState};
use crate::time::Timestamp;

/// What the context step reads of the session's history.
struct HistoryRead {
    summary: Option<crate::session::Summary>,
    turns: Vec<crate::session::Turn>,
}

impl Run {
    pub(super) async fn context(&mut self) -> StepOutcome {
        if let Some(rules) = &self.rt.content
            && let Err(reason) = rules
                .check_message(&self.interaction.principal, &self.interaction.input)
                .await
        {
            return StepOutcome::Failed {
                error: StepError::new(ErrorCode::PolicyContentBlocked, reason),
                usage: None,
            };
        }
        // Facts the principal may see, served by this agent (a delegate
        // recalls with its own agent layer, never its caller's), read
        // together with the history: the store gets the reads at once
        // (SQLite runs them in one go on its thread; PostgreSQL on pooled
        // connections side by side) instead of one after the other.
        let history = async {
            match self.delegation {
                // A delegate works from its task alone.
                Some(_) => Ok(None),
                None => self.read_history().await.map(Some),
            }
        };
        let (recalled, history) = tokio::join!(self.rt.recall(&self.interaction), history);
        let mut output = ContextOutput {
            system_prompt_bytes: self.agent.system_prompt.len(),
            ..recalled
        };
        if let Some(id) = self.interaction.job_id {
            // A follow-up: the job's result and context bundle, as they
            // are now, recorded on the step for the transcript.
            let job = match self.rt.store.job(id).await {
                Ok(job) => self
                    .rt
                    .store
                    .subjobs(id)
                    .await
                    .map(|subjobs| (job, subjobs)),
                Err(e) => Err(e),
            };
            match job {
                Ok((job, subjobs)) if job.session_id == self.interaction.session_id => {
                    output.job = Some(crate::runtime::jobs::job_record(&job, &subjobs));
                }
                Ok(_) => {}
                Err(e) => {
                    return StepOutcome::Failed {
                        error: StepError::new(e.code(), e.to_string()),
                        usage: None,
                    };
                }
            }
        }
        let history = match history {
            Ok(Some(read)) => read,
            Ok(None) => {
                output.delegation_depth = Some(self.interaction.delegation_depth);
                return StepOutcome::Succeeded {
                    output: to_json(&output),
                    usage: None,
                };
            }
            Err(e) => {
                return StepOutcome::Failed {
                    error: StepError::new(e.code(), e.to_string()),
                    usage: None,
                };
            }
        };
        match self.show_history(&mut output, history).await {
            Ok(()) => StepOutcome::Succeeded {
                output: to_json(&output),
                usage: None,
            },
            Err(e) => StepOutcome::Failed {
                error: StepError::new(e.code(), e.to_string()),
                usage: None,
            },
        }
    }

    /// The session's latest summary before this interaction and the turns
    /// before it, newest last: `history_turns` of them and the agent's
    /// `summarize_after` more, to know what goes unshown. Both reads go to
    /// the store at once.
    async fn read_history(&self) -> Result<HistoryRead, RuntimeError> {
        let seq = self.interaction.seq;
        let fetch = self
            .agent
            .history_turns
            .saturating_add(self.agent.summarize_after);
        let (summary, turns) = tokio::join!(
            self.rt.store.latest_summary(self.session.id, seq),
            self.rt.store.history(self.session.id, seq, fetch)
        );
        Ok(HistoryRead {
            summary: summary?,
            turns: turns?,
        })
    }

    /// The history the model is shown: the newest turns (at most
    /// `history_turns`) after the session's latest summary that fit the
    /// budget, with that summary before them. Older turns that go unshown
    /// past the agent's `summarize_after` ask for a summary through them.
    async fn show_history(
        &mut self,
        output: &mut ContextOutput,
        history: HistoryRead,
    ) -> Result<(), RuntimeError> {
        let limit = self.agent.history_turns;
        let seq = self.interaction.seq;
        let HistoryRead {
            summary,
            turns: mut read,
        } = history;
        let after = summary.as_ref().map_or(i64::MIN, |s| s.through_seq);
        read.retain(|t| t.seq > after);
        let mut shown = read.split_off(read.len().saturating_sub(limit as usize));
        let before_fit = shown.len();
        let images = self.message_images().await?;
        output.images = images.len();
        let dropped_newest = self.fit_history(output, &mut shown, summary.as_ref(), &images);
        // `read` keeps the turns before those shown (the newest last).
        let unshown = read.len() + (before_fit - shown.len());
        let newest_unshown = dropped_newest.or_else(|| read.last().map(|t| t.seq));
        let threshold = usize::try_from(self.agent.summarize_after).unwrap_or(usize::MAX);
        output.summarize_through = newest_unshown.filter(|_| threshold > 0 && unshown >= threshold);
        output.history_left_out = unshown;
        output.summary = summary.map(|s| s.id);
        output.history_before_seq = Some(seq);
        output.history_limit = Some(limit);
        output.history_turns = shown.len();
        self.history = Some(shown);
        Ok(())
    }

    /// Keeps the newest turns of `history` that fit the agent's context
    /// budget beside what every request of this interaction holds (system
    /// prompt, memory, a job's report, the message, the tools), leaving a
    /// quarter of the budget to the interaction's own steps; records the
    /// budget and the tokens counted on `output`.
    fn fit_history(
        &self,
        output: &mut ContextOutput,
        history: &mut Vec<crate::session::Turn>,
        summary: Option<&crate::session::Summary>,
        images: &[crate::image::ChatImage],
    ) -> Option<i64> {
        let counter = &*self.rt.token_counter;
        let model = self.agent.model.as_str();
        let count = |m: &ChatMessage| crate::context::message_tokens(counter, model, m);
        let budget = crate::context::context_budget(&self.agent, &self.rt.windows);
        let mut fixed = count(&ChatMessage::system(self.agent.system_prompt.clone()))
            + count(&ChatMessage::user_with_images(
                self.interaction.input.clone(),
                images.to_vec(),
            ));
        if let Some(memory) = crate::runtime::knowledge::memory_message(output) {
            fixed += count(&memory);
        }
        if let Some(job) = &output.job {
            fixed += count(&job_message(job));
        }
        if let Some(summary) = summary {
            fixed += count(&summary_message(summary));
        }
        let tools = serde_json::to_string(&self.tools()).unwrap_or_default();
        fixed += counter.count(model, &tools);
        let budget_tokens = usize::try_from(budget).unwrap_or(usize::MAX);
        let available = budget_tokens.saturating_sub(fixed + budget_tokens / 4);
        let mut used = 0;
        let mut kept = 0;
        for turn in history.iter().rev() {
            // The date a long conversation's messages carry counts too.
            let cost = count(&ChatMessage::user(turn_text(turn)))
                + count(&ChatMessage::assistant(turn.assistant.clone()))
                + 2 * DATE_TOKENS;
            if used + cost > available {
                break;
            }
            used += cost;
            kept += 1;
        }
        let dropped = history.len() - kept;
        let newest_dropped = dropped.checked_sub(1).map(|i| history[i].seq);
        history.drain(..dropped);
        output.context_budget = Some(budget);
        output.context_tokens = Some(fixed + used);
        output.tokens_counted_with = Some(counter.method(model).to_owned());
        newest_dropped
    }

    /// The images of the interaction's message, read from the store (once
    /// per run): the rows the message stored, so a resumed run shows the
    /// same images.
    async fn message_images(&mut self) -> Result<Vec<crate::image::ChatImage>, RuntimeError> {
        if let Some(images) = &self.images {
            return Ok(images.clone());
        }
        let mut images = Vec::with_capacity(self.interaction.images.len());
        for id in &self.interaction.images {
            let image = self.rt.store.image(*id).await?;
            let owner = self.interaction.principal;
            if image.principal.account != owner.account || image.principal.user != owner.user {
                // Ids come from the interaction the runtime wrote; one of
                // another user's images is never shown.
                return Err(crate::store::StoreError::not_found("image", id).into());
            }
            images.push(image.chat_image());
        }
        self.images = Some(images.clone());
        Ok(images)
    }

    /// The conversation so far, rebuilt from the session history and the steps.
    pub(super) async fn transcript(&mut self) -> Result<Vec<ChatMessage>, RuntimeError> {
        // The facts the context step recalled, read back from the step so a
        // resumed run sees exactly what the first run saw.
        let context_step = self
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Context && s.state == StepState::Succeeded);
        let context = match context_step {
            Some(step) => step.output_as::<ContextOutput>()?.unwrap_or_default(),
            None => ContextOutput::default(),
        };
        if self.history.is_none() {
            // A resumed run: the turns the context step showed, which fit
            // its budget then.
            let limit = match context.history_limit {
                Some(_) => u32::try_from(context.history_turns).unwrap_or(u32::MAX),
                None => self.agent.history_turns,
            };
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
        if let Some(memory) = crate::runtime::knowledge::memory_message(&context) {
            messages.push(memory);
        }
        if let Some(job) = &context.job {
            messages.push(job_message(job));
        }
        if let Some(id) = context.summary {
            // The summary the context step chose, read by id: a resumed run
            // shows the same one even if a newer one was written since.
            messages.push(summary_message(&self.rt.store.summary(id).await?));
        }
        // A conversation that spans days shows each message's day, so the
        // model can tell what was said when ("last Tuesday you said…").
        let today = self.interaction.created_at.date();
        let dated = self.history.iter().flatten().any(|t| t.at.date() != today);
        let said = |at: Timestamp, text: &str| {
            if dated {
                format!("[{}] {text}", at.date())
            } else {
                text.to_owned()
            }
        };
        for turn in self.history.iter().flatten() {
            messages.push(ChatMessage::user(said(turn.at, &turn_text(turn))));
            messages.push(ChatMessage::assistant(turn.assistant.clone()));
        }
        let images = self.message_images().await?;
        messages.push(ChatMessage::user_with_images(
            said(self.interaction.created_at, &self.interaction.input),
            images,
        ));
        // Tool results of this interaction: (message index, turn, act step).
        let mut results: Vec<(usize, u32, crate::ids::StepId)> = Vec::new();
        for step in &self.steps {
            if step.state != StepState::Succeeded {
                continue;
            }
            match step.kind {
                StepKind::Think => {
                    let out = step.output_as::<ThinkOutput>()?.unwrap_or_default();
                    messages.push(ChatMessage::assistant_with_tools(out.text, out.tool_calls));
                    if let Some(problem) = out.invalid_answer {
                        messages.push(ChatMessage::user(format!(
                            "That answer does not match the required JSON Schema: {problem}. \
                             Answer again with only JSON that matches it."
                        )));
                    }
                }
                StepKind::Observe => {
                    if let Some(out) = step.output_as::<ObserveOutput>()? {
                        let input: ObserveInput = step.input_as()?;
                        results.push((messages.len(), input.turn, input.act_step));
                        messages.push(ChatMessage::tool_result(out.call_id, out.content));
                    }
                }
                _ => {}
            }
        }
        self.compact(&mut messages, &results);
        Ok(messages)
    }

    /// Fits a long tool loop into the agent's context budget: while the
    /// request is over it, the oldest tool results (never those of the
    /// latest turn) are elided for the model, each replaced by a note of
    /// its size and the step that keeps it whole. The steps are untouched,
    /// and the same steps always elide the same results, so a resumed run
    /// sends what the first run sent.
    fn compact(&self, messages: &mut [ChatMessage], results: &[(usize, u32, crate::ids::StepId)]) {
        let counter = &*self.rt.token_counter;
        let model = self.agent.model.as_str();
        let count = |m: &ChatMessage| crate::context::message_tokens(counter, model, m);
        let budget = usize::try_from(crate::context::context_budget(
            &self.agent,
            &self.rt.windows,
        ))
        .unwrap_or(usize::MAX);
        let tools = serde_json::to_string(&self.tools()).unwrap_or_default();
        let mut total = messages.iter().map(count).sum::<usize>() + counter.count(model, &tools);
        let latest = results.iter().map(|(_, turn, _)| *turn).max().unwrap_or(0);
        for (index, turn, act) in results {
            if total <= budget || *turn == latest {
                break;
            }
            let Some(message) = messages.get_mut(*index) else {
                continue;
            };
            let before = count(message);
            let note = format!(
                "[An earlier tool result, elided to fit the context: it had {} bytes and is kept \
                 whole in step {act}.]",
                message.content.len()
            );
            let after =
                before - counter.count(model, &message.content) + counter.count(model, &note);
            if after >= before {
                // Shorter than its note: eliding it would not help.
                continue;
            }
            message.content = note;
            total = total.saturating_sub(before - after);
        }
    }
}

/// The system message that shows a summary of the older turns.
fn summary_message(summary: &crate::session::Summary) -> ChatMessage {
    ChatMessage::system(format!(
        "Summary of this conversation before the messages below:\n{}",
        summary.text
    ))
}

/// Tokens the `[YYYY-MM-DD] ` prefix of a dated message takes, at most.
const DATE_TOKENS: usize = 6;

/// The system message a follow-up's transcript gets from its `context` step.
pub(super) fn job_message(job: &crate::step::payload::JobRecord) -> crate::model::ChatMessage {
    let mut text = format!(
        "Deferred work reported back. Job {} (`{}`) is {}.",
        job.id, job.capability, job.state,
    );
    let subjobs = (!job.subjobs.is_empty()).then(|| serde_json::json!(job.subjobs));
    for (value, label) in [
        (job.result.as_ref(), "Result"),
        (subjobs.as_ref(), "Subjobs so far"),
        (job.context.as_ref(), "Context"),
        (job.progress.as_ref(), "Progress"),
    ] {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            text.push_str(&format!("\n{label}: {v}"));
        }
    }
    if let Some(e) = &job.error {
        text.push_str(&format!("\nError: {e}"));
    }
    crate::model::ChatMessage::system(text)
}

/// An earlier turn's message as the model is shown it: its images are not
/// sent again (each costs up to [`UNKNOWN_IMAGE_TOKENS`] tokens a request);
/// a note says they were there, and the reply to them says what was seen.
///
/// [`UNKNOWN_IMAGE_TOKENS`]: crate::image::UNKNOWN_IMAGE_TOKENS
fn turn_text(turn: &crate::session::Turn) -> String {
    match turn.images.len() {
        0 => turn.user.clone(),
        n => {
            let note = if n == 1 {
                "[1 image was attached here; it is not shown again]".to_owned()
            } else {
                format!("[{n} images were attached here; they are not shown again]")
            };
            if turn.user.is_empty() {
                note
            } else {
                format!("{}\n{note}", turn.user)
            }
        }
    }
}
