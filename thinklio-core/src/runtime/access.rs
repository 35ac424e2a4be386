//! Who may touch a tenant's data: the one check every call of the
//! runtime's handles makes before it reads or changes what an account
//! holds ([`Inner::authorize`]).
//!
//! The rules: nothing outside the actor's account, ever. Within it, the
//! host acting for the account ([`Actor::Account`]) may do anything; a user
//! may touch their own data and that of the team they act for; anything
//! else needs a role (an admin for other users' and teams' data and the
//! account's settings, an editor for agents). Without an enforced directory
//! (`RuntimeConfig::enforce_directory`) there are no roles to look up: a
//! user still reaches only their own and their team's data, the account's
//! shared data is open to its users, and agents need an editor (a member
//! with that role) either way.

use super::{Inner, RuntimeError};
use crate::directory::{AccessError, AccountRole};
use crate::ids::{AccountId, TeamId, UserId};
use crate::principal::{Actor, Scope};

/// What a call needs of its actor, within the data's account.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    /// Data a user owns: the user themself, or an admin of an enforced
    /// directory.
    User(UserId),
    /// Data a team holds: a user acting for it, or an admin of an enforced
    /// directory.
    Team(TeamId),
    /// The account's own data and settings: an admin (a role checked only
    /// with the directory enforced). Says what is done, for the error.
    Admin(&'static str),
    /// The account's agents: an editor, always.
    Editor(&'static str),
    /// Reading the account's settings and agents: any member (any user of
    /// the account when the directory is not enforced).
    Member(&'static str),
    /// Seeing and deciding about calls proposed in a session of this user
    /// (or, `None`, in any session of the account): the user themself, or
    /// (with an enforced directory) a member with the account's
    /// `approval_role` (an admin unless the policy names another role).
    Decide(Option<UserId>),
}

impl Inner {
    /// Checks that `by` may do what `need` says with data of `account`.
    pub(crate) async fn authorize(
        &self,
        by: &Actor,
        account: AccountId,
        need: Need,
    ) -> Result<(), RuntimeError> {
        if by.account() != account {
            return Err(AccessError::OtherAccount {
                account: by.account(),
            }
            .into());
        }
        let p = match by {
            Actor::Account(_) => return Ok(()),
            Actor::User(p) => p,
        };
        // `open`: what an unenforced directory lets any user of the account do.
        let (least, action, open) = match need {
            Need::User(u) if u == p.user => return Ok(()),
            Need::Team(t) if p.team == Some(t) => return Ok(()),
            Need::Decide(Some(u)) if u == p.user => return Ok(()),
            Need::User(_) => (AccountRole::Admin, "touch another user's data", false),
            Need::Decide(_) if self.config.enforce_directory => {
                let policy = self.store.account_policy(account).await?;
                (
                    policy.approval_role.unwrap_or(AccountRole::Admin),
                    "decide about another user's calls",
                    false,
                )
            }
            Need::Decide(_) => (
                AccountRole::Admin,
                "decide about another user's calls",
                false,
            ),
            Need::Team(_) => (AccountRole::Admin, "touch another team's data", false),
            Need::Admin(action) => (AccountRole::Admin, action, true),
            Need::Editor(action) => (AccountRole::Editor, action, false),
            Need::Member(action) => (AccountRole::Viewer, action, true),
        };
        if !self.config.enforce_directory {
            if open {
                return Ok(());
            }
            if least == AccountRole::Admin {
                // No directory, no admins: another user's data stays theirs.
                return Err(AccessError::RoleTooLow {
                    role: AccountRole::Viewer,
                    account,
                    action,
                }
                .into());
            }
        }
        match self.store.role(account, p.user).await? {
            Some(role) if role >= least => Ok(()),
            Some(role) => Err(AccessError::RoleTooLow {
                role,
                account,
                action,
            }
            .into()),
            None => Err(AccessError::NotAMember {
                user: p.user,
                account,
            }
            .into()),
        }
    }

    /// Checks that `scope` is not another account's: the account itself,
    /// a team the store does not give to another account, or a user (who,
    /// with an enforced directory, must be a member; without one users have
    /// no recorded account, and what is scoped to them is served within
    /// `account` anyway).
    pub(crate) async fn within_account(
        &self,
        account: AccountId,
        scope: Scope,
    ) -> Result<(), RuntimeError> {
        let foreign = match scope {
            Scope::Account(a) => a != account,
            Scope::Team(t) => self
                .store
                .team_account(t)
                .await?
                .is_some_and(|a| a != account),
            Scope::User(u) => {
                self.config.enforce_directory && self.store.role(account, u).await?.is_none()
            }
        };
        if foreign {
            return Err(AccessError::OtherAccount { account }.into());
        }
        Ok(())
    }
}
