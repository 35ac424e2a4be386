//! Knowledge: facts in four layers (account, agent, team, user), found by
//! vector plus keyword search, fitted into a token budget.
//!
//! A [`Fact`] is a (subject, predicate, value) triple, or a free-text fact
//! whose text is its value. Its [`FactOwner`] fixes its layer and who may see
//! it: a principal sees the account facts of its account, the agent facts of
//! the agent serving it, the team facts of the teams it acts for, and its own
//! user facts — nothing else, through any path ([`Visibility`]).
//!
//! Facts are bi-temporal: `valid_at`/`invalid_at` say when a fact was true in
//! the world, `created_at`/`expired_at` when the store believed it. Most
//! predicates hold many values (a user likes many things), so a new value is
//! added beside the others; a newer value of a single-valued predicate
//! (lives in) supersedes the old one, and an update naming the fact it
//! replaces supersedes that fact only ([`Cardinality`], [`NewFact::reconcile`]).
//! A superseded fact gets `invalid_at`, `expired_at` and `superseded_by`;
//! nothing is overwritten, and nothing is deleted except by the privacy
//! call. Every change is appended to the fact's history with its [`FactActor`].
//!
//! Search is done by the store ([`KnowledgeStore::fact_candidates`]: the
//! visibility filter sits inside its queries) and ranked here ([`rank`]):
//! reciprocal rank fusion of the vector and keyword lists, layer precedence
//! on conflicting facts, then a diversity pass (MMR).

mod embed;
mod lists;
mod rank;
mod reconcile;
mod when;

pub use embed::{OfflineEmbedder, STOPWORDS, cosine, keywords};
pub use lists::{APPROXIMATE_ABOVE, IvfLists, LISTS_FROM};
pub use rank::{Fusion, estimate_tokens, fit_to_budget, precedence, rank};
pub use reconcile::{
    Cardinality, Lookup, MANY_VALUED, NEAR_DUPLICATE, Reconciliation, SINGLE_VALUED, predicate_key,
    wrongly_superseded,
};
pub use when::Period;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgentId, FactId, InteractionId, StepId, TeamId, UserId};
use crate::principal::Principal;
use crate::time::Timestamp;

/// The layer a fact lives in, from the broadest to the most specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Facts of an account, curated by its admins.
    Account,
    /// Facts of one agent in an account, curated by admins.
    Agent,
    /// Facts shared by a team.
    Team,
    /// A user's own facts.
    User,
}

crate::step::str_enum!(Layer, "fact layer",
    Layer::Account => "account",
    Layer::Agent => "agent",
    Layer::Team => "team",
    Layer::User => "user",
);

/// Whose a fact is; fixes its layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "layer", content = "owner", rename_all = "snake_case")]
pub enum FactOwner {
    /// The account as a whole.
    Account,
    /// One agent of the account.
    Agent(AgentId),
    /// One team of the account.
    Team(TeamId),
    /// One user of the account.
    User(UserId),
}

impl FactOwner {
    /// The owner's layer.
    pub fn layer(&self) -> Layer {
        match self {
            FactOwner::Account => Layer::Account,
            FactOwner::Agent(_) => Layer::Agent,
            FactOwner::Team(_) => Layer::Team,
            FactOwner::User(_) => Layer::User,
        }
    }

    /// The owner's id as text (`""` for the account layer, whose owner is
    /// the fact's account).
    pub fn id(&self) -> String {
        match self {
            FactOwner::Account => String::new(),
            FactOwner::Agent(a) => a.to_string(),
            FactOwner::Team(t) => t.to_string(),
            FactOwner::User(u) => u.to_string(),
        }
    }

    /// A key naming layer and owner together (`user:…`), as stores index it.
    pub fn key(&self) -> String {
        format!("{}:{}", self.layer(), self.id())
    }

    /// The owner from a layer and an owner id as stored.
    pub fn parse(layer: Layer, id: &str) -> Result<Self, crate::store::StoreError> {
        let bad =
            |_| crate::store::StoreError::Corrupt(format!("bad owner `{id}` of a {layer} fact"));
        Ok(match layer {
            Layer::Account => FactOwner::Account,
            Layer::Agent => FactOwner::Agent(AgentId::new(id)),
            Layer::Team => FactOwner::Team(id.parse().map_err(bad)?),
            Layer::User => FactOwner::User(id.parse().map_err(bad)?),
        })
    }
}

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Provenance {
    /// Extracted from an interaction (by its step, when known).
    Interaction {
        /// The interaction.
        interaction_id: InteractionId,
        /// The step, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_id: Option<StepId>,
    },
    /// Imported, with the id it has elsewhere.
    External {
        /// The id in the source.
        id: String,
    },
    /// Written by a person through the API.
    Curated,
}

impl Provenance {
    /// The external id of an imported fact.
    pub fn external_id(&self) -> Option<&str> {
        match self {
            Provenance::External { id } => Some(id),
            _ => None,
        }
    }
}

/// Who changed a fact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FactActor {
    /// Background extraction, from this interaction.
    Extraction(InteractionId),
    /// A user (an admin curating, or the user about themself).
    User(UserId),
    /// A bulk import, with the source's name.
    Import(String),
    /// The runtime itself (the privacy call).
    System,
}

impl FactActor {
    /// The actor as stored text (`extraction:…`, `user:…`, `import:…`, `system`).
    pub fn as_text(&self) -> String {
        match self {
            FactActor::Extraction(i) => format!("extraction:{i}"),
            FactActor::User(u) => format!("user:{u}"),
            FactActor::Import(s) => format!("import:{s}"),
            FactActor::System => "system".into(),
        }
    }

    /// Reads stored actor text back.
    pub fn parse(text: &str) -> Result<Self, crate::store::StoreError> {
        let bad = || crate::store::StoreError::Corrupt(format!("bad fact actor `{text}`"));
        Ok(match text.split_once(':') {
            Some(("extraction", id)) => FactActor::Extraction(id.parse().map_err(|_| bad())?),
            Some(("user", id)) => FactActor::User(id.parse().map_err(|_| bad())?),
            Some(("import", source)) => FactActor::Import(source.to_owned()),
            None if text == "system" => FactActor::System,
            _ => return Err(bad()),
        })
    }
}

/// A fact as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Its id.
    pub id: FactId,
    /// The account it belongs to.
    pub account: AccountId,
    /// Whose it is (and so its layer).
    #[serde(flatten)]
    pub owner: FactOwner,
    /// What it is about (may be empty for a free-text fact).
    pub subject: String,
    /// The relation (may be empty for a free-text fact).
    pub predicate: String,
    /// The value, or the whole text of a free-text fact.
    pub value: String,
    /// How sure its source was, 0 to 1.
    pub confidence: f32,
    /// Where it came from.
    pub provenance: Provenance,
    /// A curated fact that acts as policy: it wins every conflict.
    pub locked: bool,
    /// Whether its slot holds one value or many, as decided when it was
    /// recorded.
    #[serde(default)]
    pub cardinality: Cardinality,
    /// Since when it is true in the world.
    pub valid_at: Timestamp,
    /// Since when it is no longer true, if so.
    pub invalid_at: Option<Timestamp>,
    /// When the store learned it.
    pub created_at: Timestamp,
    /// When the store stopped believing it, if so.
    pub expired_at: Option<Timestamp>,
    /// The fact that replaced it, if one did.
    pub superseded_by: Option<FactId>,
}

impl Fact {
    /// Whether the store still holds it true.
    pub fn is_current(&self) -> bool {
        self.invalid_at.is_none() && self.expired_at.is_none()
    }

    /// Its layer.
    pub fn layer(&self) -> Layer {
        self.owner.layer()
    }

    /// The fact as one line of text: `subject predicate value`, or the value
    /// of a free-text fact. This is what is embedded and keyword-indexed.
    pub fn text(&self) -> String {
        fact_text(&self.subject, &self.predicate, &self.value)
    }

    /// The key of the slot it fills (`subject|predicate`, normalised), or
    /// `None` for a free-text fact: two current facts with the same key in
    /// visible layers conflict.
    pub fn slot(&self) -> Option<String> {
        slot(&self.subject, &self.predicate)
    }

    /// What it competes with in search: its slot when the slot holds one
    /// value, its slot and value when it holds many (the same value in two
    /// layers), `None` for free text. Of the visible current facts with one
    /// key, [`precedence`] keeps one.
    pub fn conflict_key(&self) -> Option<String> {
        let slot = self.slot()?;
        Some(match self.cardinality {
            Cardinality::Single => slot,
            Cardinality::Many => format!("{slot}|{}", normalise(&self.value)),
        })
    }
}

/// The text of a triple (see [`Fact::text`]).
pub fn fact_text(subject: &str, predicate: &str, value: &str) -> String {
    [subject.trim(), predicate.trim(), value.trim()]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The normalised slot key of a subject and predicate (see [`Fact::slot`]):
/// the subject in lower case with single spaces, the predicate as
/// [`predicate_key`] writes it (`Lives_In` and `lives in` are one slot).
pub fn slot(subject: &str, predicate: &str) -> Option<String> {
    let (s, p) = (normalise(subject), predicate_key(predicate));
    (!s.is_empty() || !p.is_empty()).then(|| format!("{s}|{p}"))
}

/// Text normalised for duplicate checks: lower case, single spaces.
pub fn normalise(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fact to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFact {
    /// The account it belongs to.
    pub account: AccountId,
    /// Whose it is.
    pub owner: FactOwner,
    /// What it is about (may be empty).
    pub subject: String,
    /// The relation (may be empty).
    pub predicate: String,
    /// The value, or the text of a free-text fact.
    pub value: String,
    /// How sure the source is, 0 to 1.
    pub confidence: f32,
    /// Where it came from.
    pub provenance: Provenance,
    /// A curated fact that acts as policy.
    pub locked: bool,
    /// Since when it is true (default: when it is recorded).
    pub valid_at: Option<Timestamp>,
    /// Whether its slot holds one value or many; `None`: the built-in rule
    /// for its predicate ([`Cardinality::resolve`]). The runtime fills it
    /// in from the account's declarations before recording.
    pub cardinality: Option<Cardinality>,
    /// The current fact of the same owner this one replaces (an update that
    /// contradicts it): that fact is superseded, whatever its slot.
    pub replaces: Option<FactId>,
    /// Its embedding (of [`fact_text`]); its length must match the store's
    /// other facts for vector search to compare them.
    pub embedding: Vec<f32>,
    /// Who records it.
    pub actor: FactActor,
}

impl NewFact {
    /// A triple owned by `owner`, with confidence 1, curated, no embedding yet.
    pub fn new(
        account: AccountId,
        owner: FactOwner,
        subject: impl Into<String>,
        predicate: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self {
            account,
            owner,
            subject: subject.into(),
            predicate: predicate.into(),
            value: value.into(),
            confidence: 1.0,
            provenance: Provenance::Curated,
            locked: false,
            valid_at: None,
            cardinality: None,
            replaces: None,
            embedding: Vec::new(),
            actor: FactActor::System,
        }
    }

    /// The text to embed (see [`Fact::text`]).
    pub fn text(&self) -> String {
        fact_text(&self.subject, &self.predicate, &self.value)
    }

    /// Its slot key (see [`Fact::slot`]).
    pub fn slot(&self) -> Option<String> {
        slot(&self.subject, &self.predicate)
    }
}

/// What recording a fact did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FactWrite {
    /// A new fact was added.
    Added(Fact),
    /// A new fact was added and replaced these current facts of the same
    /// owner and slot (now invalid and expired).
    Superseded {
        /// The new fact.
        fact: Fact,
        /// The facts it replaced, as they are now.
        replaced: Vec<Fact>,
    },
    /// The owner already holds this fact as current; nothing was written.
    Duplicate(Fact),
    /// The owner holds a newer value for the slot; the fact was recorded as
    /// history (already invalid), not as current.
    Historical(Fact),
}

impl FactWrite {
    /// The fact written, or the existing duplicate.
    pub fn fact(&self) -> &Fact {
        match self {
            FactWrite::Added(f)
            | FactWrite::Duplicate(f)
            | FactWrite::Historical(f)
            | FactWrite::Superseded { fact: f, .. } => f,
        }
    }

    /// `added`, `superseded`, `duplicate` or `historical`.
    pub fn kind(&self) -> &'static str {
        match self {
            FactWrite::Added(_) => "added",
            FactWrite::Superseded { .. } => "superseded",
            FactWrite::Duplicate(_) => "duplicate",
            FactWrite::Historical(_) => "historical",
        }
    }
}

/// A change made by curation.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Curation {
    /// Locks or unlocks the fact.
    pub locked: Option<bool>,
    /// Sets its confidence.
    pub confidence: Option<f32>,
    /// Retracts it: it stops being true at this time (and current now).
    pub retract_at: Option<Timestamp>,
}

impl Curation {
    /// Locks (or unlocks) a fact.
    pub fn lock(locked: bool) -> Self {
        Self {
            locked: Some(locked),
            ..Self::default()
        }
    }

    /// Retracts a fact as of `at`.
    pub fn retract(at: Timestamp) -> Self {
        Self {
            retract_at: Some(at),
            ..Self::default()
        }
    }
}

/// What happened to a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactChangeKind {
    /// Recorded.
    Add,
    /// Replaced by a newer fact.
    Supersede,
    /// Locked, unlocked, re-weighted or retracted by a person.
    Curate,
    /// Deleted by the privacy call.
    Delete,
    /// Made current again by a schema migration (a many-valued fact an
    /// older store had superseded).
    Restore,
}

crate::step::str_enum!(FactChangeKind, "fact change",
    FactChangeKind::Add => "add",
    FactChangeKind::Supersede => "supersede",
    FactChangeKind::Curate => "curate",
    FactChangeKind::Delete => "delete",
    FactChangeKind::Restore => "restore",
);

/// One entry of a fact's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactChange {
    /// The fact.
    pub fact_id: FactId,
    /// What happened.
    pub kind: FactChangeKind,
    /// Who did it.
    pub actor: FactActor,
    /// When.
    pub at: Timestamp,
    /// Details (the superseding fact, the fields curated); never the fact's content.
    pub detail: serde_json::Value,
}

/// What one principal, served by one agent, may see.
///
/// Build it with [`Visibility::of`]; every store query over facts takes one
/// and applies it inside the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Visibility {
    /// The account; no fact of another account is ever visible.
    pub account: AccountId,
    /// Whether the account layer is visible.
    pub account_layer: bool,
    /// The agent whose agent layer is visible.
    pub agent: Option<AgentId>,
    /// The teams whose team layer is visible.
    pub teams: Vec<TeamId>,
    /// The user whose user layer is visible.
    pub user: Option<UserId>,
}

impl Visibility {
    /// What `principal`, served by `agent`, sees: the account layer, the
    /// agent's layer, the layer of the team it acts for, its own user layer.
    pub fn of(principal: &Principal, agent: &AgentId) -> Self {
        Self {
            account: principal.account,
            account_layer: true,
            agent: Some(agent.clone()),
            teams: principal.team.into_iter().collect(),
            user: Some(principal.user),
        }
    }

    /// Only the user layer of `user`: what an export of their facts holds.
    pub fn user_only(account: AccountId, user: UserId) -> Self {
        Self::only(account, &FactOwner::User(user))
    }

    /// Only the layer of one owner in `account`.
    pub fn only(account: AccountId, owner: &FactOwner) -> Self {
        let mut v = Self {
            account,
            account_layer: false,
            agent: None,
            teams: Vec::new(),
            user: None,
        };
        match owner {
            FactOwner::Account => v.account_layer = true,
            FactOwner::Agent(a) => v.agent = Some(a.clone()),
            FactOwner::Team(t) => v.teams.push(*t),
            FactOwner::User(u) => v.user = Some(*u),
        }
        v
    }

    /// Adds teams whose layer is visible.
    pub fn with_teams(mut self, teams: impl IntoIterator<Item = TeamId>) -> Self {
        for t in teams {
            if !self.teams.contains(&t) {
                self.teams.push(t);
            }
        }
        self
    }

    /// The owner keys ([`FactOwner::key`]) visible, for stores to filter on.
    pub fn owner_keys(&self) -> Vec<String> {
        self.owners().iter().map(FactOwner::key).collect()
    }

    /// The owners whose layers are visible (all in [`account`](Self::account)).
    pub fn owners(&self) -> Vec<FactOwner> {
        let mut owners = Vec::with_capacity(3 + self.teams.len());
        if self.account_layer {
            owners.push(FactOwner::Account);
        }
        if let Some(a) = &self.agent {
            owners.push(FactOwner::Agent(a.clone()));
        }
        owners.extend(self.teams.iter().map(|t| FactOwner::Team(*t)));
        if let Some(u) = self.user {
            owners.push(FactOwner::User(u));
        }
        owners
    }

    /// Whether a fact is visible: the rule every store query must apply.
    pub fn sees(&self, fact: &Fact) -> bool {
        fact.account == self.account
            && match &fact.owner {
                FactOwner::Account => self.account_layer,
                FactOwner::Agent(a) => self.agent.as_ref() == Some(a),
                FactOwner::Team(t) => self.teams.contains(t),
                FactOwner::User(u) => self.user == Some(*u),
            }
    }
}

/// A search over the facts a principal may see.
#[derive(Debug, Clone, PartialEq)]
pub struct FactQuery {
    /// What may be seen.
    pub visibility: Visibility,
    /// The question, for keyword search.
    pub text: String,
    /// Its embedding, for vector search (none: keyword search only).
    pub embedding: Option<Vec<f32>>,
    /// How many hits to return.
    pub k: usize,
    /// How many candidates each list brings (at least `k`).
    pub candidates: usize,
    /// Includes superseded and retracted facts.
    pub include_history: bool,
    /// MMR's balance of relevance (1.0) against diversity (0.0).
    pub mmr_lambda: f32,
    /// The period the question names ("in March", "last week"), if any:
    /// facts valid from within it are brought as a third list
    /// ([`Candidates::during`]) and fused with the others. [`FactQuery::asked_at`]
    /// fills it from the question's text.
    pub during: Option<Period>,
    /// How the lists are fused and neighbours lift each other.
    pub fusion: Fusion,
    /// Compares the query with every visible vector instead of searching
    /// the store's approximate index: slower over a large layer, but it
    /// finds the true nearest (the approximate index is used only when a
    /// principal sees more than [`APPROXIMATE_ABOVE`] facts).
    pub exact: bool,
}

impl FactQuery {
    /// A search for `text` with `embedding`, returning `k` hits.
    pub fn new(
        visibility: Visibility,
        text: impl Into<String>,
        embedding: Option<Vec<f32>>,
        k: usize,
    ) -> Self {
        Self {
            visibility,
            text: text.into(),
            embedding,
            k,
            candidates: (k * 4).clamp(20, 100),
            include_history: false,
            mmr_lambda: 1.0,
            during: None,
            fusion: Fusion::default(),
            exact: false,
        }
    }

    /// Reads the period the question names, relative to `now`, when it
    /// was asked ([`Period::parse`]); a question that names none searches
    /// all time as before.
    pub fn asked_at(mut self, now: crate::time::Timestamp) -> Self {
        self.during = Period::parse(&self.text, now);
        self
    }
}

/// One embedding size's approximate vector index, as
/// [`KnowledgeStore::index_vectors`] built it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VectorIndex {
    /// The embedding size it covers.
    pub dims: usize,
    /// The vectors of that size it holds.
    pub vectors: u64,
    /// Its lists (SQLite's inverted lists); `None` for a graph index
    /// (PostgreSQL's HNSW).
    pub lists: Option<usize>,
    /// Its size on disk in bytes (SQLite: the centroids and the index of
    /// each vector's list; PostgreSQL: the HNSW index).
    pub bytes: u64,
    /// How long building it took.
    pub took: std::time::Duration,
}

impl VectorIndex {
    /// A report of an index.
    pub fn new(
        dims: usize,
        vectors: u64,
        lists: Option<usize>,
        bytes: u64,
        took: std::time::Duration,
    ) -> Self {
        Self {
            dims,
            vectors,
            lists,
            bytes,
            took,
        }
    }
}

/// A fact a store found, with what ranking needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The fact.
    pub fact: Fact,
    /// Its embedding (empty if it has none).
    pub embedding: Vec<f32>,
    /// Cosine similarity to the question, when found by vector search.
    pub similarity: Option<f32>,
}

/// What a store's search found, before ranking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// Nearest by embedding, nearest first (exact, or approximate when
    /// [`Candidates::approximate`] says so).
    pub vector: Vec<Candidate>,
    /// Whether [`Candidates::vector`] came from the store's approximate
    /// vector index rather than from comparing every visible vector.
    pub approximate: bool,
    /// Best by keyword (BM25), best first.
    pub keyword: Vec<Candidate>,
    /// With [`FactQuery::during`]: facts valid from within the period,
    /// nearest by embedding first (newest first without one).
    pub during: Vec<Candidate>,
    /// Every visible current fact filling the same slot as a candidate, so
    /// that precedence can pick the winner even if it ranked lower.
    pub rivals: Vec<Candidate>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactHit {
    /// The fact.
    pub fact: Fact,
    /// Its fused score (reciprocal rank fusion; higher is better).
    pub score: f32,
    /// Its rank in the vector list (0 = first), if there.
    pub vector_rank: Option<usize>,
    /// Its rank in the keyword list, if there.
    pub keyword_rank: Option<usize>,
}

/// Facts, their history and their search.
#[async_trait::async_trait]
pub trait KnowledgeStore: Send + Sync {
    /// Records a fact, reconciling it with the owner's current facts in one
    /// transaction: reads what [`NewFact::lookup`] asks for (and the fact
    /// named by [`NewFact::replaces`], if current and of the same owner),
    /// applies [`NewFact::reconcile`], and writes what it decides:
    /// - a duplicate (the same normalised value in the slot; for a
    ///   many-valued slot or free text also a [`NEAR_DUPLICATE`] embedding)
    ///   is a [`FactWrite::Duplicate`] and nothing is written;
    /// - the facts it supersedes (the other values of a single-valued slot
    ///   when the new fact is at least as recent, and the named fact) get
    ///   `invalid_at` = its `valid_at`, `expired_at` = now, `superseded_by`,
    ///   and a `supersede` history entry;
    /// - an older value of a single-valued slot with a newer current value
    ///   is recorded as [`FactWrite::Historical`] (invalid from the newer
    ///   one's `valid_at`);
    /// - otherwise it is [`FactWrite::Added`], beside the slot's other
    ///   values when the slot takes many. Each write adds an `add` entry and
    ///   stores the fact's resolved [`Cardinality`].
    async fn record_fact(&self, new: NewFact, now: Timestamp) -> crate::StoreResult<FactWrite>;

    /// Records many facts in one transaction, each as [`record_fact`](Self::record_fact) would.
    async fn import_facts(
        &self,
        facts: Vec<NewFact>,
        now: Timestamp,
    ) -> crate::StoreResult<Vec<FactWrite>>;

    /// The fact `id`.
    async fn fact(&self, id: FactId) -> crate::StoreResult<Fact>;

    /// Applies a curation, appending a `curate` entry.
    async fn curate_fact(
        &self,
        id: FactId,
        curation: Curation,
        actor: FactActor,
        now: Timestamp,
    ) -> crate::StoreResult<Fact>;

    /// The visible facts, current ones only unless `include_history`, oldest first.
    async fn facts(
        &self,
        visibility: &Visibility,
        include_history: bool,
    ) -> crate::StoreResult<Vec<Fact>>;

    /// The history of a fact, oldest first.
    async fn fact_history(&self, id: FactId) -> crate::StoreResult<Vec<FactChange>>;

    /// Candidates for `query`: the vector and keyword lists (each at most
    /// `query.candidates` long) and the rivals of their slots, all filtered
    /// to `query.visibility` inside the store's queries.
    async fn fact_candidates(&self, query: &FactQuery) -> crate::StoreResult<Candidates>;

    /// Builds the approximate vector index afresh over the vectors stored
    /// now and reports it, one entry per embedding size it covers. SQLite
    /// trains its lists ([`IvfLists`]) for every size with at least
    /// [`LISTS_FROM`] vectors (it also builds them by itself the first time
    /// a search could use them, and files new vectors under them as they
    /// come); PostgreSQL rebuilds its HNSW indexes (`REINDEX`), which it
    /// otherwise keeps current as rows come. Searches stay correct while
    /// it runs.
    async fn index_vectors(&self) -> crate::StoreResult<Vec<VectorIndex>>;

    /// Searches the visible facts: [`fact_candidates`](Self::fact_candidates), then [`rank`].
    async fn search_facts(&self, query: &FactQuery) -> crate::StoreResult<Vec<FactHit>> {
        let candidates = self.fact_candidates(query).await?;
        Ok(rank(query, candidates))
    }

    /// Deletes every fact of `owner` in `account` with its embedding and
    /// keyword index entries, leaving a content-free `delete` entry in each
    /// one's history; returns how many.
    async fn delete_facts(
        &self,
        account: AccountId,
        owner: &FactOwner,
        now: Timestamp,
    ) -> crate::StoreResult<u64>;
}
