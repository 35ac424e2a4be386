//! The durable background queue: tasks claimed with a lease, retried with
//! exponential backoff and jitter, dead-lettered after their last attempt.
//!
//! A claimed task carries a lease token; completing or failing it needs that
//! token, so a worker whose lease ran out (and whose task another worker took
//! over) cannot overwrite the newer outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AccountId, TaskId, UserId};
use crate::time::Timestamp;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for `run_at`.
    Pending,
    /// Claimed by a worker until `lease_until`.
    Leased,
    /// Finished well.
    Done,
    /// Out of attempts.
    Dead,
}

crate::step::str_enum!(TaskState, "task state",
    TaskState::Pending => "pending",
    TaskState::Leased => "leased",
    TaskState::Done => "done",
    TaskState::Dead => "dead",
);

/// A queued task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Which handler runs it (`knowledge.extract`, `session.summarise`, ...).
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// Where it stands.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before it is dead-lettered.
    pub max_attempts: u32,
    /// Not to run before this.
    pub run_at: Timestamp,
    /// The current lease's end, while leased.
    pub lease_until: Option<Timestamp>,
    /// The current lease's token, while leased.
    pub lease_token: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
}

/// A task to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Which handler runs it.
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// Attempts allowed (at least 1).
    pub max_attempts: u32,
    /// Not to run before this.
    pub run_at: Timestamp,
    /// The user whose data it works on, if any: forgetting the user
    /// ([`PrivacyStore::forget_user`](crate::PrivacyStore::forget_user))
    /// deletes the task, whatever its state.
    pub owner: Option<(AccountId, UserId)>,
}

impl NewTask {
    /// The pending task as a store writes it, at `now`, with a new id
    /// (and at least one attempt allowed).
    pub fn created(self, now: Timestamp) -> Task {
        Task {
            id: crate::ids::TaskId::new(),
            kind: self.kind,
            payload: self.payload,
            state: TaskState::Pending,
            attempts: 0,
            max_attempts: self.max_attempts.max(1),
            run_at: self.run_at,
            lease_until: None,
            lease_token: None,
            last_error: None,
            created_at: now,
        }
    }

    /// A task of `kind` due at `run_at`, with 5 attempts, owned by no user.
    pub fn new(kind: impl Into<String>, payload: Value, run_at: Timestamp) -> Self {
        Self {
            kind: kind.into(),
            payload,
            max_attempts: 5,
            run_at,
            owner: None,
        }
    }

    /// Marks the task as working on `user`'s data in `account`.
    pub fn owned_by(mut self, account: AccountId, user: UserId) -> Self {
        self.owner = Some((account, user));
        self
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
}

/// What to do with a task whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRetry {
    /// Try again at this time.
    At(Timestamp),
    /// Give up: dead-letter it.
    DeadLetter,
}

/// Exponential backoff with "equal jitter": the n-th retry waits between half
/// and all of `base · 2ⁿ⁻¹`, capped at `max`. Half is fixed so that delays
/// never shrink from one attempt to the next below the cap; the random half
/// spreads retries of many failing tasks apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The full (un-jittered) delay after `attempt` failed attempts (from 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The delay after `attempt` failed attempts, with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self.ceiling(attempt);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// What to do after attempt `attempts` of `max_attempts` failed at `now`.
    pub fn next(&self, attempts: u32, max_attempts: u32, now: Timestamp) -> TaskRetry {
        if attempts >= max_attempts {
            TaskRetry::DeadLetter
        } else {
            TaskRetry::At(now.plus(self.delay(attempts)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let mut last = Duration::ZERO;
        for attempt in 1..=12 {
            let d = p.delay(attempt);
            if p.ceiling(attempt) < p.max {
                assert!(d >= last, "attempt {attempt}: {d:?} < {last:?}");
            }
            assert!(d <= p.ceiling(attempt));
            assert!(d >= p.ceiling(attempt) / 2);
            last = d;
        }
        assert_eq!(p.ceiling(40), Duration::from_secs(10));
    }

    #[test]
    fn last_attempt_dead_letters() {
        let p = RetryPolicy::default();
        let now = Timestamp::from_millis(0);
        assert_eq!(p.next(3, 3, now), TaskRetry::DeadLetter);
        assert!(matches!(p.next(1, 3, now), TaskRetry::At(t) if t > now));
    }
}
