//! Knowledge in the runtime: recall in the `context` step, extraction after
//! each interaction (a durable queue task), and the API over facts.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Need;
use super::{Inner, Runtime, RuntimeError, TaskError, TaskHandler};
use crate::bounded::InsertBounded;
use crate::ids::{AccountId, AgentId, FactId, InteractionId, UserId};
use crate::interaction::Interaction;
use crate::knowledge::{
    Cardinality, Curation, Fact, FactActor, FactHit, FactOwner, FactQuery, FactWrite, NewFact,
    Provenance, Visibility, estimate_tokens, fit_to_budget,
};
use crate::model::{ChatMessage, ChatRequest, OutputSchema};
use crate::principal::{Actor, Principal};
use crate::queue::{NewTask, Task};
use crate::step::StepKind;
use crate::step::payload::{ContextOutput, RecalledFact};
use crate::store::StoreError;
use crate::usage::UsageRecord;

/// The queue kind of knowledge extraction tasks.
pub const EXTRACT_TASK: &str = "knowledge.extract";

/// How the runtime uses knowledge.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KnowledgeConfig {
    /// Recalls facts into every `context` step.
    pub recall: bool,
    /// How many facts a recall searches for.
    pub recall_k: usize,
    /// The most tokens recalled facts may take in the context (counted with
    /// [`estimate_tokens`]).
    pub context_tokens: usize,
    /// The model id that extracts facts after each interaction; `None`
    /// turns extraction off.
    pub extraction_model: Option<String>,
    /// Attempts an extraction task gets before it is dead-lettered.
    pub extraction_attempts: u32,
    /// How many of the principal's current facts extraction is shown, so
    /// it can tell what is new from what is known or contradicted.
    pub extraction_known: usize,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            recall: true,
            recall_k: 8,
            context_tokens: 400,
            extraction_model: None,
            extraction_attempts: 5,
            extraction_known: 20,
        }
    }
}

impl KnowledgeConfig {
    /// Extracts facts after each interaction with `model`.
    pub fn extract_with(mut self, model: impl Into<String>) -> Self {
        self.extraction_model = Some(model.into());
        self
    }
}

/// The schema extraction answers must match. Every property is required
/// (as strict structured output wants); `replaces` is `null` for an `add`.
pub fn extraction_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["facts"],
        "properties": {
            "facts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [
                        "subject", "predicate", "value", "confidence", "scope",
                        "action", "replaces", "cardinality"
                    ],
                    "properties": {
                        "subject": { "type": "string" },
                        "predicate": { "type": "string" },
                        "value": { "type": "string" },
                        "confidence": { "type": "number", "minimum": 0, "maximum": 1 },
                        "scope": { "type": "string", "enum": ["user", "team"] },
                        "action": { "type": "string", "enum": ["add", "update"] },
                        "replaces": { "type": ["integer", "null"], "minimum": 1 },
                        "cardinality": { "type": "string", "enum": ["single", "many"] }
                    }
                }
            }
        }
    })
}

/// The instructions of extraction.
pub const EXTRACTION_PROMPT: &str = "You maintain the long-term memory of an assistant. From the \
exchange below, extract durable facts the user stated about themself or their team (names, places, \
preferences, relationships, plans, identifiers) as subject-predicate-value triples. Use the user's \
own name as subject when known, else \"user\". Mark a fact \"team\" only if it concerns the user's \
team as a whole; otherwise \"user\". Leave out small talk, questions, and anything the assistant \
said that the user did not confirm. You are shown what is already known, numbered. For each fact: \
leave it out if it is already known; \"action\": \"add\" if it is new (with \"replaces\": null), \
\"update\" if it contradicts or corrects a known fact (with \"replaces\": that fact's number) — a \
new value of something that holds many values (likes, visited, owns) is an add, not an update. \
\"cardinality\": \"single\" if the predicate holds one value at a time (lives in, works at, is \
called), else \"many\". Answer with JSON only: {\"facts\": [...]}; an empty list if there is \
nothing new to keep.";

/// One triple of an extraction answer.
#[derive(Debug, Clone, Deserialize)]
struct Extracted {
    subject: String,
    predicate: String,
    value: String,
    confidence: f32,
    scope: String,
    /// `add` or `update` (an answer without it adds).
    #[serde(default)]
    action: Option<String>,
    /// The number of the known fact an update replaces.
    #[serde(default)]
    replaces: Option<usize>,
    #[serde(default)]
    cardinality: Option<Cardinality>,
}

#[derive(Debug, Deserialize)]
struct ExtractionAnswer {
    facts: Vec<Extracted>,
}

/// The exchange extraction reads, after the facts already known (numbered
/// from 1, as `replaces` names them) with the day each was said.
fn extraction_input(known: &[Fact], input: &str, reply: &str) -> String {
    let mut text = String::from("Known facts:");
    if known.is_empty() {
        text.push_str(" none");
    }
    for (i, f) in known.iter().enumerate() {
        text.push_str(&format!(
            "\n[{}] {} (since {})",
            i + 1,
            f.text(),
            f.valid_at.date()
        ));
    }
    text.push_str(&format!("\n\nUser: {input}\nAssistant: {reply}"));
    text
}

impl Inner {
    /// Embeds texts with the runtime's embedder, in batches.
    pub(crate) async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_BATCH) {
            out.extend(self.embedder.embed(chunk).await?);
        }
        Ok(out)
    }

    /// Searches what `visibility` sees for `text`.
    pub(crate) async fn search(
        &self,
        visibility: Visibility,
        text: &str,
        k: usize,
    ) -> Result<Vec<FactHit>, RuntimeError> {
        let embedding = self.embed(&[text.to_owned()]).await?.pop();
        let query = FactQuery::new(visibility, text, embedding, k).asked_at(self.clock.now());
        Ok(self.store.search_facts(&query).await?)
    }

    /// Searches what `visibility` sees for an interaction's message, whose
    /// embedding is computed once per interaction in this process (recall
    /// and extraction both ask).
    async fn search_message(
        &self,
        visibility: Visibility,
        interaction: &Interaction,
        k: usize,
    ) -> Result<Vec<FactHit>, RuntimeError> {
        let cached = self
            .query_embeddings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&interaction.id)
            .cloned();
        let embedding = match cached {
            Some(e) => e,
            None => {
                let e = Arc::new(
                    self.embed(std::slice::from_ref(&interaction.input))
                        .await?
                        .pop()
                        .unwrap_or_default(),
                );
                self.query_embeddings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert_bounded((interaction.id, Arc::clone(&e)), QUERY_EMBEDDINGS);
                e
            }
        };
        let embedding = (!embedding.is_empty()).then(|| embedding.to_vec());
        // "What did I say last week?" counts from when it was asked, also
        // when a resumed run asks again later.
        let query = FactQuery::new(visibility, interaction.input.as_str(), embedding, k)
            .asked_at(interaction.created_at);
        Ok(self.store.search_facts(&query).await?)
    }

    /// The facts recalled for an interaction's `context` step, as recorded
    /// on the step: which facts, their text, the tokens they take. A failed
    /// recall is recorded too and does not fail the step.
    pub(crate) async fn recall(&self, interaction: &Interaction) -> ContextOutput {
        let config = &self.config.knowledge;
        if !config.recall {
            return ContextOutput::default();
        }
        let visibility = Visibility::of(&interaction.principal, &interaction.agent_id);
        match self
            .search_message(visibility, interaction, config.recall_k)
            .await
        {
            Ok(hits) => {
                let fitted = fit_to_budget(&hits, config.context_tokens);
                ContextOutput {
                    fact_tokens: fitted.iter().map(|h| estimate_tokens(&h.fact.text())).sum(),
                    facts: fitted
                        .iter()
                        .map(|h| RecalledFact {
                            id: h.fact.id,
                            layer: h.fact.layer(),
                            text: h.fact.text(),
                            valid_at: Some(h.fact.valid_at),
                            score: h.score,
                        })
                        .collect(),
                    facts_found: Some(hits.len()),
                    ..ContextOutput::default()
                }
            }
            Err(e) => {
                tracing::warn!(interaction_id = %interaction.id, error = %e, "knowledge recall failed");
                ContextOutput {
                    recall_error: Some(e.code()),
                    ..ContextOutput::default()
                }
            }
        }
    }

    /// The extraction task of a finished interaction, if extraction is on.
    pub(crate) fn extraction_tasks(&self, interaction: &Interaction) -> Vec<NewTask> {
        if self.config.knowledge.extraction_model.is_none() {
            return Vec::new();
        }
        let mut task = NewTask::new(
            EXTRACT_TASK,
            json!({ "interaction_id": interaction.id }),
            self.clock.now(),
        )
        .owned_by(interaction.principal.account, interaction.principal.user);
        task.max_attempts = self.config.knowledge.extraction_attempts.max(1);
        vec![task]
    }

    async fn extract(&self, interaction_id: InteractionId) -> Result<(), TaskError> {
        let Some(model) = self.config.knowledge.extraction_model.clone() else {
            return Ok(());
        };
        let interaction = match self.store.interaction(interaction_id).await {
            Ok(i) => i,
            // Forgotten since (the privacy call): nothing to learn.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(TaskError::retryable(e.to_string())),
        };
        let reply = self
            .store
            .reply_of(interaction_id)
            .await
            .map_err(|e| TaskError::retryable(e.to_string()))?;
        let steps = self
            .store
            .steps(interaction_id)
            .await
            .map_err(|e| TaskError::retryable(e.to_string()))?;
        let respond_step = steps
            .iter()
            .find(|s| s.kind == StepKind::Respond)
            .map(|s| s.id);
        let principal = interaction.principal;
        let known = self
            .known_facts(&interaction)
            .await
            .map_err(|e| TaskError::retryable(e.to_string()))?;
        let exchange = extraction_input(
            &known,
            &interaction.input,
            reply.as_ref().map(|r| r.text.as_str()).unwrap_or(""),
        );
        let mut request = ChatRequest::new(
            model,
            vec![
                ChatMessage::system(EXTRACTION_PROMPT),
                ChatMessage::user(exchange),
            ],
        );
        request.output_schema = Some(OutputSchema {
            name: "record_facts".into(),
            schema: extraction_schema(),
        });
        // Extraction is a model call like any other: the principal's
        // budgets are checked before it and its usage counts against them.
        // A spent budget dead-letters the task (requeue it once the period
        // resets or the limit is raised).
        if let Err(refusal) = self
            .check_budgets(&interaction.principal, &interaction)
            .await
        {
            return Err(TaskError::permanent(format!(
                "no extraction: {} ({})",
                refusal.message, refusal.code
            )));
        }
        let response = self.model.chat(&request).await.map_err(|e| TaskError {
            retryable: e.is_retryable() || matches!(e, crate::ModelError::MalformedResponse(_)),
            message: e.to_string(),
        })?;
        if let Some(step_id) = respond_step {
            let cost = self
                .cost_of(
                    &response.model,
                    &request.model,
                    response.usage,
                    &interaction,
                )
                .await;
            let record = UsageRecord {
                step_id,
                interaction_id,
                account: interaction.principal.account,
                team: interaction.principal.team,
                user: interaction.principal.user,
                agent_id: interaction.agent_id.clone(),
                model: response.model.clone(),
                tokens: response.usage,
                cost,
                at: self.clock.now(),
            };
            self.store
                .record_usage(record)
                .await
                .map_err(|e| TaskError::retryable(e.to_string()))?;
        }
        let answer: ExtractionAnswer = serde_json::from_str(response.message.content.trim())
            .map_err(|e| {
                TaskError::retryable(format!("extraction answer is not the schema's JSON: {e}"))
            })?;
        let declared = self
            .declared_cardinality(principal.account)
            .await
            .map_err(|e| TaskError::retryable(e.to_string()))?;
        let mut news = Vec::new();
        for f in answer.facts {
            if f.value.trim().is_empty() {
                continue;
            }
            // Account facts are curated, never extracted; team facts need a team.
            let owner = match (f.scope.as_str(), principal.team) {
                ("team", Some(team)) => FactOwner::Team(team),
                _ => FactOwner::User(principal.user),
            };
            // An update replaces the known fact it names, if that fact is
            // the same owner's; any other answer adds.
            let replaces = match (f.action.as_deref(), f.replaces) {
                (Some("update"), Some(n)) => known
                    .get(n.wrapping_sub(1))
                    .filter(|k| k.owner == owner)
                    .map(|k| k.id),
                _ => None,
            };
            let cardinality = Cardinality::resolve(&f.predicate, &declared, f.cardinality);
            let mut new = NewFact::new(principal.account, owner, f.subject, f.predicate, f.value);
            new.confidence = f.confidence.clamp(0.0, 1.0);
            new.provenance = Provenance::Interaction {
                interaction_id,
                step_id: respond_step,
            };
            new.actor = FactActor::Extraction(interaction_id);
            // True since the user said it, not since extraction ran.
            new.valid_at = Some(interaction.created_at);
            new.cardinality = Some(cardinality);
            new.replaces = replaces;
            news.push(new);
        }
        if news.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = news.iter().map(NewFact::text).collect();
        let vectors = self
            .embed(&texts)
            .await
            .map_err(|e| TaskError::retryable(e.to_string()))?;
        let now = self.clock.now();
        for (mut new, vector) in news.into_iter().zip(vectors) {
            new.embedding = vector;
            let write = match self.store.record_fact(new.clone(), now).await {
                // The fact it replaced changed since it was shown: add it.
                Err(StoreError::NotFound { .. }) if new.replaces.is_some() => {
                    new.replaces = None;
                    self.store.record_fact(new, now).await
                }
                other => other,
            };
            match write {
                Ok(write) => {
                    tracing::debug!(interaction_id = %interaction_id, fact_id = %write.fact().id, write = write.kind(), "fact extracted");
                }
                // A locked fact is policy: extraction leaves it alone.
                Err(StoreError::Conflict(reason)) => {
                    tracing::debug!(interaction_id = %interaction_id, %reason, "extracted fact not recorded");
                }
                Err(e) => return Err(TaskError::retryable(e.to_string())),
            }
        }
        Ok(())
    }

    /// The current facts of the principal's own layers (user, and the team
    /// it acts for: what extraction may write) most related to the message, for
    /// extraction to tell new facts from known and contradicted ones.
    async fn known_facts(&self, interaction: &Interaction) -> Result<Vec<Fact>, RuntimeError> {
        let k = self.config.knowledge.extraction_known;
        if k == 0 {
            return Ok(Vec::new());
        }
        let principal = &interaction.principal;
        let visibility =
            Visibility::user_only(principal.account, principal.user).with_teams(principal.team);
        let mut hits = self.search_message(visibility, interaction, k).await?;
        hits.sort_by_key(|h| (h.fact.valid_at, h.fact.created_at));
        Ok(hits.into_iter().map(|h| h.fact).collect())
    }

    /// What `account` declares about its predicates' cardinality (nothing
    /// for an account the directory does not know).
    pub(crate) async fn declared_cardinality(
        &self,
        account: AccountId,
    ) -> Result<BTreeMap<String, Cardinality>, StoreError> {
        match self.store.account_policy(account).await {
            Ok(policy) => Ok(policy.cardinality),
            Err(StoreError::NotFound { .. }) => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// Gives `new` its cardinality when the writer did not: the account's
    /// declaration, else the built-in rule.
    pub(crate) async fn resolve_cardinality(&self, new: &mut NewFact) -> Result<(), StoreError> {
        if new.cardinality.is_none() {
            let declared = self.declared_cardinality(new.account).await?;
            new.cardinality = Some(Cardinality::resolve(&new.predicate, &declared, None));
        }
        Ok(())
    }
}

/// How many interactions' message embeddings a process keeps.
pub(crate) const QUERY_EMBEDDINGS: usize = 1024;

/// Embedding requests are sent this many texts at a time.
const EMBED_BATCH: usize = 64;

/// The system message that gives the model the facts a `context` step recalled.
pub(crate) fn memory_message(context: &ContextOutput) -> Option<ChatMessage> {
    if context.facts.is_empty() {
        return None;
    }
    let mut text = String::from("What you know from earlier conversations (most relevant first):");
    for f in &context.facts {
        text.push_str("\n- ");
        text.push_str(&f.text);
        // When it was said, so "when did I…" has an answer (steps recorded
        // before facts had dates show none).
        if let Some(at) = f.valid_at {
            text.push_str(&format!(" (since {})", at.date()));
        }
    }
    Some(ChatMessage::system(text))
}

/// Runs extraction tasks.
pub(crate) struct Extractor {
    pub(crate) rt: Weak<Inner>,
}

#[async_trait]
impl TaskHandler for Extractor {
    async fn run(&self, task: &Task) -> Result<(), TaskError> {
        let Some(rt) = self.rt.upgrade() else {
            return Err(TaskError::retryable("the runtime is shutting down"));
        };
        let id: InteractionId = task.payload["interaction_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TaskError::permanent("extraction task without an interaction id"))?;
        rt.extract(id).await
    }
}

/// Knowledge: the facts of the four layers, as one actor may read and
/// change them ([`Runtime::knowledge`]). Every call checks its actor
/// (`runtime/access.rs`): facts of another account are never reached;
/// account and agent facts need an admin when the directory is enforced.
#[derive(Clone, Copy)]
pub struct Knowledge<'a> {
    pub(super) rt: &'a Runtime,
}

impl std::fmt::Debug for Knowledge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge").finish_non_exhaustive()
    }
}

/// What it takes to change facts of `owner`.
fn need_for(owner: &FactOwner) -> Need {
    match owner {
        FactOwner::User(u) => Need::User(*u),
        FactOwner::Team(t) => Need::Team(*t),
        FactOwner::Account | FactOwner::Agent(_) => Need::Admin("curate account or agent facts"),
    }
}

impl Inner {
    /// Records `facts` (checked by the caller): embeds those without an
    /// embedding in batches of `batch`, records each batch in one
    /// transaction, and calls `progress` with the count done.
    pub(crate) async fn import_facts(
        &self,
        facts: Vec<NewFact>,
        batch: usize,
        mut progress: impl FnMut(usize) + Send,
    ) -> Result<Vec<FactWrite>, RuntimeError> {
        let inner = self;
        let mut writes = Vec::with_capacity(facts.len());
        let mut declared = std::collections::HashMap::new();
        // Facts without a time are valid from the start of the import, all
        // at one instant: learned together, they are not turns of a
        // conversation that lift each other in search (`Fusion`).
        let started = inner.clock.now();
        let mut facts = facts.into_iter().peekable();
        while facts.peek().is_some() {
            let mut chunk: Vec<NewFact> = facts.by_ref().take(batch.max(1)).collect();
            let missing: Vec<usize> = (0..chunk.len())
                .filter(|&i| chunk[i].embedding.is_empty())
                .collect();
            let texts: Vec<String> = missing.iter().map(|&i| chunk[i].text()).collect();
            let vectors = inner.embed(&texts).await?;
            for (i, v) in missing.into_iter().zip(vectors) {
                chunk[i].embedding = v;
            }
            for new in &mut chunk {
                new.valid_at.get_or_insert(started);
                if new.cardinality.is_none() {
                    let declared = match declared.get(&new.account) {
                        Some(d) => d,
                        None => declared
                            .entry(new.account)
                            .or_insert(inner.declared_cardinality(new.account).await?),
                    };
                    new.cardinality = Some(Cardinality::resolve(&new.predicate, declared, None));
                }
            }
            writes.extend(inner.store.import_facts(chunk, inner.clock.now()).await?);
            progress(writes.len());
        }
        Ok(writes)
    }
}

impl Knowledge<'_> {
    fn inner(&self) -> &Arc<Inner> {
        &self.rt.inner
    }

    /// Adds a fact as `by` (embedding it if it has no embedding), reconciled
    /// with the owner's facts (see [`KnowledgeStore::record_fact`](crate::KnowledgeStore::record_fact)).
    pub async fn add(
        &self,
        by: impl Into<Actor>,
        mut new: NewFact,
    ) -> Result<FactWrite, RuntimeError> {
        let by = by.into();
        let inner = self.inner();
        inner
            .authorize(&by, new.account, need_for(&new.owner))
            .await?;
        if new.embedding.is_empty() {
            new.embedding = inner.embed(&[new.text()]).await?.pop().unwrap_or_default();
        }
        if new.actor == FactActor::System {
            new.actor = actor_of(&by);
        }
        inner.resolve_cardinality(&mut new).await?;
        Ok(inner.store.record_fact(new, inner.clock.now()).await?)
    }

    /// Locks, re-weighs or retracts a fact, as `by`.
    pub async fn curate(
        &self,
        by: impl Into<Actor>,
        id: FactId,
        curation: Curation,
    ) -> Result<Fact, RuntimeError> {
        let by = by.into();
        let inner = self.inner();
        let fact = inner.store.fact(id).await?;
        inner
            .authorize(&by, fact.account, need_for(&fact.owner))
            .await?;
        Ok(inner
            .store
            .curate_fact(id, curation, actor_of(&by), inner.clock.now())
            .await?)
    }

    /// Imports facts as `by` (an operator's bulk load: every fact must be
    /// one `by` may write): embeds those without an embedding in batches of
    /// `batch`, records each batch in one transaction, and calls `progress`
    /// with the count done.
    pub async fn import(
        &self,
        by: impl Into<Actor>,
        facts: Vec<NewFact>,
        batch: usize,
        progress: impl FnMut(usize) + Send,
    ) -> Result<Vec<FactWrite>, RuntimeError> {
        let by = by.into();
        let inner = self.inner();
        let mut checked = std::collections::HashSet::new();
        for f in &facts {
            if checked.insert((f.account, f.owner.clone())) {
                inner.authorize(&by, f.account, need_for(&f.owner)).await?;
            }
        }
        self.inner().import_facts(facts, batch, progress).await
    }

    /// Searches the facts `principal`, served by `agent`, may see.
    pub async fn search(
        &self,
        principal: &Principal,
        agent: &AgentId,
        question: &str,
        k: usize,
    ) -> Result<Vec<FactHit>, RuntimeError> {
        self.inner()
            .search(Visibility::of(principal, agent), question, k)
            .await
    }

    /// Searches what `visibility` sees, as `by` (for hosts that put
    /// principals in several teams, and for evaluation tools): `by` must be
    /// allowed every layer of it.
    pub async fn search_within(
        &self,
        by: impl Into<Actor>,
        visibility: Visibility,
        question: &str,
        k: usize,
    ) -> Result<Vec<FactHit>, RuntimeError> {
        let by = by.into();
        let inner = self.inner();
        if by.account() != visibility.account {
            return Err(crate::directory::AccessError::OtherAccount {
                account: by.account(),
            }
            .into());
        }
        for owner in visibility.owners() {
            let need = match &owner {
                // Reading the shared layers takes membership, not a role.
                FactOwner::Account | FactOwner::Agent(_) => continue,
                other => need_for(other),
            };
            inner.authorize(&by, visibility.account, need).await?;
        }
        inner.search(visibility, question, k).await
    }

    /// Builds the store's approximate vector index afresh over the vectors
    /// of every account ([`KnowledgeStore::index_vectors`](crate::knowledge::KnowledgeStore::index_vectors)):
    /// the host's call, as an operator's after a large import or many
    /// deletions. The store also builds it by itself the first time a
    /// search or a write could use it; searches stay exact until then.
    pub async fn index_vectors(&self) -> Result<Vec<crate::knowledge::VectorIndex>, RuntimeError> {
        Ok(self.inner().store.index_vectors().await?)
    }

    /// The current facts `principal`, served by `agent`, may see.
    pub async fn facts(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> Result<Vec<Fact>, RuntimeError> {
        Ok(self
            .inner()
            .store
            .facts(&Visibility::of(principal, agent), false)
            .await?)
    }

    /// A user's own facts as JSON (current and past, with provenance): what
    /// a person is given when they ask for their data.
    pub async fn export_user(
        &self,
        by: impl Into<Actor>,
        account: AccountId,
        user: UserId,
    ) -> Result<Value, RuntimeError> {
        let inner = self.inner();
        inner
            .authorize(&by.into(), account, Need::User(user))
            .await?;
        let facts = inner
            .store
            .facts(&Visibility::user_only(account, user), true)
            .await?;
        Ok(json!({
            "account": account,
            "user": user,
            "exported_at": inner.clock.now(),
            "facts": facts,
        }))
    }

    /// Deletes a user's own facts (forgetting the user,
    /// [`Directory::forget_user`](super::Directory::forget_user), does this
    /// along with everything else the user owns).
    pub async fn delete_user(
        &self,
        by: impl Into<Actor>,
        account: AccountId,
        user: UserId,
    ) -> Result<u64, RuntimeError> {
        let inner = self.inner();
        inner
            .authorize(&by.into(), account, Need::User(user))
            .await?;
        Ok(inner
            .store
            .delete_facts(account, &FactOwner::User(user), inner.clock.now())
            .await?)
    }
}

/// The actor as a fact's history records it.
fn actor_of(by: &Actor) -> FactActor {
    match by {
        Actor::User(p) => FactActor::User(p.user),
        Actor::Account(_) => FactActor::System,
    }
}

/// Registers the extraction handler when extraction is on.
pub(crate) fn register(inner: &Arc<Inner>) {
    if inner.config.knowledge.extraction_model.is_some() {
        inner
            .task_handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                EXTRACT_TASK.to_owned(),
                Arc::new(Extractor {
                    rt: Arc::downgrade(inner),
                }),
            );
    }
}
