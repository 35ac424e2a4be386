//! Registering agents and serving stored ones ([`crate::catalog`]): the
//! checks every agent passes (its limits, its delegations, no circle),
//! which definition a new message runs with (the agent's current version,
//! refused while paused or archived), and which one a started interaction
//! resumes with (the version it recorded).

use std::sync::Arc;

use super::builder::check_graph;
use super::delegation::{self, Delegate, DelegationGraph};
use super::{Inner, RuntimeError};
use crate::agent::AgentDefinition;
use crate::catalog::{AgentState, StoredAgent};
use crate::directory::AccessError;
use crate::ids::{AccountId, AgentId};
use crate::interaction::Interaction;

/// What a runtime serves of a stored agent: the version and state it
/// knows, and the account it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) version: u32,
    pub(crate) state: AgentState,
    pub(crate) owner: AccountId,
}

impl Inner {
    /// The definition a new message of `account` to `id` runs with, and
    /// its stored version (`None` for an agent registered in code). A
    /// stored agent is read from the store on a shared store (one row:
    /// another process may have changed it), from memory otherwise; paused
    /// and archived agents refuse, and a stored agent serves its own
    /// account only, whether the directory is enforced or not.
    pub(crate) async fn serve_agent(
        self: &Arc<Self>,
        id: &AgentId,
        account: AccountId,
    ) -> Result<(Arc<AgentDefinition>, Option<u32>), RuntimeError> {
        let known = self.stored_version(id);
        if known.is_none()
            && let Ok(agent) = self.agent(id)
        {
            return Ok((agent, None));
        }
        let Served {
            version,
            state,
            owner,
        } = match known {
            Some(known) if !self.config.shared_store => known,
            _ => {
                let Some(stored) = self.store.stored_agent(id).await? else {
                    self.forget_stored(id);
                    return Err(RuntimeError::UnknownAgent(id.clone()));
                };
                self.learn(stored)?
            }
        };
        if owner != account {
            return Err(AccessError::ForeignAgent {
                agent: id.clone(),
                account,
            }
            .into());
        }
        match state {
            AgentState::Paused => Err(RuntimeError::AgentPaused(id.clone())),
            AgentState::Archived => Err(RuntimeError::AgentArchived(id.clone())),
            _ => Ok((self.agent(id)?, Some(version))),
        }
    }

    /// The current definition of agent `id`, registered in code or stored
    /// (read from the store when this runtime does not serve it yet),
    /// whatever its state: for work it started.
    pub(crate) async fn agent_named(
        self: &Arc<Self>,
        id: &AgentId,
    ) -> Result<Arc<AgentDefinition>, RuntimeError> {
        if let Ok(agent) = self.agent(id) {
            return Ok(agent);
        }
        match self.store.stored_agent(id).await? {
            Some(stored) => {
                self.learn(stored)?;
                self.agent(id)
            }
            None => Err(RuntimeError::UnknownAgent(id.clone())),
        }
    }

    /// The definition `interaction` runs with: for a stored agent, the
    /// version it recorded, whatever the agent's state is now (work it
    /// started goes on).
    pub(crate) async fn agent_of(
        self: &Arc<Self>,
        interaction: &Interaction,
    ) -> Result<Arc<AgentDefinition>, RuntimeError> {
        let id = &interaction.agent_id;
        let Some(version) = interaction.agent_version else {
            return self.agent_named(id).await;
        };
        if self.stored_version(id).map(|s| s.version) == Some(version) {
            return self.agent(id);
        }
        // Not the version this runtime serves: read it (a newer one is
        // learnt, for the messages after).
        if self.stored_version(id).is_none_or(|s| s.version < version)
            && let Some(stored) = self.store.stored_agent(id).await?
            && stored.version == version
        {
            self.learn(stored)?;
            return self.agent(id);
        }
        let old = self.store.agent_version(id, version).await?;
        old.definition.check().map_err(RuntimeError::Config)?;
        Ok(Arc::new(old.definition))
    }

    /// Serves `stored` from now on (when newer than what is served);
    /// returns what is served.
    pub(crate) fn learn(self: &Arc<Self>, stored: StoredAgent) -> Result<Served, RuntimeError> {
        let id = stored.definition.id.clone();
        let fresh = Served {
            version: stored.version,
            state: stored.state,
            owner: stored.account,
        };
        let known = self.stored_version(&id);
        if known.is_none_or(|s| s.version < stored.version) {
            self.register_agent(stored.definition)?;
        }
        let mut served = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        match served.get(&id) {
            Some(s) if s.version > fresh.version => Ok(*s),
            _ => {
                served.insert(id, fresh);
                Ok(fresh)
            }
        }
    }

    /// What this runtime serves of a stored agent.
    pub(crate) fn stored_version(&self, id: &AgentId) -> Option<Served> {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn forget_stored(&self, id: &AgentId) {
        let was_stored = self
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some();
        if was_stored {
            self.agents
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

/// Registering agents and delegates: what every path that adds one checks.
impl Inner {
    /// Registers (or replaces) an agent; refused if it would make the
    /// agents delegate in a circle.
    pub(crate) fn register_agent(
        self: &Arc<Self>,
        mut agent: AgentDefinition,
    ) -> Result<(), RuntimeError> {
        agent.offer_delegates();
        self.check_agent(&agent)?;
        // Its delegations become capabilities (once per name).
        for to in &agent.delegates {
            let known = self
                .delegates
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&to.name);
            if !known {
                self.register_delegate(Delegate::new(
                    to.agent.clone(),
                    to.name.clone(),
                    to.description.clone(),
                ))?;
            }
        }
        self.agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.id.clone(), Arc::new(agent));
        Ok(())
    }

    /// Whether `agent` could be registered: its own limits, and no circle
    /// of delegation with it.
    pub(crate) fn check_agent(&self, agent: &AgentDefinition) -> Result<(), RuntimeError> {
        agent.check().map_err(RuntimeError::Config)?;
        let mut next = self
            .agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        next.insert(agent.id.clone(), Arc::new(agent.clone()));
        let mut delegates = self
            .delegates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for to in &agent.delegates {
            match delegates.get(&to.name) {
                Some(other) if *other != to.agent => {
                    return Err(RuntimeError::Config(format!(
                        "agent `{}`: the capability name `{}` delegates to another agent already; choose another name",
                        agent.id, to.name
                    )));
                }
                Some(_) => {}
                None if self.capabilities.get(&to.name).is_some() => {
                    return Err(RuntimeError::Config(format!(
                        "agent `{}`: `{}` is the name of a capability already; choose another name for the delegation",
                        agent.id, to.name
                    )));
                }
                None => {
                    delegates.insert(to.name.clone(), to.agent.clone());
                }
            }
        }
        check_graph(&next, &delegates)
    }

    /// Offers an agent to other agents as a capability; refused if it
    /// would make the agents delegate in a circle.
    pub(crate) fn register_delegate(
        self: &Arc<Self>,
        delegate: Delegate,
    ) -> Result<(), RuntimeError> {
        let mut delegates = self.delegates.write().unwrap_or_else(|e| e.into_inner());
        let mut next = delegates.clone();
        next.insert(delegate.name().to_owned(), delegate.agent().clone());
        check_graph(
            &self.agents.read().unwrap_or_else(|e| e.into_inner()),
            &next,
        )?;
        self.capabilities
            .register_arc(Arc::new(delegation::AgentCapability::new(
                &delegate,
                Arc::downgrade(self),
            )))?;
        *delegates = next;
        Ok(())
    }

    /// The delegation graph of the registered agents and delegates.
    pub(crate) fn delegation_graph(&self) -> DelegationGraph {
        let agents = self
            .agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        DelegationGraph::build(
            &agents,
            &self.delegates.read().unwrap_or_else(|e| e.into_inner()),
        )
    }
}
