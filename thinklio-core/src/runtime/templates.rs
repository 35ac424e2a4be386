//! Where stored agents come from ([`crate::catalog::AgentOrigin`]):
//! templates of an account, instantiated with overrides and kept in step
//! with them while nobody edits the instance ([`Templates`]), and clones
//! of an agent ([`Directory::clone_agent`]).

use super::access::Need;
use super::governance::AgentWrite;
use super::{Directory, Runtime, RuntimeError};
use crate::catalog::{
    AgentOrigin, AgentOverrides, AgentState, AgentTemplate, CloneOptions, Cloned, NewTemplate,
    StoredAgent, SyncReport, TemplateSpec,
};
use crate::directory::{AccessError, Assignment};
use crate::ids::{AccountId, AgentId, TemplateId};
use crate::knowledge::{FactOwner, NewFact, Visibility};
use crate::principal::{Actor, Scope};
use crate::session::{NewSession, NewSummary};
use crate::store::StoreError;

/// The most sessions of its parent a clone carries over.
const MAX_CARRIED_SESSIONS: u32 = 10_000;

/// How many facts are embedded and recorded together when seeding.
const SEED_BATCH: usize = 64;

/// Agent templates of accounts ([`Runtime::templates`]): what agents made
/// from them start as, and keeping those agents in step.
#[derive(Clone, Copy)]
pub struct Templates<'a> {
    pub(super) rt: &'a Runtime,
}

impl std::fmt::Debug for Templates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// An agent to make from a template.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Instantiation {
    /// The new agent's id.
    pub agent: AgentId,
    /// Where to make it available (an assignment at the account, a team or
    /// a user of the template's account); `None`: nowhere yet.
    pub scope: Option<Scope>,
    /// What it changes of the template.
    pub overrides: AgentOverrides,
}

impl Instantiation {
    /// Agent `agent`, as the template has it, assigned nowhere.
    pub fn new(agent: impl Into<AgentId>) -> Self {
        Self {
            agent: agent.into(),
            scope: None,
            overrides: AgentOverrides::default(),
        }
    }

    /// Made available at `scope`.
    pub fn at(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// With `overrides`.
    pub fn with(mut self, overrides: AgentOverrides) -> Self {
        self.overrides = overrides;
        self
    }
}

impl Templates<'_> {
    /// Creates or changes template `id` of `by`'s account, as an editor;
    /// then brings the agents made from it up to the new version (those
    /// nobody edited; see [`sync`](Self::sync)). The template's definition
    /// must stay within the account's policy.
    pub async fn put(
        &self,
        by: impl Into<Actor>,
        id: impl Into<TemplateId>,
        spec: TemplateSpec,
    ) -> Result<(AgentTemplate, SyncReport), RuntimeError> {
        self.write(by.into(), id.into(), spec, None).await
    }

    /// [`put`](Self::put), only if the template's current version is
    /// `version` (0: it must be new): `store.conflict` otherwise.
    pub async fn update(
        &self,
        by: impl Into<Actor>,
        id: impl Into<TemplateId>,
        spec: TemplateSpec,
        version: u32,
    ) -> Result<(AgentTemplate, SyncReport), RuntimeError> {
        self.write(by.into(), id.into(), spec, Some(version)).await
    }

    async fn write(
        &self,
        by: Actor,
        id: TemplateId,
        spec: TemplateSpec,
        expected: Option<u32>,
    ) -> Result<(AgentTemplate, SyncReport), RuntimeError> {
        let inner = &self.rt.inner;
        let account = by.account();
        inner
            .authorize(&by, account, Need::Editor("change templates"))
            .await?;
        spec.check(&id).map_err(RuntimeError::Config)?;
        let policy = inner.store.account_policy(account).await?;
        if let Some(reason) = policy.refuses_agent(&spec.definition) {
            return Err(AccessError::BeyondPolicy {
                agent: spec.definition.id.clone(),
                reason,
            }
            .into());
        }
        let mut new = NewTemplate::new(id.clone(), account, spec);
        new.expected_version = expected;
        let template = match inner.store.put_template(new).await {
            Ok(t) => t,
            Err(StoreError::Conflict(m)) => {
                return Err(match inner.store.template(&id).await? {
                    Some(t) if t.account != account => AccessError::ForeignTemplate {
                        template: id,
                        account,
                    }
                    .into(),
                    _ => StoreError::Conflict(m).into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let report = self.sync_template(&by, &template).await?;
        Ok((template, report))
    }

    /// Template `id` of `by`'s account, as any member of it.
    pub async fn get(
        &self,
        by: impl Into<Actor>,
        id: &TemplateId,
    ) -> Result<AgentTemplate, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, by.account(), Need::Member("read templates"))
            .await?;
        match inner.store.template(id).await? {
            Some(t) if t.account == by.account() => Ok(t),
            Some(_) => Err(AccessError::ForeignTemplate {
                template: id.clone(),
                account: by.account(),
            }
            .into()),
            None => Err(RuntimeError::UnknownTemplate(id.clone())),
        }
    }

    /// The templates of `by`'s account, by id, as any member of it.
    pub async fn list(&self, by: impl Into<Actor>) -> Result<Vec<AgentTemplate>, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, by.account(), Need::Member("read templates"))
            .await?;
        Ok(inner.store.templates(by.account()).await?)
    }

    /// Deletes template `id` of `by`'s account, as an editor. The agents
    /// made from it stay as they are, and remember it.
    pub async fn delete(&self, by: impl Into<Actor>, id: &TemplateId) -> Result<(), RuntimeError> {
        let by = by.into();
        self.rt
            .inner
            .authorize(&by, by.account(), Need::Editor("change templates"))
            .await?;
        self.get(by, id).await?;
        self.rt.inner.store.delete_template(id).await?;
        Ok(())
    }

    /// Makes an agent of `by`'s account from template `id`, as an editor:
    /// the template's definition with `how.overrides`, stored as a new
    /// agent that remembers its template, given the template's seed
    /// knowledge in its agent layer, and assigned at `how.scope` (the
    /// account, one of its teams or one of its members).
    pub async fn instantiate(
        &self,
        by: impl Into<Actor>,
        id: &TemplateId,
        how: Instantiation,
    ) -> Result<StoredAgent, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        let account = by.account();
        inner
            .authorize(&by, account, Need::Editor("change agents"))
            .await?;
        let template = self.get(by, id).await?;
        if let Some(scope) = &how.scope {
            inner.within_account(account, *scope).await?;
        }
        let definition = how
            .overrides
            .apply(&template.spec.definition, how.agent.clone());
        let write = AgentWrite {
            expected: Some(0),
            origin: Some(AgentOrigin::Template {
                template: id.clone(),
                overrides: how.overrides,
            }),
            template_version: Some(template.version),
        };
        let agent = self
            .rt
            .directory()
            .write_agent(by, definition, write)
            .await?;
        seed(self.rt, account, agent.id(), &template.spec.knowledge).await?;
        if let Some(scope) = how.scope {
            inner
                .store
                .assign(Assignment {
                    agent_id: agent.id().clone(),
                    scope,
                    capabilities: None,
                    approval_mode: None,
                })
                .await?;
        }
        Ok(agent)
    }

    /// Brings the agents made from template `id` up to its current version,
    /// as an editor, and says what it did: each agent nobody edited since
    /// it was made (or last brought up) gets the template's definition with
    /// its own overrides as a new version, and the template's seed facts it
    /// lacks; edited ones are reported and left alone. Safe to repeat (an
    /// agent already at the version is counted as updated and not written
    /// again): [`put`](Self::put) calls it, and after a crash between the
    /// two, calling it again finishes the work.
    pub async fn sync(
        &self,
        by: impl Into<Actor>,
        id: &TemplateId,
    ) -> Result<SyncReport, RuntimeError> {
        let by = by.into();
        self.rt
            .inner
            .authorize(&by, by.account(), Need::Editor("change agents"))
            .await?;
        let template = self.get(by, id).await?;
        self.sync_template(&by, &template).await
    }

    async fn sync_template(
        &self,
        by: &Actor,
        template: &AgentTemplate,
    ) -> Result<SyncReport, RuntimeError> {
        let inner = &self.rt.inner;
        let mut report = SyncReport {
            version: template.version,
            ..SyncReport::default()
        };
        for agent in inner.store.stored_agents(template.account).await? {
            let Some(AgentOrigin::Template {
                template: from,
                overrides,
            }) = &agent.origin
            else {
                continue;
            };
            if *from != template.id {
                continue;
            }
            let id = agent.id().clone();
            if agent.diverged_from(&template.id) {
                report.diverged.push(id);
                continue;
            }
            if agent.state == AgentState::Archived {
                report.refused.push((id, "archived".to_owned()));
                continue;
            }
            if agent.template_version != Some(template.version) {
                let definition = overrides.apply(&template.spec.definition, id.clone());
                let write = AgentWrite {
                    expected: Some(agent.version),
                    origin: None,
                    template_version: Some(template.version),
                };
                match self
                    .rt
                    .directory()
                    .write_agent(*by, definition, write)
                    .await
                {
                    Ok(_) => {}
                    // Refused for this agent only (its account's policy, a
                    // circle, an edit that just landed): said, not fatal.
                    Err(
                        e @ (RuntimeError::Forbidden(_)
                        | RuntimeError::Config(_)
                        | RuntimeError::DelegationCycle(_)),
                    ) => {
                        report.refused.push((id, e.to_string()));
                        continue;
                    }
                    Err(RuntimeError::Store(StoreError::Conflict(m))) => {
                        report.refused.push((id, m));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            seed(self.rt, template.account, &id, &template.spec.knowledge).await?;
            report.updated.push(id);
        }
        Ok(report)
    }
}

/// Gives agent `agent` the seed facts `knowledge` in its agent layer (a
/// fact it holds already is recorded once: the store reconciles it).
async fn seed(
    rt: &Runtime,
    account: AccountId,
    agent: &AgentId,
    knowledge: &[String],
) -> Result<(), RuntimeError> {
    if knowledge.is_empty() {
        return Ok(());
    }
    let facts = knowledge
        .iter()
        .map(|text| {
            NewFact::new(
                account,
                FactOwner::Agent(agent.clone()),
                "",
                "",
                text.clone(),
            )
        })
        .collect();
    rt.inner.import_facts(facts, SEED_BATCH, |_| {}).await?;
    Ok(())
}

impl Directory<'_> {
    /// Clones agent `parent` (a stored agent of `by`'s account, or one
    /// registered in code) as a new stored agent `id` of the account, as an
    /// editor: the parent's current definition, with the parent recorded
    /// ([`AgentOrigin::Clone`]) and, as `options` ask, a copy of the
    /// parent's current agent-layer facts and, for each of the parent's
    /// sessions in the account that has a summary, a session of the clone
    /// for the same person, channel and chat that starts from that summary.
    pub async fn clone_agent(
        &self,
        by: impl Into<Actor>,
        parent: &AgentId,
        id: impl Into<AgentId>,
        options: CloneOptions,
    ) -> Result<Cloned, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        let account = by.account();
        inner
            .authorize(&by, account, Need::Editor("change agents"))
            .await?;
        let (mut definition, parent_version) = match inner.store.stored_agent(parent).await? {
            Some(_) => {
                let stored = self.agent(by, parent).await?;
                (stored.definition, stored.version)
            }
            None => ((*inner.agent_named(parent).await?).clone(), 0),
        };
        definition.id = id.into();
        let write = AgentWrite {
            expected: Some(0),
            origin: Some(AgentOrigin::Clone {
                parent: parent.clone(),
                parent_version,
            }),
            template_version: None,
        };
        let agent = self.write_agent(by, definition, write).await?;
        let facts = if options.knowledge {
            copy_facts(self.rt, account, parent, agent.id()).await?
        } else {
            0
        };
        let summaries = if options.summaries {
            carry_sessions(self.rt, account, parent, agent.id()).await?
        } else {
            0
        };
        Ok(Cloned {
            agent,
            facts,
            summaries,
        })
    }
}

/// Copies the current agent-layer facts of `from` in `account` to `to`.
async fn copy_facts(
    rt: &Runtime,
    account: AccountId,
    from: &AgentId,
    to: &AgentId,
) -> Result<usize, RuntimeError> {
    let owner = FactOwner::Agent(from.clone());
    let facts: Vec<NewFact> = rt
        .inner
        .store
        .facts(&Visibility::only(account, &owner), false)
        .await?
        .into_iter()
        .map(|f| {
            let mut new = NewFact::new(
                account,
                FactOwner::Agent(to.clone()),
                f.subject,
                f.predicate,
                f.value,
            );
            new.confidence = f.confidence;
            new.provenance = f.provenance;
            new.locked = f.locked;
            new.valid_at = Some(f.valid_at);
            new.cardinality = Some(f.cardinality);
            new
        })
        .collect();
    let n = facts.len();
    rt.inner.import_facts(facts, SEED_BATCH, |_| {}).await?;
    Ok(n)
}

/// Opens, for each session of `from` in `account` that has a summary, a
/// session of `to` for the same person, channel and chat starting from it.
async fn carry_sessions(
    rt: &Runtime,
    account: AccountId,
    from: &AgentId,
    to: &AgentId,
) -> Result<usize, RuntimeError> {
    let store = &rt.inner.store;
    let mut carried = 0;
    for session in store.sessions_of_agent(from, MAX_CARRIED_SESSIONS).await? {
        // An agent registered in code serves many accounts: only this
        // account's conversations go with its clone.
        if session.principal.account != account {
            continue;
        }
        let Some(summary) = store.latest_summary(session.id, i64::MAX).await? else {
            continue;
        };
        let opened = store
            .open_session(NewSession {
                principal: session.principal,
                agent_id: to.clone(),
                channel: session.channel.clone(),
                key: session.key.clone(),
            })
            .await?;
        let text = format!(
            "Carried over from this conversation with agent `{from}`:\n{}",
            summary.text
        );
        // Through turn 0: it stands before every turn of the new session.
        store
            .put_summary(NewSummary::new(
                &opened,
                0,
                text,
                summary.model,
                summary.interaction_id,
            ))
            .await?;
        carried += 1;
    }
    Ok(carried)
}
