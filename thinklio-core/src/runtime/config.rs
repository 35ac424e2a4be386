//! The runtime's tunables.

use super::KnowledgeConfig;
use crate::queue::RetryPolicy;

/// Tunables of a runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The largest inbound message accepted, in bytes.
    pub max_message_bytes: usize,
    /// The largest image a message may carry, in bytes
    /// ([`DEFAULT_MAX_IMAGE_BYTES`](crate::image::DEFAULT_MAX_IMAGE_BYTES):
    /// 5 MiB, what every supported provider accepts).
    pub max_image_bytes: usize,
    /// The most images one message may carry.
    pub max_images_per_message: usize,
    /// How many sessions `recover()` resumes at once.
    pub recovery_concurrency: usize,
    /// Backoff of the background queue.
    pub retry_policy: RetryPolicy,
    /// How long a claimed task is leased before another worker may take it.
    pub task_lease: std::time::Duration,
    /// Checks every call that acts for a principal against the directory
    /// (membership, agent ownership, assignments, account policy). Off by
    /// default, for single-user embeddings that keep no directory.
    pub enforce_directory: bool,
    /// Capacity of the in-process event channel; slower subscribers miss
    /// events (they can read them from the store's event log).
    pub event_capacity: usize,
    /// Recall and extraction of knowledge facts.
    pub knowledge: KnowledgeConfig,
    /// Other runtimes (in other processes, on other machines) share this
    /// store. Then a runtime holds a lease on a session in the store while
    /// it runs one of its interactions (`send`, a follow-up, the interaction
    /// worker), so a session's messages run one at a time, in order, across
    /// processes; and `recover` leaves work other workers hold to them (what a
    /// dead worker held is taken over when its lease runs out). Off by
    /// default: one process per store needs only in-process locks.
    pub shared_store: bool,
    /// How long a `context` or `think` step may go without finishing before
    /// the watchdog fails it (`step.deadline_exceeded`) and the interaction
    /// replies that it could not answer in time (default 5 minutes). A
    /// capability call is bounded by its own manifest's timeout instead.
    pub step_deadline: std::time::Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_image_bytes: crate::image::DEFAULT_MAX_IMAGE_BYTES,
            max_images_per_message: crate::image::DEFAULT_MAX_IMAGES,
            recovery_concurrency: 64,
            retry_policy: RetryPolicy::default(),
            task_lease: std::time::Duration::from_secs(60),
            enforce_directory: false,
            event_capacity: 1024,
            knowledge: KnowledgeConfig::default(),
            shared_store: false,
            step_deadline: std::time::Duration::from_secs(300),
        }
    }
}
