//! Versioned migrations, tracked in `thinklio_schema`. Each entry of
//! [`MIGRATIONS`] runs once, in order, in one transaction that holds an
//! advisory lock, so processes starting together migrate once; released
//! entries are never edited, only appended to.
//!
//! Identifiers are text (the domain's UUIDs and agent names, as the SQLite
//! store keeps them), times are milliseconds since the epoch, payloads are
//! JSON text: rows read back exactly as written.

use crate::rows::backend;
use thinklio_core::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: everything the store traits of Thinklio 0.1 need.
    r#"
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    team_id     TEXT,
    user_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    channel_key TEXT,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX sessions_by_key
    ON sessions (account_id, user_id, agent_id, channel, channel_key)
    WHERE channel_key IS NOT NULL;
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE interactions (
    seq                   BIGSERIAL PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
    session_id            TEXT NOT NULL REFERENCES sessions (id),
    account_id            TEXT NOT NULL,
    team_id               TEXT,
    user_id               TEXT NOT NULL,
    agent_id              TEXT NOT NULL,
    input                 TEXT NOT NULL,
    inbound_id            TEXT,
    parent_interaction_id TEXT,
    delegation_depth      BIGINT NOT NULL,
    job_id                TEXT,
    created_at            BIGINT NOT NULL
);
CREATE UNIQUE INDEX interactions_by_inbound
    ON interactions (session_id, inbound_id) WHERE inbound_id IS NOT NULL;
CREATE INDEX interactions_by_session ON interactions (session_id, seq);
CREATE INDEX interactions_by_user ON interactions (account_id, user_id);

CREATE TABLE steps (
    interaction_id  TEXT NOT NULL REFERENCES interactions (id),
    seq             BIGINT NOT NULL,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    mode            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    capability      TEXT,
    side_effect     TEXT,
    input           TEXT NOT NULL,
    output          TEXT,
    error_code      TEXT,
    error_message   TEXT,
    model           TEXT,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_nanos      BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (interaction_id, seq)
);
-- Steps that end an interaction, so that unfinished interactions are found
-- without reading every step.
CREATE INDEX steps_ending ON steps (interaction_id)
    WHERE (kind = 'respond' AND state = 'succeeded')
       OR (state = 'failed' AND kind IN ('context', 'think', 'respond'));

CREATE TABLE step_transitions (
    step_id    TEXT NOT NULL,
    n          BIGINT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (step_id, n)
);

CREATE TABLE outbox (
    id             TEXT PRIMARY KEY,
    interaction_id TEXT NOT NULL UNIQUE REFERENCES interactions (id),
    session_id     TEXT NOT NULL,
    channel        TEXT NOT NULL,
    channel_key    TEXT,
    text           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    delivered_at   BIGINT
);
CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL;

CREATE TABLE events (
    seq            BIGSERIAL PRIMARY KEY,
    kind           TEXT NOT NULL,
    session_id     TEXT,
    interaction_id TEXT,
    step_id        TEXT,
    payload        TEXT NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX events_by_interaction ON events (interaction_id);
CREATE INDEX events_by_session ON events (session_id);

CREATE TABLE usage_records (
    id             BIGSERIAL PRIMARY KEY,
    step_id        TEXT NOT NULL,
    interaction_id TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    team_id        TEXT,
    user_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    cost_nanos     BIGINT NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX usage_by_account ON usage_records (account_id, at);
CREATE INDEX usage_by_user ON usage_records (user_id, at);
CREATE INDEX usage_by_team ON usage_records (team_id, at);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    run_at       BIGINT NOT NULL,
    lease_until  BIGINT,
    lease_token  TEXT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX tasks_due ON tasks (state, run_at);

CREATE TABLE todos (
    account_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    number     BIGINT NOT NULL,
    text       TEXT NOT NULL,
    add_key    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    done_at    BIGINT,
    PRIMARY KEY (account_id, user_id, number),
    UNIQUE (account_id, user_id, add_key)
);

CREATE TABLE budgets (
    scope_kind  TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    limit_nanos BIGINT NOT NULL,
    period      TEXT NOT NULL,
    warn_at     TEXT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id)
);
CREATE TABLE budget_warnings (
    scope_kind   TEXT NOT NULL,
    scope_id     TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    threshold    BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period_start, threshold)
);

CREATE TABLE accounts (
    id     TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    policy TEXT NOT NULL
);
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name       TEXT NOT NULL
);
CREATE TABLE members (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    user_id    TEXT NOT NULL,
    role       TEXT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id),
    user_id TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE TABLE agent_owners (
    agent_id   TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id)
);
CREATE TABLE assignments (
    agent_id     TEXT NOT NULL,
    scope_kind   TEXT NOT NULL,
    scope_id     TEXT NOT NULL,
    capabilities TEXT,
    PRIMARY KEY (agent_id, scope_kind, scope_id)
);

-- Facts: visibility filters on (account_id, owner_key); the keyword side is
-- a generated tsvector with a GIN index; embeddings are pgvector vectors of
-- any dimension in their own table, compared exactly over the visible rows.
CREATE TABLE facts (
    n             BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    account_id    TEXT NOT NULL,
    owner_key     TEXT NOT NULL,
    layer         TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    predicate     TEXT NOT NULL,
    value         TEXT NOT NULL,
    slot          TEXT,
    text          TEXT NOT NULL,
    norm_text     TEXT NOT NULL,
    tsv           TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    confidence    DOUBLE PRECISION NOT NULL,
    provenance    TEXT NOT NULL,
    locked        BOOLEAN NOT NULL,
    valid_at      BIGINT NOT NULL,
    invalid_at    BIGINT,
    created_at    BIGINT NOT NULL,
    expired_at    BIGINT,
    superseded_by TEXT
);
CREATE INDEX facts_current ON facts (account_id, owner_key, slot)
    WHERE invalid_at IS NULL AND expired_at IS NULL;
CREATE INDEX facts_by_owner ON facts (account_id, owner_key, n);
CREATE INDEX facts_tsv ON facts USING gin (tsv);
CREATE TABLE fact_vectors (
    n         BIGINT PRIMARY KEY REFERENCES facts (n) ON DELETE CASCADE,
    embedding vector NOT NULL
);
CREATE TABLE fact_history (
    seq     BIGSERIAL PRIMARY KEY,
    fact_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      BIGINT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX fact_history_by_fact ON fact_history (fact_id, seq);

CREATE TABLE jobs (
    n                BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    key              TEXT UNIQUE,
    parent_id        TEXT,
    session_id       TEXT NOT NULL,
    interaction_id   TEXT NOT NULL,
    step_id          TEXT,
    account_id       TEXT NOT NULL,
    team_id          TEXT,
    user_id          TEXT NOT NULL,
    capability       TEXT NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL,
    usefulness       TEXT NOT NULL,
    progress         TEXT,
    result           TEXT,
    context          TEXT,
    error            TEXT,
    deadline         BIGINT,
    partial_notified BOOLEAN NOT NULL DEFAULT false,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_by_parent ON jobs (parent_id, n);
CREATE INDEX jobs_pending ON jobs (n) WHERE state = 'pending';
CREATE INDEX jobs_open ON jobs (deadline, n)
    WHERE state IN ('pending', 'dispatched', 'in_progress');
CREATE TABLE job_observers (
    n      BIGSERIAL PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    kind   TEXT NOT NULL
);
CREATE INDEX job_observers_by_job ON job_observers (job_id, n);
CREATE TABLE job_notifications (
    n            BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    observer_id  TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    notice       TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    due_at       BIGINT NOT NULL,
    last_error   TEXT,
    delivered_at BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX job_notifications_due ON job_notifications (due_at, n) WHERE delivered_at IS NULL;
CREATE INDEX job_notifications_by_observer ON job_notifications (observer_id, n)
    WHERE delivered_at IS NULL;
"#,
    // 2: leases: a session's and a dispatched job's worker, until when.
    r#"
ALTER TABLE sessions ADD COLUMN lease_owner TEXT;
ALTER TABLE sessions ADD COLUMN lease_until BIGINT;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'dispatched';
"#,
    // 3: HNSW indexes of the common embedding sizes (all-MiniLM and the
    // offline embedder: 384; 768; OpenAI's small model: 1536), each over
    // the vectors of its size, for principals who see many facts.
    r#"
CREATE INDEX fact_vectors_hnsw_384 ON fact_vectors
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE vector_dims(embedding) = 384;
CREATE INDEX fact_vectors_hnsw_768 ON fact_vectors
    USING hnsw ((embedding::vector(768)) vector_cosine_ops) WHERE vector_dims(embedding) = 768;
CREATE INDEX fact_vectors_hnsw_1536 ON fact_vectors
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE vector_dims(embedding) = 1536;
"#,
    // 4: budgets in tokens as well as money (either may be unlimited).
    r#"
ALTER TABLE budgets ALTER COLUMN limit_nanos DROP NOT NULL;
ALTER TABLE budgets ADD COLUMN limit_tokens BIGINT;
"#,
    // 5: the user a queue task works for, so forgetting the user deletes it.
    r#"
ALTER TABLE tasks ADD COLUMN owner_account TEXT;
ALTER TABLE tasks ADD COLUMN owner_user TEXT;
CREATE INDEX tasks_by_owner ON tasks (owner_account, owner_user) WHERE owner_user IS NOT NULL;
"#,
    // 6: whether a fact's slot holds one value or many. Before, every
    // triple's slot held one; `knowledge::migrate_cardinality` then resolves
    // each fact's cardinality and restores the many-valued facts that were
    // superseded.
    r#"
ALTER TABLE facts ADD COLUMN cardinality TEXT NOT NULL DEFAULT 'many';
"#,
    // 7: what started an interaction: a message, or a host's dispatch.
    r#"
ALTER TABLE interactions ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
"#,
    // 8: decisions about calls that wait for a person (a step `waiting`).
    r#"
CREATE TABLE approval_decisions (
    step_id        TEXT PRIMARY KEY,
    interaction_id TEXT NOT NULL,
    decision       TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    user_id        TEXT,
    channel        TEXT NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX approval_decisions_by_interaction ON approval_decisions (interaction_id);
CREATE INDEX steps_waiting ON steps (state) WHERE state = 'waiting';
"#,
    // 9: approval modes chosen for a session and set by an assignment.
    r#"
ALTER TABLE sessions ADD COLUMN approval_mode TEXT;
ALTER TABLE assignments ADD COLUMN approval_mode TEXT;
"#,
    // 10: summaries of sessions' older turns, one per session and turn covered.
    r#"
CREATE TABLE summaries (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    team_id        TEXT,
    user_id        TEXT NOT NULL,
    through_seq    BIGINT NOT NULL,
    previous_id    TEXT,
    text           TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    cost_nanos     BIGINT NOT NULL,
    interaction_id TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (session_id, through_seq)
);
CREATE INDEX summaries_by_user ON summaries (account_id, user_id);
"#,
    // 11: images messages carried, stored once per user and content; the
    // interaction lists the ids of its message's images.
    r#"
CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    team_id     TEXT,
    user_id     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    format      TEXT,
    width       BIGINT,
    height      BIGINT,
    data        BYTEA,
    url         TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (account_id, user_id, sha256)
);
ALTER TABLE interactions ADD COLUMN images TEXT;
"#,
    // 12: agents kept as data, every change a version; an interaction
    // records the version of its agent it runs with.
    r#"
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX agents_by_account ON agents (account_id);
CREATE TABLE agent_versions (
    agent_id    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    definition  TEXT NOT NULL,
    by_user     TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (agent_id, version)
);
ALTER TABLE interactions ADD COLUMN agent_version BIGINT;
"#,
    // 13: where a stored agent came from (a template or a parent), the
    // template version its current version follows, agent templates, and
    // the sessions an agent serves.
    r#"
ALTER TABLE agents ADD COLUMN origin TEXT;
ALTER TABLE agents ADD COLUMN template_version BIGINT;
CREATE TABLE agent_templates (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX agent_templates_by_account ON agent_templates (account_id);
CREATE INDEX sessions_by_agent ON sessions (agent_id, created_at);
"#,
    // 14: retention. A pruned interaction keeps its row (and the step that
    // ended it) and says when it was pruned; unpruned ones are walked in
    // order and delegation trees downwards; a usage row may roll up many
    // calls.
    r#"
ALTER TABLE interactions ADD COLUMN pruned_at BIGINT;
CREATE INDEX interactions_unpruned ON interactions (seq) WHERE pruned_at IS NULL;
CREATE INDEX interactions_by_parent ON interactions (parent_interaction_id)
    WHERE parent_interaction_id IS NOT NULL;
CREATE INDEX interactions_pruning ON interactions (id) WHERE pruned_at = -1;
ALTER TABLE usage_records ADD COLUMN calls BIGINT NOT NULL DEFAULT 1;
"#,
    // 15: a write's duplicate check finds an owner's current fact of the
    // same text through an index, not by reading every fact of the owner.
    r#"
CREATE INDEX facts_by_text ON facts (account_id, owner_key, norm_text)
    WHERE invalid_at IS NULL AND expired_at IS NULL;
"#,
    // 16: the HNSW indexes built denser (pgvector's defaults are m 16,
    // ef_construction 64): over 100,000 all-MiniLM-L6-v2 vectors of
    // generated facts the defaults found 0.83 of the exact ten nearest at
    // ef_search 200; m 24 and ef_construction 200 find 0.96, and 0.97 at
    // ef_search 300, for a build about three times as long.
    r#"
DROP INDEX fact_vectors_hnsw_384;
DROP INDEX fact_vectors_hnsw_768;
DROP INDEX fact_vectors_hnsw_1536;
CREATE INDEX fact_vectors_hnsw_384 ON fact_vectors
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dims(embedding) = 384;
CREATE INDEX fact_vectors_hnsw_768 ON fact_vectors
    USING hnsw ((embedding::vector(768)) vector_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dims(embedding) = 768;
CREATE INDEX fact_vectors_hnsw_1536 ON fact_vectors
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dims(embedding) = 1536;
"#,
];

/// The version whose migration is followed by `knowledge::migrate_cardinality`.
const CARDINALITY: i64 = 6;

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key migrations hold ("thinklio" in ASCII, folded).
const MIGRATION_LOCK: i64 = 0x7468_696e_6b6c_696f;

/// Migrates up to `target` (at most [`LATEST`]; migration tests stop early).
pub(crate) async fn migrate_to(
    client: &mut deadpool_postgres::Object,
    target: i64,
) -> Result<i64, StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS thinklio_schema (version BIGINT NOT NULL)")
        .await
        .map_err(backend)?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM thinklio_schema", &[])
        .await
        .map_err(backend)?
        .get(0);
    if current > LATEST {
        return Err(StoreError::Conflict(format!(
            "the database has schema version {current}; this Thinklio knows up to {LATEST}"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
        .take(usize::try_from(target - current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(backend)?;
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version == CARDINALITY {
            let restored = crate::knowledge::migrate_cardinality(&tx).await?;
            tracing::info!(
                restored,
                "restored many-valued facts an older schema had superseded"
            );
        }
        tx.execute(
            "INSERT INTO thinklio_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(target.min(LATEST).max(current))
}
