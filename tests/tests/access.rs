//! Every call of the runtime's handles checks who acts: nothing of another
//! account is ever reached; within an account, a user reaches their own
//! data, an admin (with the directory enforced) and the host acting for the
//! account reach the rest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

async fn runtime(dir: &tempfile::TempDir, enforce: bool) -> (Runtime, SqliteStore) {
    let store = SqliteStore::open(dir.path().join("a.db")).await.unwrap();
    let mut config = RuntimeConfig::default();
    config.enforce_directory = enforce;
    let rt = Runtime::builder()
        .store(store.clone())
        .model(ScriptedModel::responder(|_| ScriptedReply::text("ok")))
        .agent(AgentDefinition::new("a", "m"))
        .config(config)
        .build()
        .unwrap();
    (rt, store)
}

fn refused<T: std::fmt::Debug>(r: Result<T, RuntimeError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("allowed: {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn no_call_reaches_another_account_or_another_users_data() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _store) = runtime(&dir, false).await;
    let ada = Principal::new(AccountId::new(), UserId::new());
    let bo = Principal::new(ada.account, UserId::new());
    let eve = Principal::new(AccountId::new(), UserId::new());
    let session = rt.open_session(ada, "a", "t", None).await.unwrap();
    let reply = rt.send(session.id, "hello").await.unwrap();
    rt.knowledge()
        .add(
            &ada,
            NewFact::new(
                ada.account,
                FactOwner::User(ada.user),
                "Ada",
                "likes",
                "tea",
            ),
        )
        .await
        .unwrap();

    // Ada reaches her own.
    assert_eq!(
        rt.sessions()
            .steps(&ada, reply.interaction_id)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        rt.sessions()
            .history(&ada, session.id, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        rt.knowledge()
            .export_user(&ada, ada.account, ada.user)
            .await
            .is_ok()
    );

    // Eve, of another account, reaches nothing of Ada's, whatever she names.
    let other = ErrorCode::DirectoryOtherAccount;
    assert_eq!(
        refused(rt.sessions().steps(&eve, reply.interaction_id).await),
        other
    );
    assert_eq!(refused(rt.sessions().get(&eve, session.id).await), other);
    assert_eq!(
        refused(rt.sessions().history(&eve, session.id, 10).await),
        other
    );
    assert_eq!(
        refused(
            rt.knowledge()
                .export_user(&eve, ada.account, ada.user)
                .await
        ),
        other
    );
    assert_eq!(
        refused(
            rt.knowledge()
                .delete_user(&eve, ada.account, ada.user)
                .await
        ),
        other
    );
    assert_eq!(
        refused(
            rt.directory()
                .forget_user(&eve, ada.account, ada.user)
                .await
        ),
        other
    );
    let budget = BudgetLimit::monthly(Scope::Account(ada.account), Cost::from_usd(1.0));
    assert_eq!(
        refused(rt.usage().set_budget(&eve, budget.clone()).await),
        other
    );
    let theirs = UsageFilter::all().account(ada.account);
    assert_eq!(refused(rt.usage().totals(&eve, &theirs).await), other);
    assert_eq!(
        refused(
            rt.knowledge()
                .add(
                    &eve,
                    NewFact::new(ada.account, FactOwner::Account, "office", "is", "closed")
                )
                .await
        ),
        other
    );
    // The host acting for Eve's account is no better placed.
    let eves_host = Actor::Account(eve.account);
    assert_eq!(
        refused(rt.sessions().steps(eves_host, reply.interaction_id).await),
        other
    );
    assert_eq!(
        refused(
            rt.directory()
                .forget_user(eves_host, ada.account, ada.user)
                .await
        ),
        other
    );

    // Bo, of Ada's account, without an enforced directory: still not her data.
    assert_eq!(
        refused(rt.sessions().steps(&bo, reply.interaction_id).await),
        ErrorCode::DirectoryRoleTooLow
    );
    assert_eq!(
        refused(rt.knowledge().delete_user(&bo, ada.account, ada.user).await),
        ErrorCode::DirectoryRoleTooLow
    );
    assert_eq!(
        refused(rt.directory().forget_user(&bo, ada.account, ada.user).await),
        ErrorCode::DirectoryRoleTooLow
    );
    // Nothing was forgotten or deleted by the refusals.
    assert_eq!(
        rt.knowledge()
            .facts(&ada, &AgentId::new("a"))
            .await
            .unwrap()
            .len(),
        1
    );

    // The host acting for Ada's account reaches all of it.
    let host = Actor::Account(ada.account);
    assert_eq!(
        rt.sessions()
            .steps(host, reply.interaction_id)
            .await
            .unwrap()
            .len(),
        3
    );
    rt.usage().set_budget(host, budget).await.unwrap();
    let forgotten = rt
        .directory()
        .forget_user(host, ada.account, ada.user)
        .await
        .unwrap();
    assert_eq!((forgotten.sessions, forgotten.facts), (1, 1));
}

#[tokio::test]
async fn with_the_directory_enforced_an_admin_reaches_the_accounts_data_and_a_viewer_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, store) = runtime(&dir, true).await;
    let account = AccountId::new();
    store
        .put_account(account, "X", AccountPolicy::default())
        .await
        .unwrap();
    let (ada, admin, viewer) = (
        Principal::new(account, UserId::new()),
        Principal::new(account, UserId::new()),
        Principal::new(account, UserId::new()),
    );
    store
        .set_member(account, ada.user, AccountRole::Editor)
        .await
        .unwrap();
    store
        .set_member(account, admin.user, AccountRole::Admin)
        .await
        .unwrap();
    store
        .set_member(account, viewer.user, AccountRole::Viewer)
        .await
        .unwrap();
    store
        .assign(Assignment {
            agent_id: "a".into(),
            scope: Scope::Account(account),
            capabilities: None,
            approval_mode: None,
        })
        .await
        .unwrap();
    store.set_agent_owner(&"a".into(), account).await.unwrap();
    let session = rt.open_session(ada, "a", "t", None).await.unwrap();
    let reply = rt.send(session.id, "hello").await.unwrap();

    assert!(
        rt.sessions()
            .steps(&admin, reply.interaction_id)
            .await
            .is_ok()
    );
    assert_eq!(
        refused(rt.sessions().steps(&viewer, reply.interaction_id).await),
        ErrorCode::DirectoryRoleTooLow
    );
    let budget = BudgetLimit::monthly(Scope::User(ada.user), Cost::from_usd(1.0));
    assert_eq!(
        refused(rt.usage().set_budget(&viewer, budget.clone()).await),
        ErrorCode::DirectoryRoleTooLow
    );
    rt.usage().set_budget(&admin, budget).await.unwrap();
    // A user of another account is not budgeted from here.
    let stranger = BudgetLimit::monthly(Scope::User(UserId::new()), Cost::from_usd(1.0));
    assert_eq!(
        refused(rt.usage().set_budget(&admin, stranger).await),
        ErrorCode::DirectoryOtherAccount
    );
    let mine = UsageFilter::all().user(ada.user);
    assert!(rt.usage().totals(&ada, &mine).await.is_ok());
    assert_eq!(
        refused(rt.usage().totals(&viewer, &UsageFilter::all()).await),
        ErrorCode::DirectoryRoleTooLow
    );
    assert!(rt.usage().totals(&admin, &UsageFilter::all()).await.is_ok());
}
