//! Running the durable background queue: handlers by task kind, a drain call
//! for tests and batch hosts, and a background worker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Runtime, RuntimeError};
use crate::queue::{NewTask, Task, TaskRetry};

/// Why a task attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What happened.
    pub message: String,
    /// Whether another attempt may succeed; `false` dead-letters at once.
    pub retryable: bool,
}

impl TaskError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Runs tasks of one kind.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt of `task`.
    async fn run(&self, task: &Task) -> Result<(), TaskError>;
}

/// What one [`Runtime::run_due_tasks`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueRun {
    /// Tasks that succeeded.
    pub completed: usize,
    /// Attempts that failed and were scheduled again.
    pub retried: usize,
    /// Tasks dead-lettered.
    pub dead_lettered: usize,
}

super::worker::worker_handle!(
    /// A background queue worker; stops when [`QueueWorker::stop`] is called
    /// or the worker is dropped.
    QueueWorker,
    "Stops the worker and waits for its current task to end."
);

impl Runtime {
    /// Registers the handler of tasks of `kind`.
    pub fn register_task_handler(&self, kind: impl Into<String>, handler: impl TaskHandler) {
        self.inner
            .task_handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.into(), Arc::new(handler));
    }

    /// Puts a task on the durable queue.
    pub async fn enqueue(&self, task: NewTask) -> Result<Task, RuntimeError> {
        Ok(self.inner.store.enqueue(task).await?)
    }

    /// Runs every task that is due now, one at a time, until none is due.
    pub async fn run_due_tasks(&self) -> Result<QueueRun, RuntimeError> {
        let mut run = QueueRun::default();
        while let Some(outcome) = self.run_one_task().await? {
            match outcome {
                TaskOutcome::Completed => run.completed += 1,
                TaskOutcome::Retried => run.retried += 1,
                TaskOutcome::DeadLettered => run.dead_lettered += 1,
            }
        }
        Ok(run)
    }

    /// Claims and runs one due task of a registered kind, if there is one.
    async fn run_one_task(&self) -> Result<Option<TaskOutcome>, RuntimeError> {
        let kinds: Vec<String> = self
            .inner
            .task_handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        if kinds.is_empty() {
            return Ok(None);
        }
        let now = self.inner.clock.now();
        let Some(task) = self
            .inner
            .store
            .claim(now, self.inner.config.task_lease, &kinds)
            .await?
        else {
            return Ok(None);
        };
        let handler = self
            .inner
            .task_handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&task.kind)
            .cloned();
        let token = task.lease_token.clone().unwrap_or_default();
        let result = match handler {
            Some(h) => h.run(&task).await,
            None => Err(TaskError::retryable(format!(
                "no handler for task kind `{}`",
                task.kind
            ))),
        };
        match result {
            Ok(()) => {
                self.inner.store.complete_task(task.id, &token).await?;
                Ok(Some(TaskOutcome::Completed))
            }
            Err(e) => {
                let now = self.inner.clock.now();
                let retry = if e.retryable {
                    self.inner
                        .config
                        .retry_policy
                        .next(task.attempts, task.max_attempts, now)
                } else {
                    TaskRetry::DeadLetter
                };
                self.inner
                    .store
                    .fail_task(task.id, &token, &e.message, retry)
                    .await?;
                tracing::warn!(task_id = %task.id, kind = %task.kind, attempt = task.attempts, error = %e, "task attempt failed");
                Ok(Some(match retry {
                    TaskRetry::At(_) => TaskOutcome::Retried,
                    TaskRetry::DeadLetter => {
                        tracing::error!(task_id = %task.id, kind = %task.kind, "task dead-lettered");
                        TaskOutcome::DeadLettered
                    }
                }))
            }
        }
    }

    /// Starts a background worker that runs due tasks, checking for new ones
    /// every `poll` when idle.
    pub fn spawn_queue_worker(&self, poll: Duration) -> QueueWorker {
        let runtime = self.clone();
        QueueWorker::spawn(|mut stopped| async move {
            loop {
                if *stopped.borrow() || runtime.inner.closing() {
                    return;
                }
                let idle = match runtime.run_one_task().await {
                    Ok(Some(_)) => false,
                    Ok(None) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "queue worker could not reach the store");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = runtime.inner.closed() => {}
                        _ = runtime.inner.store.wait_for_work(poll) => {}
                    }
                }
            }
        })
    }
}

enum TaskOutcome {
    Completed,
    Retried,
    DeadLettered,
}
