//! The `act` step's work: invoking the capability the model called (or
//! running a delegate, which may wait), within the agent's bounds on calls
//! per turn, and what the model is shown of a long result.

use std::sync::Arc;

use futures::FutureExt;

use super::Run;
use crate::approval::Proposal;
use crate::capability::{CapabilityError, InvocationContext};
use crate::error::ErrorCode;
use crate::ids::StepId;
use crate::model::ToolCall;
use crate::runtime::delegation::Delegated;
use crate::step::payload::{ActOutput, to_json};
use crate::step::{ModelUsage, Step, StepError, StepMode, StepOutcome};

impl Run {
    /// Whether the call at `index` of a turn is beyond the agent's calls
    /// per turn.
    pub(super) fn beyond_call_limit(&self, index: usize) -> bool {
        index >= usize::try_from(self.agent.max_tool_calls_per_turn).unwrap_or(usize::MAX)
    }

    /// Invokes the capability the model called. The step is already
    /// committed `running`: an `external` call interrupted from here on is
    /// never re-run.
    pub(super) async fn act(&self, step: &Step, call: ToolCall) -> StepOutcome {
        let meter = crate::capability::UsageMeter::default();
        let result = match self.visible(&call.name) {
            None => Err(CapabilityError::NotFound(call.name.clone())),
            Some(cap) => match cap.parse_arguments(&call.arguments) {
                Err(e) => Err(e),
                Ok(arguments) => match self
                    .rt
                    .check_budgets(&self.interaction.principal, &self.interaction)
                    .await
                {
                    Err(refused) => Err(CapabilityError::Refused {
                        code: ErrorCode::BudgetExceeded,
                        message: refused.message,
                    }),
                    Ok(())
                        if step.mode == StepMode::Deferred
                            || (step.mode == StepMode::Interactive
                                && self.mode_of(&cap) == StepMode::Deferred) =>
                    {
                        self.dispatch_job(step, &cap, arguments).await
                    }
                    Ok(()) => {
                        let context = InvocationContext {
                            interaction_id: self.interaction.id,
                            step_id: step.id,
                            idempotency_key: step.idempotency_key.clone(),
                            attempt: step.attempt,
                            principal: self.interaction.principal,
                            agent_id: self.agent.id.clone(),
                            delegation_depth: self.interaction.delegation_depth,
                            meter: meter.clone(),
                            job: None,
                        };
                        let timeout = cap.manifest().timeout;
                        let delegate = self.rt.delegate_agent(&call.name);
                        let invoked = async {
                            match &delegate {
                                // A delegate is run here rather than through
                                // its capability, so that it can wait.
                                Some(agent) => {
                                    Arc::clone(&self.rt)
                                        .delegate(&context, agent, arguments, self.can_wait())
                                        .await
                                }
                                None => cap
                                    .invoke(&context, arguments)
                                    .await
                                    .map(Delegated::Answered),
                            }
                        };
                        // A panic in a host's capability becomes a failed step the
                        // model is told about, not a crash of the interaction.
                        let invoked = std::panic::AssertUnwindSafe(invoked);
                        match tokio::time::timeout(timeout, invoked.catch_unwind()).await {
                            Ok(Ok(Ok(Delegated::Waiting { interaction, steps }))) => {
                                // The delegate waits for decisions: so does this call.
                                let proposal = Proposal::delegated(call, interaction, steps);
                                return StepOutcome::Waiting {
                                    proposal: to_json(&proposal),
                                };
                            }
                            Ok(Ok(Ok(Delegated::Answered(value)))) => Ok(value),
                            Ok(Ok(Err(e))) => Err(e),
                            Ok(Err(panic)) => {
                                Err(CapabilityError::Panicked(panic_message(panic.as_ref())))
                            }
                            Err(_) => Err(CapabilityError::Timeout(timeout)),
                        }
                    }
                },
            },
        };
        // What the capability spent on the call's behalf rolls up into the step.
        let spent = meter.totals();
        let usage = (spent.calls > 0).then(|| ModelUsage {
            model: call.name.clone(),
            tokens: spent.tokens,
            cost: spent.cost,
            rolled_up: true,
        });
        match result {
            Ok(value) => StepOutcome::Succeeded {
                output: to_json(&ActOutput { result: value }),
                usage,
            },
            Err(e) => StepOutcome::Failed {
                error: StepError::new(e.code(), e.to_string()),
                usage,
            },
        }
    }
}

/// What the model is shown of a tool result of `content.len()` bytes: all
/// of it up to `limit`; past it, its beginning (cut at a character
/// boundary) and a note saying how much there was and where it is kept.
pub(super) fn truncated(content: String, limit: usize, act: StepId) -> (String, Option<usize>) {
    if content.len() <= limit {
        return (content, None);
    }
    let whole = content.len();
    let mut cut = limit;
    while !content.is_char_boundary(cut) {
        cut -= 1;
    }
    let shown = format!(
        "{}\n[The result was cut: it has {whole} bytes and only the first {cut} are shown. \
         The whole result is kept in step {act}.]",
        &content[..cut],
    );
    (shown, Some(whole))
}

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any tool result, cut at any limit, is valid text holding its own
        /// beginning, no longer than the limit and its note.
        #[test]
        fn any_result_is_cut_at_a_character_boundary(content in "\\PC{0,300}", limit in 0usize..400) {
            let act = StepId::new();
            let (shown, from) = truncated(content.clone(), limit, act);
            if content.len() <= limit {
                proptest::prop_assert_eq!(shown, content);
                proptest::prop_assert_eq!(from, None);
            } else {
                proptest::prop_assert_eq!(from, Some(content.len()));
                let (head, note) = shown.split_once("\n[The result was cut").unwrap();
                proptest::prop_assert!(content.starts_with(head));
                proptest::prop_assert!(head.len() <= limit);
                let act_text = act.to_string();
                proptest::prop_assert!(note.contains(act_text.as_str()));
            }
        }
    }
}
