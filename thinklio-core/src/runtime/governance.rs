//! Governance on the runtime: budget checks, directory checks, agent
//! management by role, usage reports and forgetting a user.

use std::sync::Arc;

use super::access::Need;
use super::delegation::{Delegate, DelegationGraph};
use super::{Inner, Runtime, RuntimeError, interaction_event};
use crate::agent::AgentDefinition;
use crate::bounded::InsertBounded;
use crate::budget::BudgetLimit;
use crate::capability::Capability;
use crate::catalog::{AgentState, AgentVersion, NewAgentVersion, StoredAgent};
use crate::directory::{Access, AccessError, AccountRole};
use crate::error::ErrorCode;
use crate::event::EventKind;
use crate::ids::{AccountId, AgentId, UserId};
use crate::interaction::Interaction;
use crate::principal::{Actor, Principal, Scope};
use crate::step::StepError;
use crate::store::{ForgetReport, StoreError};
use crate::usage::{Cost, TokenUsage, UsageFilter, UsageGroup, UsageRow, UsageTotals};

/// How many budget warnings a runtime remembers having given; past that it
/// starts over (the store records each warning once, so none is repeated).
pub(crate) const WARNINGS_MEMORY: usize = 4096;

/// How many unpriced models a runtime remembers having warned about; past
/// that, further ones are not warned about (a provider has far fewer).
pub(crate) const UNPRICED_MEMORY: usize = 1024;

impl Inner {
    /// What a model call cost: priced by the model that answered, else by
    /// the one requested ([`PriceTable::price_of`](crate::PriceTable::price_of)).
    /// A call of a model with no price costs zero, and the first such call
    /// of each model is warned about: a log line and a `usage.unpriced_model`
    /// event, since cost budgets cannot see what it spends.
    pub(crate) async fn cost_of(
        &self,
        answered: &str,
        requested: &str,
        usage: TokenUsage,
        interaction: &Interaction,
    ) -> Cost {
        if let Some(price) = self.prices.price_of(answered, requested) {
            return price.cost(usage);
        }
        let first = {
            let mut seen = self.unpriced.lock().unwrap_or_else(|e| e.into_inner());
            seen.len() < UNPRICED_MEMORY && seen.insert(answered.to_owned())
        };
        if first {
            tracing::warn!(
                model = answered,
                requested,
                "model has no price: its calls cost $0 and cost budgets do not see them; \
                 set RuntimeBuilder::prices"
            );
            let payload = serde_json::json!({ "model": answered, "requested": requested });
            let event = interaction_event(EventKind::UsageUnpriced, interaction, payload);
            if let Err(e) = self.append_event(event).await {
                tracing::warn!(error = %e, "the unpriced-model event was not recorded");
            }
        }
        Cost::ZERO
    }

    /// Checks every budget covering `principal`: emits each warning whose
    /// threshold spend has reached (once per period), and refuses with
    /// [`ErrorCode::BudgetExceeded`] when a limit is spent.
    pub(crate) async fn check_budgets(
        &self,
        principal: &Principal,
        interaction: &Interaction,
    ) -> Result<(), StepError> {
        let store_error = |e: StoreError| StepError::new(e.code(), e.to_string());
        if self.budgets.read().await.is_none() {
            let loaded = self.store.budgets().await.map_err(store_error)?;
            *self.budgets.write().await = Some(loaded);
        }
        let covering: Vec<BudgetLimit> = self
            .budgets
            .read()
            .await
            .iter()
            .flatten()
            .filter(|b| b.scope.covers(principal))
            .cloned()
            .collect();
        let now = self.clock.now();
        for budget in covering {
            let start = budget.period.start(now);
            let mut filter = UsageFilter::all().scope(budget.scope);
            filter.from = Some(start);
            let totals = self
                .store
                .usage_totals(&filter)
                .await
                .map_err(store_error)?;
            let (spent, used) = (totals.cost, totals.tokens.total());
            let percent = budget.percent_used(spent, used);
            let mut thresholds = budget.warn_at.clone();
            thresholds.sort_unstable();
            for threshold in thresholds {
                if percent < i128::from(threshold) {
                    break;
                }
                // Warnings already given are remembered here, so a check past
                // a threshold writes to the store once, not on every call.
                let key = (budget.scope, start.as_millis(), threshold);
                if self
                    .warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&key)
                {
                    continue;
                }
                let first = self
                    .store
                    .record_budget_warning(budget.scope, start, threshold)
                    .await
                    .map_err(store_error)?;
                self.warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert_bounded(key, WARNINGS_MEMORY);
                if first {
                    let payload = serde_json::json!({
                        "scope": budget.scope.kind(),
                        "scope_id": budget.scope.id(),
                        "threshold": threshold,
                        "spent_nanos": spent.as_nanos(),
                        "limit_nanos": budget.cost.map(Cost::as_nanos),
                        "used_tokens": used,
                        "limit_tokens": budget.tokens,
                        "period_start": start,
                    });
                    let event = interaction_event(EventKind::BudgetWarning, interaction, payload);
                    self.append_event(event)
                        .await
                        .map_err(|e| StepError::new(e.code(), e.to_string()))?;
                }
            }
            let over = |what: String| {
                Err(StepError::new(
                    ErrorCode::BudgetExceeded,
                    format!(
                        "the {} budget of {what} for this {} is spent",
                        budget.scope.kind(),
                        budget.period.name(),
                    ),
                ))
            };
            if let Some(limit) = budget.cost
                && spent >= limit
            {
                return over(format!("{limit} ({spent} so far)"));
            }
            if let Some(limit) = budget.tokens
                && used >= limit
            {
                return over(format!("{limit} tokens ({used} so far)"));
            }
        }
        Ok(())
    }

    /// What the directory lets `principal` do through `agent`: `None` when
    /// the directory is not enforced.
    pub(crate) async fn access(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> Result<Option<Access>, RuntimeError> {
        if !self.config.enforce_directory {
            return Ok(None);
        }
        Ok(Some(self.store.access(principal, agent).await??))
    }
}

/// How a new version of a stored agent is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentWrite {
    /// Only over this version (0: a new agent).
    pub(crate) expected: Option<u32>,
    /// Where a new agent comes from.
    pub(crate) origin: Option<crate::catalog::AgentOrigin>,
    /// The template version it follows (`None`: an edit).
    pub(crate) template_version: Option<u32>,
}

/// The directory at run time: the agents (registered in code, or put by an
/// editor of their account), delegation, and forgetting a user
/// ([`Runtime::directory`]).
#[derive(Clone, Copy)]
pub struct Directory<'a> {
    pub(super) rt: &'a Runtime,
}

impl std::fmt::Debug for Directory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory<'_> {
    /// Registers (or replaces) an agent of the host, in code; refused if it
    /// would make the agents delegate in a circle.
    pub fn register_agent(&self, agent: AgentDefinition) -> Result<(), RuntimeError> {
        self.rt.inner.register_agent(agent)
    }

    /// Offers an agent to other agents as a capability, at run time; refused
    /// if it would make the agents delegate in a circle.
    pub fn register_delegate(&self, delegate: Delegate) -> Result<(), RuntimeError> {
        self.rt.inner.register_delegate(delegate)
    }

    /// The capability behind a delegate, unregistered and unchecked: for
    /// hosts that assemble registries themselves. A cycle that reaches the
    /// registry this way is still refused when it is called.
    pub fn delegate_capability(&self, delegate: &Delegate) -> Arc<dyn Capability> {
        Arc::new(super::delegation::AgentCapability::new(
            delegate,
            Arc::downgrade(&self.rt.inner),
        ))
    }

    /// The delegation graph of the registered agents and delegates.
    pub fn graph(&self) -> DelegationGraph {
        self.rt.inner.delegation_graph()
    }

    /// Puts (creates or changes) an agent of `by`'s account, as an editor,
    /// admin or owner of it (viewers and non-members may not; the host
    /// acting for the account may): stored as its next version
    /// ([`crate::catalog`]), served by every runtime on the store from its
    /// next message. An agent stays with the account that first put it: no
    /// member of another account can replace it, and agents the host
    /// registered in code are read-only here. The definition must stay
    /// within the account's policy: a trust level at most its ceiling
    /// ([`AccountPolicy::max_trust_level`](crate::AccountPolicy::max_trust_level),
    /// [`AccountPolicy::DEFAULT_TRUST_CEILING`](crate::AccountPolicy::DEFAULT_TRUST_CEILING)
    /// when unset) and only capabilities the policy allows.
    pub async fn put_agent(
        &self,
        by: impl Into<Actor>,
        agent: AgentDefinition,
    ) -> Result<StoredAgent, RuntimeError> {
        self.write_agent(by.into(), agent, AgentWrite::default())
            .await
    }

    /// [`put_agent`](Self::put_agent), only if the agent's current version
    /// is `version` (0: it must be new), so that an editor never overwrites
    /// a change they did not see (`store.conflict` otherwise).
    pub async fn update_agent(
        &self,
        by: impl Into<Actor>,
        agent: AgentDefinition,
        version: u32,
    ) -> Result<StoredAgent, RuntimeError> {
        let write = AgentWrite {
            expected: Some(version),
            ..AgentWrite::default()
        };
        self.write_agent(by.into(), agent, write).await
    }

    /// Stores `agent` as the next version of a stored agent of `by`'s
    /// account, after every check: `by` an editor, not the host's agent nor
    /// another account's, within the policy, delegating only to agents the
    /// account may use, closing no circle.
    pub(crate) async fn write_agent(
        &self,
        by: Actor,
        mut agent: AgentDefinition,
        write: AgentWrite,
    ) -> Result<StoredAgent, RuntimeError> {
        agent.offer_delegates();
        let account = by.account();
        let inner = &self.rt.inner;
        let store = &inner.store;
        inner
            .authorize(&by, account, Need::Editor("change agents"))
            .await?;
        let id = agent.id.clone();
        if inner.stored_version(&id).is_none() && inner.has_agent(&id) {
            return Err(AccessError::HostAgent { agent: id }.into());
        }
        if let Some(owner) = store.agent_owner(&id).await?
            && owner != account
        {
            return Err(AccessError::ForeignAgent { agent: id, account }.into());
        }
        let policy = store.account_policy(account).await?;
        if let Some(reason) = policy.refuses_agent(&agent) {
            return Err(AccessError::BeyondPolicy { agent: id, reason }.into());
        }
        // It delegates only to agents its account may use: its own stored
        // agents and those registered in code.
        for to in &agent.delegates {
            match store.agent_owner(&to.agent).await? {
                Some(owner) if owner != account => {
                    return Err(AccessError::ForeignAgent {
                        agent: to.agent.clone(),
                        account,
                    }
                    .into());
                }
                Some(_) => {}
                None if inner.has_agent(&to.agent) => {}
                None => return Err(RuntimeError::UnknownAgent(to.agent.clone())),
            }
        }
        // Every stored agent it reaches is served here as stored now, so
        // that a circle through agents another process wrote is seen.
        let mut reach: Vec<AgentId> = agent.delegates.iter().map(|d| d.agent.clone()).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(next) = reach.pop() {
            if next == id || !seen.insert(next.clone()) {
                continue;
            }
            if let Some(stored) = store.stored_agent(&next).await? {
                reach.extend(stored.definition.delegates.iter().map(|d| d.agent.clone()));
                inner.learn(stored)?;
            }
        }
        inner.check_agent(&agent)?;
        let mut new = NewAgentVersion::new(account, agent, by.user());
        new.expected_version = write.expected;
        new.origin = write.origin;
        new.template_version = write.template_version;
        // The store checks ownership again in its transaction: an agent
        // another account claimed meanwhile is refused there, and said so.
        let stored = match store.put_agent(new).await {
            Ok(stored) => stored,
            Err(StoreError::Conflict(m)) => {
                return Err(match store.agent_owner(&id).await? {
                    Some(owner) if owner != account => {
                        AccessError::ForeignAgent { agent: id, account }.into()
                    }
                    _ => StoreError::Conflict(m).into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        inner.learn(stored.clone())?;
        Ok(stored)
    }

    /// A stored agent of `by`'s account, as any member of it.
    pub async fn agent(
        &self,
        by: impl Into<Actor>,
        id: &AgentId,
    ) -> Result<StoredAgent, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, by.account(), Need::Member("read agents"))
            .await?;
        match inner.store.stored_agent(id).await? {
            Some(agent) if agent.account == by.account() => Ok(agent),
            Some(_) => Err(AccessError::ForeignAgent {
                agent: id.clone(),
                account: by.account(),
            }
            .into()),
            None => Err(RuntimeError::UnknownAgent(id.clone())),
        }
    }

    /// The stored agents of `by`'s account, by id, as any member of it.
    pub async fn agents(&self, by: impl Into<Actor>) -> Result<Vec<StoredAgent>, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, by.account(), Need::Member("read agents"))
            .await?;
        Ok(inner.store.stored_agents(by.account()).await?)
    }

    /// The delegation graph from an agent `by` may see (a stored agent of
    /// its account, or one registered in code): the agents it may call,
    /// through which capability, and theirs in turn; agents of other
    /// accounts are left out.
    pub async fn agent_graph(
        &self,
        by: impl Into<Actor>,
        id: &AgentId,
    ) -> Result<DelegationGraph, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        if inner.stored_version(id).is_some() || !inner.has_agent(id) {
            // A stored agent: the account's, and served here as stored now.
            let stored = self.agent(by, id).await?;
            inner.learn(stored)?;
        } else {
            inner
                .authorize(&by, by.account(), Need::Member("read agents"))
                .await?;
        }
        let mut graph = inner.delegation_graph().reachable_from(id);
        let foreign: Vec<AgentId> = graph
            .agents
            .keys()
            .filter(|a| {
                inner
                    .stored_version(a)
                    .is_some_and(|s| s.owner != by.account())
            })
            .cloned()
            .collect();
        for agent in &foreign {
            graph.agents.remove(agent);
        }
        graph
            .edges
            .retain(|(from, _, to)| !foreign.contains(from) && !foreign.contains(to));
        Ok(graph)
    }

    /// Every version of a stored agent of `by`'s account, oldest first.
    pub async fn agent_versions(
        &self,
        by: impl Into<Actor>,
        id: &AgentId,
    ) -> Result<Vec<AgentVersion>, RuntimeError> {
        let by = by.into();
        self.agent(by, id).await?;
        Ok(self.rt.inner.store.agent_versions(id).await?)
    }

    /// Pauses (new messages are refused with `agent.paused`), resumes
    /// (`AgentState::Active`) or archives (no new work, for good) a stored
    /// agent of `by`'s account, as an editor of it. Work already started
    /// goes on with the version it started with.
    pub async fn set_agent_state(
        &self,
        by: impl Into<Actor>,
        id: &AgentId,
        state: AgentState,
    ) -> Result<StoredAgent, RuntimeError> {
        let by = by.into();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, by.account(), Need::Editor("change agents"))
            .await?;
        self.agent(by, id).await?;
        let stored = inner.store.set_agent_state(id, state).await?;
        inner.learn(stored.clone())?;
        Ok(stored)
    }

    /// The role of `user` in `by`'s account, if they are a member.
    pub async fn role(
        &self,
        by: impl Into<Actor>,
        user: UserId,
    ) -> Result<Option<AccountRole>, RuntimeError> {
        let by = by.into();
        let account = by.account();
        let inner = &self.rt.inner;
        inner.authorize(&by, account, Need::User(user)).await?;
        Ok(inner.store.role(account, user).await?)
    }

    /// Makes `user` a member of `by`'s account with `role`, unless they are
    /// one already (their role is then kept), as an admin or the host
    /// acting for the account.
    pub async fn ensure_member(
        &self,
        by: impl Into<Actor>,
        user: UserId,
        role: AccountRole,
    ) -> Result<(), RuntimeError> {
        let by = by.into();
        let account = by.account();
        let inner = &self.rt.inner;
        inner
            .authorize(&by, account, Need::Admin("add members"))
            .await?;
        if inner.store.role(account, user).await?.is_none() {
            inner.store.set_member(account, user, role).await?;
        }
        Ok(())
    }

    /// Deletes everything a user of `account` owns, as `by` (the user
    /// themself, an admin, or the host acting for the account; see
    /// [`PrivacyStore::forget_user`](crate::PrivacyStore::forget_user)):
    /// conversations, steps, jobs, tasks, facts, todos, budgets and their
    /// place in the directory. Hosts that remember channel users call
    /// [`ChannelHost::forget`](crate::channel::ChannelHost::forget) instead.
    pub async fn forget_user(
        &self,
        by: impl Into<Actor>,
        account: AccountId,
        user: UserId,
    ) -> Result<ForgetReport, RuntimeError> {
        let inner = &self.rt.inner;
        inner
            .authorize(&by.into(), account, Need::User(user))
            .await?;
        let report = inner.store.forget_user(account, user).await?;
        inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.principal.user != user);
        // Their budgets are gone from the store: read the rest again.
        *inner.budgets.write().await = None;
        Ok(report)
    }
}

/// Usage and budgets of an account, as one actor may read and set them
/// ([`Runtime::usage`]): always within the actor's account; a user reads
/// their own usage, an admin (with the directory enforced) the account's.
#[derive(Clone, Copy)]
pub struct Usage<'a> {
    pub(super) rt: &'a Runtime,
}

impl std::fmt::Debug for Usage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage").finish_non_exhaustive()
    }
}

impl Usage<'_> {
    /// `filter` narrowed to what `by` may read: `by`'s account only; a
    /// user's own usage, or (as an admin) the account's.
    async fn within(&self, by: Actor, filter: &UsageFilter) -> Result<UsageFilter, RuntimeError> {
        let account = by.account();
        if filter.account.is_some_and(|a| a != account) {
            return Err(AccessError::OtherAccount { account }.into());
        }
        let need = match filter.user {
            Some(user) => Need::User(user),
            None => Need::Admin("read the account's usage"),
        };
        self.rt.inner.authorize(&by, account, need).await?;
        let mut narrowed = filter.clone();
        narrowed.account = Some(account);
        Ok(narrowed)
    }

    /// Usage (calls, tokens, cost) over `filter`, within what `by` may read.
    pub async fn totals(
        &self,
        by: impl Into<Actor>,
        filter: &UsageFilter,
    ) -> Result<UsageTotals, RuntimeError> {
        let filter = self.within(by.into(), filter).await?;
        Ok(self.rt.inner.store.usage_totals(&filter).await?)
    }

    /// Usage over `filter`, one row per user, team, account or agent,
    /// within what `by` may read.
    pub async fn report(
        &self,
        by: impl Into<Actor>,
        group: UsageGroup,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRow>, RuntimeError> {
        let filter = self.within(by.into(), filter).await?;
        Ok(self.rt.inner.store.usage_report(group, &filter).await?)
    }

    /// Checks that `by` may set the budgets of `scope`: an admin of its
    /// account (any user of it without an enforced directory), or the host
    /// acting for it. A team or user of another account is refused.
    async fn may_budget(&self, by: Actor, scope: Scope) -> Result<(), RuntimeError> {
        let inner = &self.rt.inner;
        let account = by.account();
        inner.within_account(account, scope).await?;
        inner
            .authorize(&by, account, Need::Admin("set budgets"))
            .await
    }

    /// Sets a spending limit (replacing any earlier one for its scope), as `by`.
    pub async fn set_budget(
        &self,
        by: impl Into<Actor>,
        limit: BudgetLimit,
    ) -> Result<(), RuntimeError> {
        self.may_budget(by.into(), limit.scope).await?;
        let inner = &self.rt.inner;
        inner.store.set_budget(limit).await?;
        let all = inner.store.budgets().await?;
        *inner.budgets.write().await = Some(all);
        Ok(())
    }

    /// Removes the spending limit of a scope, as `by`.
    pub async fn remove_budget(
        &self,
        by: impl Into<Actor>,
        scope: Scope,
    ) -> Result<bool, RuntimeError> {
        self.may_budget(by.into(), scope).await?;
        let inner = &self.rt.inner;
        let removed = inner.store.remove_budget(scope).await?;
        let all = inner.store.budgets().await?;
        *inner.budgets.write().await = Some(all);
        Ok(removed)
    }
}
