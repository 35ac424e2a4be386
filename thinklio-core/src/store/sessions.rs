//! The store's sessions: opening them, their leases across workers, and
//! their history.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::{AgentId, SessionId, UserId};
use crate::session::{NewSession, Session, Turn};
use crate::time::Timestamp;

/// Sessions and their history.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Opens a session, or returns the existing one with the same principal,
    /// agent, channel and key when `key` is given.
    async fn open_session(&self, new: NewSession) -> StoreResult<Session>;

    /// The session `id`.
    async fn session(&self, id: SessionId) -> StoreResult<Session>;

    /// Sets (or, with `None`, clears) the approval mode chosen for a
    /// session; returns the session as stored.
    async fn set_session_approval_mode(
        &self,
        id: SessionId,
        mode: Option<crate::approval::ApprovalMode>,
    ) -> StoreResult<Session>;

    /// Sessions of a user, newest first.
    async fn sessions_of_user(&self, user: UserId) -> StoreResult<Vec<Session>>;

    /// Sessions an agent serves, oldest first, at most `limit`.
    async fn sessions_of_agent(&self, agent: &AgentId, limit: u32) -> StoreResult<Vec<Session>>;

    /// Takes the lease of a session that has work waiting (an unfinished
    /// interaction that is not a delegate's) and that no worker holds (no
    /// lease, or one that ran out), oldest work first: `worker` holds it
    /// until `now + lease` unless it renews it. Two workers never hold one
    /// session, so a session's messages run one after another, in order,
    /// across processes.
    async fn claim_session(
        &self,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<SessionId>> {
        Ok(self
            .claim_sessions(worker, now, lease, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Takes the leases of up to `max` sessions as
    /// [`claim_session`](Self::claim_session) takes one, oldest work first,
    /// in one round trip: a worker with many free slots (one taking over
    /// the sessions of a worker that stopped) starts them all at once.
    async fn claim_sessions(
        &self,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
        max: usize,
    ) -> StoreResult<Vec<SessionId>>;

    /// Takes or renews the lease of `session` for `worker` until
    /// `now + lease`; `false` (and nothing changed) while another worker's
    /// lease runs.
    async fn lease_session(
        &self,
        session: SessionId,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<bool>;

    /// [`lease_session`](Self::lease_session), and the session as stored
    /// when the lease is taken: a runtime on a shared store reads a
    /// session's settings (its approval mode) fresh at the start of a run,
    /// and a store may read them with the lease (PostgreSQL does, in one
    /// statement). `None` while another worker's lease runs.
    async fn lease_session_read(
        &self,
        session: SessionId,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<Session>> {
        if self.lease_session(session, worker, now, lease).await? {
            Ok(Some(self.session(session).await?))
        } else {
            Ok(None)
        }
    }

    /// Gives back `worker`'s lease of `session` (nothing if it holds none).
    async fn release_session(&self, session: SessionId, worker: &str) -> StoreResult<()>;

    /// The last `limit` completed turns of a session among interactions with
    /// `seq < before_seq`, oldest first.
    async fn history(
        &self,
        session: SessionId,
        before_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Turn>>;
}
