//! Versioned migrations, tracked in `PRAGMA user_version`. Each entry of
//! [`MIGRATIONS`] runs once, in order, in its own transaction; released
//! entries are never edited, only appended to.
//!
//! Hand-written rather than taken from a migration crate for the same reason
//! as the connection thread: those crates pin their own rusqlite.

use std::path::Path;

use crate::OpenError;

const MIGRATIONS: &[&str] = &[
    // 1: sessions, interactions, steps, outbox, events, usage, queue.
    // Steps are keyed by (interaction, seq) without a rowid, so writing one
    // touches two b-trees (the table and its id index), and its transitions
    // one more: each step transaction writes few pages.
    r#"
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    team_id     TEXT,
    user_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    channel_key TEXT,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX sessions_by_key
    ON sessions (account_id, user_id, agent_id, channel, channel_key)
    WHERE channel_key IS NOT NULL;
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE interactions (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    session_id            TEXT NOT NULL REFERENCES sessions (id),
    account_id            TEXT NOT NULL,
    team_id               TEXT,
    user_id               TEXT NOT NULL,
    agent_id              TEXT NOT NULL,
    input                 TEXT NOT NULL,
    inbound_id            TEXT,
    parent_interaction_id TEXT,
    delegation_depth      INTEGER NOT NULL,
    created_at            INTEGER NOT NULL
);
CREATE UNIQUE INDEX interactions_by_inbound
    ON interactions (session_id, inbound_id) WHERE inbound_id IS NOT NULL;
CREATE INDEX interactions_by_session ON interactions (session_id, seq);

CREATE TABLE steps (
    interaction_id  TEXT NOT NULL REFERENCES interactions (id),
    seq             INTEGER NOT NULL,
    id              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    mode            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    capability      TEXT,
    side_effect     TEXT,
    input           TEXT NOT NULL,
    output          TEXT,
    error_code      TEXT,
    error_message   TEXT,
    model           TEXT,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_nanos      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (interaction_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX steps_by_id ON steps (id);

-- Every state change of every step, append-only: (step, n) is the n-th change.
CREATE TABLE step_transitions (
    step_id    TEXT NOT NULL,
    n          INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (step_id, n)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id             TEXT PRIMARY KEY,
    interaction_id TEXT NOT NULL UNIQUE REFERENCES interactions (id),
    session_id     TEXT NOT NULL,
    channel        TEXT NOT NULL,
    channel_key    TEXT,
    text           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    delivered_at   INTEGER
);
CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL;

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    session_id     TEXT,
    interaction_id TEXT,
    step_id        TEXT,
    payload        TEXT NOT NULL,
    at             INTEGER NOT NULL
);

CREATE TABLE usage_records (
    id             INTEGER PRIMARY KEY,
    step_id        TEXT NOT NULL,
    interaction_id TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    team_id        TEXT,
    user_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_nanos     INTEGER NOT NULL,
    at             INTEGER NOT NULL
);
CREATE INDEX usage_by_account ON usage_records (account_id, at);
CREATE INDEX usage_by_user ON usage_records (user_id, at);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    lease_until  INTEGER,
    lease_token  TEXT,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX tasks_due ON tasks (state, run_at);
"#,
    // 2: the per-user todo list behind the built-in todo capabilities.
    r#"
CREATE TABLE todos (
    account_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    number     INTEGER NOT NULL,
    text       TEXT NOT NULL,
    add_key    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    done_at    INTEGER,
    PRIMARY KEY (account_id, user_id, number),
    UNIQUE (account_id, user_id, add_key)
);
"#,
    // 3: budgets and the warnings given about them.
    r#"
CREATE TABLE budgets (
    scope_kind  TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    limit_nanos INTEGER NOT NULL,
    period      TEXT NOT NULL,
    warn_at     TEXT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id)
);
CREATE TABLE budget_warnings (
    scope_kind   TEXT NOT NULL,
    scope_id     TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    threshold    INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, period_start, threshold)
);
CREATE INDEX usage_by_team ON usage_records (team_id, at);
"#,
    // 4: the directory.
    r#"
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
"#,
    // 5: knowledge facts, their history, their keyword index and embeddings.
    // `owner_key` (`user:<id>`, `team:<id>`, ...) is what visibility filters
    // on, so every query over facts is an index range per visible owner.
    // Embeddings sit in their own table so that scans of facts stay small.
    // The keyword index holds each fact's owner as a token in a `scope`
    // column, so a keyword query intersects the term's postings with the
    // visible owners' inside FTS5 instead of reading every match.
    r#"
CREATE TABLE facts (
    n             INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    account_id    TEXT NOT NULL,
    owner_key     TEXT NOT NULL,
    layer         TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    predicate     TEXT NOT NULL,
    value         TEXT NOT NULL,
    slot          TEXT,
    norm_text     TEXT NOT NULL,
    confidence    REAL NOT NULL,
    provenance    TEXT NOT NULL,
    locked        INTEGER NOT NULL,
    valid_at      INTEGER NOT NULL,
    invalid_at    INTEGER,
    created_at    INTEGER NOT NULL,
    expired_at    INTEGER,
    superseded_by TEXT
);
CREATE INDEX facts_current ON facts (account_id, owner_key, slot)
    WHERE invalid_at IS NULL AND expired_at IS NULL;
CREATE INDEX facts_by_owner ON facts (account_id, owner_key, n);
CREATE TABLE fact_vectors (
    n         INTEGER PRIMARY KEY,
    embedding BLOB NOT NULL
);
CREATE VIRTUAL TABLE facts_fts USING fts5 (
    text, scope, content = '', contentless_delete = 1, tokenize = 'porter unicode61'
);
CREATE TABLE fact_history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    fact_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX fact_history_by_fact ON fact_history (fact_id, seq);
"#,
    // 6: jobs, their observers and the outbox of notices to observers.
    r#"
CREATE TABLE jobs (
    n                INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
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
    deadline         INTEGER,
    partial_notified INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_by_parent ON jobs (parent_id, n);
CREATE INDEX jobs_pending ON jobs (n) WHERE state = 'pending';
CREATE INDEX jobs_open ON jobs (deadline, n)
    WHERE state IN ('pending', 'dispatched', 'in_progress');
CREATE TABLE job_observers (
    n      INTEGER PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    kind   TEXT NOT NULL
);
CREATE INDEX job_observers_by_job ON job_observers (job_id, n);
CREATE TABLE job_notifications (
    n            INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    observer_id  TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    notice       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    last_error   TEXT,
    delivered_at INTEGER,
    created_at   INTEGER NOT NULL
);
CREATE INDEX job_notifications_due ON job_notifications (due_at, n) WHERE delivered_at IS NULL;
"#,
    // 7: idempotent job creation by key; follow-up interactions name their
    // job; each observer's notices in order.
    r#"
ALTER TABLE jobs ADD COLUMN key TEXT;
CREATE UNIQUE INDEX jobs_by_key ON jobs (key) WHERE key IS NOT NULL;
ALTER TABLE interactions ADD COLUMN job_id TEXT;
CREATE INDEX job_notifications_by_observer ON job_notifications (observer_id, n)
    WHERE delivered_at IS NULL;
"#,
    // 8: leases: a session's and a dispatched job's worker, until when.
    r#"
ALTER TABLE sessions ADD COLUMN lease_owner TEXT;
ALTER TABLE sessions ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
"#,
    // 9: budgets in tokens as well as money (either may be unlimited).
    r#"
CREATE TABLE budgets_9 (
    scope_kind   TEXT NOT NULL,
    scope_id     TEXT NOT NULL,
    limit_nanos  INTEGER,
    limit_tokens INTEGER,
    period       TEXT NOT NULL,
    warn_at      TEXT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id)
);
INSERT INTO budgets_9 (scope_kind, scope_id, limit_nanos, period, warn_at)
    SELECT scope_kind, scope_id, limit_nanos, period, warn_at FROM budgets;
DROP TABLE budgets;
ALTER TABLE budgets_9 RENAME TO budgets;
"#,
    // 10: the user a queue task works for, so forgetting the user deletes it.
    r#"
ALTER TABLE tasks ADD COLUMN owner_account TEXT;
ALTER TABLE tasks ADD COLUMN owner_user TEXT;
CREATE INDEX tasks_by_owner ON tasks (owner_account, owner_user) WHERE owner_user IS NOT NULL;
"#,
    // 11: whether a fact's slot holds one value or many. Before, every
    // triple's slot held one; `knowledge::migrate_cardinality` then resolves
    // each fact's cardinality and restores the many-valued facts that were
    // superseded.
    r#"
ALTER TABLE facts ADD COLUMN cardinality TEXT NOT NULL DEFAULT 'many';
"#,
    // 12: what started an interaction: a message, or a host's dispatch.
    r#"
ALTER TABLE interactions ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
"#,
    // 13: decisions about calls that wait for a person (a step `waiting`).
    r#"
CREATE TABLE approval_decisions (
    step_id        TEXT PRIMARY KEY,
    interaction_id TEXT NOT NULL,
    decision       TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    user_id        TEXT,
    channel        TEXT NOT NULL,
    at             INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX approval_decisions_by_interaction ON approval_decisions (interaction_id);
CREATE INDEX steps_waiting ON steps (state) WHERE state = 'waiting';
"#,
    // 14: approval modes chosen for a session and set by an assignment.
    r#"
ALTER TABLE sessions ADD COLUMN approval_mode TEXT;
ALTER TABLE assignments ADD COLUMN approval_mode TEXT;
"#,
    // 15: summaries of sessions' older turns, one per session and turn covered.
    r#"
CREATE TABLE summaries (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    team_id        TEXT,
    user_id        TEXT NOT NULL,
    through_seq    INTEGER NOT NULL,
    previous_id    TEXT,
    text           TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_nanos     INTEGER NOT NULL,
    interaction_id TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (session_id, through_seq)
);
CREATE INDEX summaries_by_user ON summaries (account_id, user_id);
"#,
    // 16: images messages carried, stored once per user and content; the
    // interaction lists the ids of its message's images.
    r#"
CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    team_id     TEXT,
    user_id     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    format      TEXT,
    width       INTEGER,
    height      INTEGER,
    data        BLOB,
    url         TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (account_id, user_id, sha256)
);
ALTER TABLE interactions ADD COLUMN images TEXT;
"#,
    // 17: agents kept as data, every change a version; an interaction
    // records the version of its agent it runs with.
    r#"
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX agents_by_account ON agents (account_id);
CREATE TABLE agent_versions (
    agent_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    by_user     TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (agent_id, version)
);
ALTER TABLE interactions ADD COLUMN agent_version INTEGER;
"#,
    // 18: where a stored agent came from (a template or a parent), the
    // template version its current version follows, agent templates, and
    // the sessions an agent serves.
    r#"
ALTER TABLE agents ADD COLUMN origin TEXT;
ALTER TABLE agents ADD COLUMN template_version INTEGER;
CREATE TABLE agent_templates (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX agent_templates_by_account ON agent_templates (account_id);
CREATE INDEX sessions_by_agent ON sessions (agent_id, created_at);
"#,
    // 19: retention. A pruned interaction keeps its row (and the step that
    // ended it) and says when it was pruned; unpruned ones are walked in
    // order and delegation trees downwards; a usage row may roll up many
    // calls.
    r#"
ALTER TABLE interactions ADD COLUMN pruned_at INTEGER;
CREATE INDEX interactions_unpruned ON interactions (seq) WHERE pruned_at IS NULL;
CREATE INDEX interactions_by_parent ON interactions (parent_interaction_id)
    WHERE parent_interaction_id IS NOT NULL;
CREATE INDEX interactions_pruning ON interactions (id) WHERE pruned_at = -1;
ALTER TABLE usage_records ADD COLUMN calls INTEGER NOT NULL DEFAULT 1;
"#,
    // 20: the approximate vector index: each embedding size's inverted
    // lists (centroids in one blob), and the list each vector is filed
    // under (the key carries the lists' generation); a write's duplicate
    // check finds an owner's current fact of the same text by index.
    r#"
CREATE TABLE vector_lists (
    dims       INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    lists      INTEGER NOT NULL,
    vectors    INTEGER NOT NULL,
    last_n     INTEGER NOT NULL,
    centroids  BLOB NOT NULL
);
ALTER TABLE fact_vectors ADD COLUMN list INTEGER;
CREATE INDEX fact_vectors_by_list ON fact_vectors (list);
CREATE INDEX facts_by_text ON facts (account_id, owner_key, norm_text)
    WHERE invalid_at IS NULL AND expired_at IS NULL;
"#,
];

/// The version whose migration is followed by `knowledge::migrate_cardinality`.
const CARDINALITY: i64 = 11;

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut rusqlite::Connection, path: &Path) -> Result<(), OpenError> {
    migrate_to(conn, path, LATEST)
}

/// Migrates up to `target` (at most [`LATEST`]); migration tests stop early.
pub(crate) fn migrate_to(
    conn: &mut rusqlite::Connection,
    path: &Path,
    target: i64,
) -> Result<(), OpenError> {
    let err = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if current > LATEST {
        return Err(OpenError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
        .take(usize::try_from(target - current).unwrap_or(0))
    {
        let version = i as i64 + 1;
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        if version == CARDINALITY {
            let restored = crate::knowledge::migrate_cardinality(&tx).map_err(|source| {
                OpenError::Migration {
                    path: path.to_path_buf(),
                    version,
                    source,
                }
            })?;
            tracing::info!(
                restored,
                "restored many-valued facts an older schema had superseded"
            );
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(version, path = %path.display(), "applied SQLite schema migration");
    }
    Ok(())
}
