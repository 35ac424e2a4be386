//! Governance on the runtime: budget checks, directory checks, agent
//! management by role, usage reports and forgetting a user.

use super::{Inner, Runtime, RuntimeError, interaction_event};
use crate::agent::AgentDefinition;
use crate::bounded::InsertBounded;
use crate::budget::BudgetLimit;
use crate::directory::{Access, AccessError, AccountRole};
use crate::error::ErrorCode;
use crate::event::EventKind;
use crate::ids::{AccountId, AgentId, UserId};
use crate::interaction::Interaction;
use crate::principal::{Principal, Scope};
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

impl Runtime {
    /// Registers (or replaces) an agent owned by `actor`'s account, as
    /// `actor`: editors, admins and owners may; viewers and non-members may
    /// not. An agent stays with the account that first put it: no member of
    /// another account can replace it, and agents the host registered in
    /// code are read-only here. The definition must stay within the
    /// account's policy: a trust level at most its ceiling
    /// ([`AccountPolicy::max_trust_level`](crate::AccountPolicy::max_trust_level),
    /// [`AccountPolicy::DEFAULT_TRUST_CEILING`](crate::AccountPolicy::DEFAULT_TRUST_CEILING)
    /// when unset) and only capabilities the policy allows.
    pub async fn put_agent(
        &self,
        actor: &Principal,
        agent: AgentDefinition,
    ) -> Result<(), RuntimeError> {
        let store = &self.inner.store;
        match store.role(actor.account, actor.user).await? {
            Some(role) if role >= AccountRole::Editor => {}
            Some(role) => {
                return Err(AccessError::RoleTooLow {
                    role,
                    account: actor.account,
                    action: "change agents",
                }
                .into());
            }
            None => {
                return Err(AccessError::NotAMember {
                    user: actor.user,
                    account: actor.account,
                }
                .into());
            }
        }
        let id = agent.id.clone();
        match store.agent_owner(&id).await? {
            Some(owner) if owner != actor.account => {
                return Err(AccessError::ForeignAgent {
                    agent: id,
                    account: actor.account,
                }
                .into());
            }
            Some(_) => {}
            None if self.inner.has_agent(&id) => {
                return Err(AccessError::HostAgent { agent: id }.into());
            }
            None => {}
        }
        let policy = store.account_policy(actor.account).await?;
        if let Some(reason) = policy.refuses_agent(&agent) {
            return Err(AccessError::BeyondPolicy { agent: id, reason }.into());
        }
        // Ownership first: the store refuses an agent another account
        // claimed meanwhile, before anything is replaced in memory.
        store
            .set_agent_owner(&id, actor.account)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => RuntimeError::from(AccessError::ForeignAgent {
                    agent: id.clone(),
                    account: actor.account,
                }),
                other => other.into(),
            })?;
        self.register_agent(agent)
    }

    /// Sets a spending limit (replacing any earlier one for its scope).
    pub async fn set_budget(&self, limit: BudgetLimit) -> Result<(), RuntimeError> {
        self.inner.store.set_budget(limit).await?;
        let all = self.inner.store.budgets().await?;
        *self.inner.budgets.write().await = Some(all);
        Ok(())
    }

    /// Removes the spending limit of a scope.
    pub async fn remove_budget(&self, scope: Scope) -> Result<bool, RuntimeError> {
        let removed = self.inner.store.remove_budget(scope).await?;
        let all = self.inner.store.budgets().await?;
        *self.inner.budgets.write().await = Some(all);
        Ok(removed)
    }

    /// Usage over `filter`, one row per user, team, account or agent.
    pub async fn usage_report(
        &self,
        group: UsageGroup,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRow>, RuntimeError> {
        Ok(self.inner.store.usage_report(group, filter).await?)
    }

    /// Deletes everything a user owns (see [`PrivacyStore::forget_user`](crate::PrivacyStore::forget_user)):
    /// conversations, steps, jobs, tasks, facts, todos, budgets and their
    /// place in the directory. Hosts that remember channel users call
    /// [`ChannelHost::forget`](crate::channel::ChannelHost::forget) instead.
    pub async fn forget_user(
        &self,
        account: AccountId,
        user: UserId,
    ) -> Result<ForgetReport, RuntimeError> {
        let report = self.inner.store.forget_user(account, user).await?;
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.principal.user != user);
        // Their budgets are gone from the store: read the rest again.
        *self.inner.budgets.write().await = None;
        Ok(report)
    }

    /// Usage (calls, tokens, cost) over `filter`, from the store.
    pub async fn usage(&self, filter: &UsageFilter) -> Result<UsageTotals, RuntimeError> {
        Ok(self.inner.store.usage_totals(filter).await?)
    }
}
