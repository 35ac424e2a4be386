//! Error codes: one enum of every stable code an error of Thinklio carries,
//! with its wire string (`store.not_found`, `capability.invalid_arguments`).
//!
//! A code is what a host matches on and what a failed step records; the
//! strings never change meaning once released (a new failure gets a new
//! code). Every error type of the crate says its code (`StoreError::code`,
//! `CapabilityError::code`, `ModelError::code`, `AccessError::code`,
//! `RuntimeError::code`, `JobError::code`), and a failed step stores it in
//! [`StepError::code`](crate::StepError).

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $s:literal,)+) => {
        /// A stable error code. Its wire form is [`ErrorCode::as_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The wire string (`store.not_found`).
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $s,)+ }
            }
        }

        impl ::std::str::FromStr for ErrorCode {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(ErrorCode::$variant),)+
                    other => Err(UnknownCode(other.to_owned())),
                }
            }
        }
    };
}

codes! {
    /// A step ended failed without a recorded error.
    StepFailed => "step.failed",
    /// A step was `running` when the process stopped and runs again.
    StepInterrupted => "step.interrupted",
    /// A `context` or `think` step made no progress within the deadline.
    StepDeadlineExceeded => "step.deadline_exceeded",
    /// A stored step payload could not be read.
    StepCorrupt => "step.corrupt",
    /// A person rejected the proposed call.
    ApprovalRejected => "approval.rejected",
    /// Nobody decided about the proposed call in time.
    ApprovalExpired => "approval.expired",
    /// The agent observes only: the call was recorded as proposed, not run.
    ApprovalObserveOnly => "approval.observe_only",
    /// A decision's edited arguments do not fit the capability's schema.
    ApprovalInvalidArguments => "approval.invalid_arguments",
    /// The step decided is not a call waiting for a decision.
    ApprovalNotWaiting => "approval.not_waiting",
    /// A call in a delegate dispatched as a job needs a decision, and such
    /// a delegate cannot wait for one: it was not run.
    ApprovalInDelegate => "approval.in_delegate",
    /// The interaction was cancelled in flight (by its user, an admin or
    /// the host); its running step was settled as after a crash.
    InteractionCancelled => "interaction.cancelled",
    /// The interaction ran past its agent's `interaction_deadline`.
    InteractionDeadlineExceeded => "interaction.deadline_exceeded",
    /// The model asked for more tool calls in one turn than its agent may
    /// make: this one was not run.
    CapabilityTooManyCalls => "capability.too_many_calls",
    /// The agent's answer does not match the JSON Schema it declares
    /// (after every re-ask it is allowed).
    AnswerInvalid => "answer.invalid",
    /// A typed answer was asked for, and the interaction waits for a
    /// person's decision instead.
    AnswerWaiting => "answer.waiting",
    /// The thing asked for does not exist.
    StoreNotFound => "store.not_found",
    /// A step's state cannot move that way.
    StoreIllegalTransition => "store.illegal_transition",
    /// A job's state cannot move that way.
    StoreIllegalJobTransition => "store.illegal_job_transition",
    /// The write conflicts with what is stored.
    StoreConflict => "store.conflict",
    /// Stored data could not be read.
    StoreCorrupt => "store.corrupt",
    /// The database failed.
    StoreBackend => "store.backend",
    /// The store is closed.
    StoreClosed => "store.closed",
    /// The runtime was configured wrongly.
    RuntimeConfig => "runtime.config",
    /// No agent has that id.
    RuntimeUnknownAgent => "runtime.unknown_agent",
    /// No template has that id.
    TemplateUnknown => "template.unknown",
    /// The agent is paused.
    AgentPaused => "agent.paused",
    /// The agent is archived.
    AgentArchived => "agent.archived",
    /// The runtime is shutting down and takes no new work.
    RuntimeShuttingDown => "runtime.shutting_down",
    /// An empty message.
    RuntimeEmptyMessage => "runtime.empty_message",
    /// A message over the size limit.
    RuntimeMessageTooLarge => "runtime.message_too_large",
    /// An image of a message was refused (format, size, URL, count).
    RuntimeImageInvalid => "runtime.image_invalid",
    /// The model called a tool it was not given.
    CapabilityNotFound => "capability.not_found",
    /// A tool call's arguments are not JSON.
    CapabilityInvalidJson => "capability.invalid_json",
    /// A tool call's arguments fail the schema.
    CapabilityInvalidArguments => "capability.invalid_arguments",
    /// A capability's result fails its schema.
    CapabilityInvalidResult => "capability.invalid_result",
    /// A capability did not answer in time.
    CapabilityTimeout => "capability.timeout",
    /// A capability failed.
    CapabilityFailed => "capability.failed",
    /// A capability panicked.
    CapabilityPanicked => "capability.panicked",
    /// An external call was interrupted: it may or may not have happened.
    CapabilityOutcomeUnknown => "capability.outcome_unknown",
    /// A capability's manifest is not valid.
    CapabilityInvalidManifest => "capability.invalid_manifest",
    /// A capability's name is taken.
    CapabilityNameTaken => "capability.name_taken",
    /// The provider refused for rate (HTTP 429).
    ModelRateLimited => "model.rate_limited",
    /// The provider answered with another HTTP error.
    ModelHttp => "model.http",
    /// The provider did not answer in time.
    ModelTimeout => "model.timeout",
    /// The provider could not be reached.
    ModelTransport => "model.transport",
    /// The provider's answer could not be read.
    ModelMalformedResponse => "model.malformed_response",
    /// The provider was configured wrongly.
    ModelConfig => "model.config",
    /// A scripted model ran out of replies.
    ModelScriptExhausted => "model.script_exhausted",
    /// Every model of a fallback chain failed.
    ModelFallbackExhausted => "model.fallback_exhausted",
    /// The user is not a member of the account.
    DirectoryNotAMember => "directory.not_a_member",
    /// The user is not in the team it acts for.
    DirectoryNotInTeam => "directory.not_in_team",
    /// The agent belongs to another account.
    DirectoryForeignAgent => "directory.foreign_agent",
    /// The template belongs to another account.
    DirectoryForeignTemplate => "directory.foreign_template",
    /// The agent is not assigned where the principal acts.
    DirectoryNotAssigned => "directory.not_assigned",
    /// The user's role is too low for the change.
    DirectoryRoleTooLow => "directory.role_too_low",
    /// The agent was registered by the host and is read-only.
    DirectoryHostAgent => "directory.host_agent",
    /// The definition goes beyond the account's policy.
    DirectoryBeyondPolicy => "directory.beyond_policy",
    /// The data belongs to another account than the actor's.
    DirectoryOtherAccount => "directory.other_account",
    /// A delegation would call an agent already in the chain.
    DelegationCycle => "delegation.cycle",
    /// The account's policy forbids the delegation.
    DelegationForbidden => "delegation.forbidden",
    /// The delegation chain is as deep as allowed.
    DelegationDepthExceeded => "delegation.depth_exceeded",
    /// A budget is spent.
    BudgetExceeded => "budget.exceeded",
    /// A host's content rules blocked a message or reply.
    PolicyContentBlocked => "policy.content_blocked",
    /// The caller may not touch the job.
    JobForbidden => "job.forbidden",
    /// A job callback's token is wrong.
    JobBadToken => "job.bad_token",
    /// The job has ended.
    JobEnded => "job.ended",
    /// The runtime has no key to sign job callbacks.
    JobNoCallbacks => "job.no_callbacks",
    /// The job an interaction worked for was cancelled or timed out.
    JobCancelled => "job.cancelled",
    /// A dispatch wrote no job: the capability is not the agent's, its
    /// arguments do not fit, or a budget is spent.
    JobNotDispatched => "job.not_dispatched",
}

impl ErrorCode {
    /// Codes of failures that do not end an interaction even on a
    /// `context`, `think` or `respond` step: the step is retried, or the
    /// interaction replies that it has to stop. Stores that derive
    /// unfinished interactions in their query language use this list.
    pub const NOT_TERMINAL: [ErrorCode; 4] = [
        ErrorCode::StepInterrupted,
        ErrorCode::BudgetExceeded,
        ErrorCode::PolicyContentBlocked,
        ErrorCode::StepDeadlineExceeded,
    ];
}

/// A code string that names no [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code `{0}`")]
pub struct UnknownCode(pub String);

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
            let (area, name) = code.as_str().split_once('.').unwrap();
            assert!(!area.is_empty() && !name.is_empty());
        }
        assert!("store.gone".parse::<ErrorCode>().is_err());
    }
}
