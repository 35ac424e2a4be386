#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod agent;
pub mod approval;
pub mod budget;
pub mod capability;
pub mod catalog;
pub mod context;
pub mod directory;
pub mod error;
pub mod event;
pub mod ids;
pub mod image;
pub mod interaction;
pub mod job;
pub mod knowledge;
pub mod model;
pub mod outbox;
pub mod principal;
pub mod queue;
pub mod runtime;
pub use runtime::channel;
pub mod session;
pub mod step;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod todo;
pub mod usage;

mod bounded;

/// Knowledge: layers, reconciliation, extraction and search
/// (`docs/knowledge.md`, compiled and run as doc tests).
#[doc = include_str!("../../docs/knowledge.md")]
pub mod knowledge_guide {}

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "fuzz")]
pub mod fuzz;

pub use agent::{AgentDefinition, DelegateTo};
pub use budget::{BudgetLimit, BudgetPeriod};
pub use capability::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, CapabilityRegistry, Dispatch,
    FunctionCapability, InvocationContext, SideEffect, TrustLevel,
};
pub use catalog::{
    AgentOrigin, AgentOverrides, AgentState, AgentTemplate, AgentVersion, CloneOptions, Cloned,
    NewAgentVersion, NewTemplate, StoredAgent, SyncReport, TemplateSpec,
};
pub use directory::{Access, AccessError, AccountPolicy, AccountRole, Assignment, ContentRules};
pub use error::ErrorCode;
pub use event::{Event, EventKind, NewEvent, SessionUpdate, TokenDelta};
pub use ids::{
    AccountId, AgentId, FactId, ImageId, InteractionId, JobId, NotificationId, ObserverId,
    OutboxId, SessionId, StepId, SummaryId, TaskId, TeamId, TemplateId, UserId,
};
pub use image::{ChatImage, Image, ImageError, ImageFormat, ImageInput, ImageSource, NewImage};
pub use interaction::{Interaction, InteractionKind, InteractionState, NewInteraction};
pub use job::{
    Job, JobCallback, JobChange, JobHandle, JobHandleError, JobNotification, JobObserver,
    JobReport, JobState, JobStore, JobUpdate, NewJob, Notice, ObserverKind, Usefulness,
};
pub use knowledge::{
    Curation, Fact, FactActor, FactHit, FactOwner, FactQuery, FactWrite, KnowledgeStore, Layer,
    NewFact, OfflineEmbedder, Provenance, Visibility,
};
pub use model::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream, Embedder, FinishReason,
    ModelError, OutputSchema, Role, StreamEvent, ToolCall, ToolDefinition,
};
pub use outbox::{DeliveryError, NewOutboxMessage, OutboxMessage, ReplySink};
pub use principal::{Actor, Principal, Scope};
pub use queue::{NewTask, RetryPolicy, Task, TaskRetry, TaskState};
pub use runtime::{
    AnswerError, ApprovalError, CANCEL_JOB, CancelledBy, Delegate, DelegationGraph, EXTRACT_TASK,
    Inbound, Instantiation, JOB_STATUS, JobCallbacks, JobError, JobNotice, JobRecovery, JobRun,
    JobWorker, KnowledgeConfig, NoticeWebhook, ObserverCallback, QueueRun, QueueWorker,
    RecoveryReport, Reply, RetentionPolicy, RetentionWorker, Runtime, RuntimeBuilder,
    RuntimeConfig, RuntimeError, SUMMARIZE_TASK, SUMMARY_PROMPT, ShutdownReport, Structured,
    TaskError, TaskHandler, Templates, extraction_schema,
};
pub use session::{NewSession, NewSummary, Session, Summary, Turn};
pub use step::{
    FirstStep, ModelUsage, NewStep, Step, StepError, StepKind, StepMode, StepOutcome, StepState,
    StepTransition,
};
pub use store::{
    AgentStore, Backlog, BudgetStore, CreatedInteraction, DirectoryStore, EventStore, FinishedStep,
    ForgetReport, ImageStore, InteractionStore, OpsStore, OutboxStore, PrivacyStore, PruneReport,
    Pruning, QueueStore, SessionStore, Store, StoreError, StoreResult, SummaryStore, TemplateStore,
    TodoStore, UsageStore,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use todo::Todo;
pub use usage::{
    Cost, ModelPrice, PriceTable, TokenUsage, UsageFilter, UsageGroup, UsageRecord, UsageRow,
    UsageTotals,
};
