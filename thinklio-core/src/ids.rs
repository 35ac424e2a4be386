//! Identifiers. Every id is a typed newtype so an `InteractionId` can never be
//! passed where a `StepId` is expected.
//!
//! Ids backed by UUIDv7 sort by creation time; agent ids are names chosen by
//! the host (`"assistant"`), because hosts refer to agents by name in config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind}")]
pub struct ParseIdError {
    kind: &'static str,
    input: String,
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (for ids a host keeps elsewhere).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError {
                    kind: stringify!($name),
                    input: s.to_owned(),
                })
            }
        }
    };
}

uuid_id!(
    /// An account: the tenancy boundary.
    AccountId
);
uuid_id!(
    /// A team inside an account.
    TeamId
);
uuid_id!(
    /// A user of an account.
    UserId
);
uuid_id!(
    /// A session: one conversation between a principal and an agent on a channel.
    SessionId
);
uuid_id!(
    /// An interaction: one unit of work in a session.
    InteractionId
);
uuid_id!(
    /// A step: one persisted unit of execution of an interaction.
    StepId
);
uuid_id!(
    /// A task on the durable background queue.
    TaskId
);
uuid_id!(
    /// A reply waiting in (or delivered from) the outbox.
    OutboxId
);
uuid_id!(
    /// A knowledge fact.
    FactId
);
uuid_id!(
    /// A job: deferred work.
    JobId
);
uuid_id!(
    /// An observer of a job.
    ObserverId
);
uuid_id!(
    /// A notice to a job's observer.
    NotificationId
);
uuid_id!(
    /// A summary of a session's older turns.
    SummaryId
);
uuid_id!(
    /// An image a message carried, stored once.
    ImageId
);

impl UserId {
    /// The user that usage records of a forgotten user are attributed to,
    /// so account totals stay whole while nothing points at the person.
    pub const ANONYMOUS: UserId = UserId::from_uuid(Uuid::nil());
}

macro_rules! name_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Makes the id from a name. Any string is accepted here; what
            /// stores it checks its length.
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

name_id!(
    /// An agent's id: a stable name chosen by the host, such as `"assistant"`.
    AgentId
);

name_id!(
    /// An agent template's id: a name chosen by its account, such as
    /// `"support-desk"` ([`crate::catalog::AgentTemplate`]).
    TemplateId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings() {
        let id = StepId::new();
        let parsed: StepId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("not-a-uuid".parse::<StepId>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = InteractionId::new();
        let b = InteractionId::new();
        assert!(a < b);
    }
}
