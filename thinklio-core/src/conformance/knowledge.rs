//! Checks of knowledge facts: reconciliation, bi-temporal history,
//! visibility inside every query, search, curation and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;
use crate::knowledge::{Curation, FactChangeKind, FactQuery};

fn triple(p: &Principal, owner: FactOwner, s: &str, pr: &str, v: &str) -> NewFact {
    let mut f = NewFact::new(p.account, owner, s, pr, v);
    f.embedding = OfflineEmbedder::new(16).embed_one(&f.text());
    f
}

pub async fn facts_are_reconciled_and_never_overwritten<S: Store>(store: S) {
    let me = principal();
    let mine = FactOwner::User(me.user);
    let paris = store
        .record_fact(triple(&me, mine.clone(), "Ada", "lives in", "Paris"), t(10))
        .await
        .unwrap();
    assert_eq!(paris.kind(), "added");
    let again = store
        .record_fact(
            triple(&me, mine.clone(), "ada", "Lives in", " paris "),
            t(20),
        )
        .await
        .unwrap();
    assert_eq!(
        again.kind(),
        "duplicate",
        "the same fact, normalised, is not added twice"
    );
    assert_eq!(again.fact().id, paris.fact().id);

    let lyon = store
        .record_fact(triple(&me, mine.clone(), "Ada", "lives in", "Lyon"), t(30))
        .await
        .unwrap();
    let FactWrite::Superseded { fact, replaced } = &lyon else {
        panic!("a changed value supersedes: {lyon:?}");
    };
    assert_eq!(replaced.len(), 1);
    let old = &replaced[0];
    assert_eq!(old.id, paris.fact().id);
    assert_eq!(
        old.invalid_at,
        Some(t(30)),
        "no longer true in the world from the new valid_at"
    );
    assert_eq!(old.expired_at, Some(t(30)), "no longer believed from now");
    assert_eq!(old.superseded_by, Some(fact.id));
    assert_eq!(old.value, "Paris", "nothing is overwritten");
    assert!(fact.is_current());

    // A fact older than the current value is kept as history.
    let mut earlier = triple(&me, mine.clone(), "Ada", "lives in", "Nice");
    earlier.valid_at = Some(t(1));
    let nice = store.record_fact(earlier, t(40)).await.unwrap();
    assert_eq!(nice.kind(), "historical");
    assert_eq!(nice.fact().invalid_at, Some(t(30)));
    assert_eq!(
        store.fact(lyon.fact().id).await.unwrap().expired_at,
        None,
        "the current value stays current"
    );

    // Free-text facts de-duplicate on their normalised text.
    let note = NewFact::new(me.account, mine.clone(), "", "", "Allergic to peanuts");
    assert_eq!(
        store.record_fact(note.clone(), t(50)).await.unwrap().kind(),
        "added"
    );
    let mut shout = note;
    shout.value = "ALLERGIC to  peanuts".into();
    assert_eq!(
        store.record_fact(shout, t(51)).await.unwrap().kind(),
        "duplicate"
    );

    let visible = store
        .facts(&Visibility::user_only(me.account, me.user), false)
        .await
        .unwrap();
    let values: Vec<&str> = visible.iter().map(|f| f.value.as_str()).collect();
    assert_eq!(values, vec!["Lyon", "Allergic to peanuts"]);
    let all = store
        .facts(&Visibility::user_only(me.account, me.user), true)
        .await
        .unwrap();
    assert_eq!(all.len(), 4, "history keeps Paris and Nice");

    let history = store.fact_history(paris.fact().id).await.unwrap();
    let kinds: Vec<FactChangeKind> = history.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, vec![FactChangeKind::Add, FactChangeKind::Supersede]);
    assert_eq!(history[0].actor, FactActor::System);

    // Out-of-range confidence is refused and writes nothing.
    let mut bad = triple(&me, mine, "Ada", "likes", "tea");
    bad.confidence = 1.5;
    assert!(matches!(
        store.record_fact(bad, t(60)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .facts(&Visibility::user_only(me.account, me.user), true)
            .await
            .unwrap()
            .len(),
        4,
        "the refused fact left nothing"
    );

    // An import is one transaction: reconciled fact by fact, and all or nothing.
    let other = principal();
    let theirs = FactOwner::User(other.user);
    let batch = vec![
        triple(&other, theirs.clone(), "Bo", "lives in", "Oslo"),
        triple(&other, theirs.clone(), "Bo", "lives in", "Oslo"),
        triple(&other, theirs.clone(), "Bo", "lives in", "Bergen"),
    ];
    let writes = store.import_facts(batch, t(70)).await.unwrap();
    let kinds: Vec<&str> = writes.iter().map(FactWrite::kind).collect();
    assert_eq!(kinds, vec!["added", "duplicate", "superseded"]);
    let mut bad = triple(&other, theirs.clone(), "Bo", "likes", "skiing");
    bad.confidence = -0.5;
    let batch = vec![triple(&other, theirs.clone(), "Bo", "plays", "chess"), bad];
    assert!(store.import_facts(batch, t(80)).await.is_err());
    let kept = store
        .facts(&Visibility::user_only(other.account, other.user), true)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2, "the failed batch wrote nothing: {kept:?}");
}

pub async fn every_fact_query_applies_visibility<S: Store>(store: S) {
    let me = principal();
    let team = TeamId::new();
    let me = me.with_team(team);
    let agent = AgentId::new("helper");
    let neighbour = Principal::new(me.account, UserId::new());
    let stranger = principal();
    let owners = [
        (me.account, FactOwner::Account, true),
        (me.account, FactOwner::Agent(agent.clone()), true),
        (me.account, FactOwner::Agent(AgentId::new("other")), false),
        (me.account, FactOwner::Team(team), true),
        (me.account, FactOwner::Team(TeamId::new()), false),
        (me.account, FactOwner::User(me.user), true),
        (me.account, FactOwner::User(neighbour.user), false),
        (stranger.account, FactOwner::Account, false),
        (stranger.account, FactOwner::Agent(agent.clone()), false),
        (stranger.account, FactOwner::User(me.user), false),
    ];
    let embedder = OfflineEmbedder::new(16);
    let mut expected = Vec::new();
    for (i, (account, owner, seen)) in owners.iter().enumerate() {
        let mut f = NewFact::new(*account, owner.clone(), "", "", format!("secret code w{i}"));
        f.embedding = embedder.embed_one(&f.value);
        let w = store.record_fact(f, t(i as i64)).await.unwrap();
        if *seen {
            expected.push(w.fact().id);
        }
    }
    let v = Visibility::of(&me, &agent);
    let listed: Vec<FactId> = store
        .facts(&v, true)
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, expected);
    // Every fact's own word is in the question, so each visible one is a
    // keyword match (and each invisible one would be, were it not filtered).
    let question = (0..owners.len())
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut query = FactQuery::new(
        v.clone(),
        question.as_str(),
        Some(embedder.embed_one("secret code")),
        50,
    );
    query.candidates = 50;
    let found = store.fact_candidates(&query).await.unwrap();
    for c in found
        .vector
        .iter()
        .chain(&found.keyword)
        .chain(&found.rivals)
    {
        assert!(v.sees(&c.fact), "{:?} leaked", c.fact.owner);
    }
    assert_eq!(found.vector.len(), expected.len());
    assert_eq!(found.keyword.len(), expected.len());
    let hits = store.search_facts(&query).await.unwrap();
    assert_eq!(hits.len(), expected.len());
    assert!(hits.iter().all(|h| v.sees(&h.fact)));
    // Nothing at all for a visibility that sees nothing.
    let empty = Visibility {
        account_layer: false,
        agent: None,
        teams: vec![],
        user: None,
        ..v
    };
    assert!(store.facts(&empty, true).await.unwrap().is_empty());
    query.visibility = empty;
    assert!(store.search_facts(&query).await.unwrap().is_empty());
}

pub async fn fact_search_ranks_and_resolves_conflicts_by_precedence<S: Store>(store: S) {
    let me = principal();
    let agent = AgentId::new("helper");
    let e = OfflineEmbedder::default();
    let add = |owner: FactOwner, s: &str, p: &str, v: &str, at: i64| {
        let mut f = NewFact::new(me.account, owner, s, p, v);
        f.embedding = e.embed_one(&f.text());
        let store = &store;
        async move { store.record_fact(f, t(at)).await.unwrap().fact().clone() }
    };
    let account_tone = add(FactOwner::Account, "reply", "tone", "formal", 1).await;
    let user_tone = add(FactOwner::User(me.user), "reply", "tone", "casual", 2).await;
    add(
        FactOwner::User(me.user),
        "Ada",
        "favourite drink",
        "green tea",
        3,
    )
    .await;
    add(
        FactOwner::Agent(agent.clone()),
        "office",
        "opens at",
        "9 am",
        4,
    )
    .await;
    let v = Visibility::of(&me, &agent);
    let search = |text: &str| {
        let q = FactQuery::new(v.clone(), text, Some(e.embed_one(text)), 3);
        let store = &store;
        async move { store.search_facts(&q).await.unwrap() }
    };
    let hits = search("what drink does Ada like? tea").await;
    assert_eq!(hits[0].fact.value, "green tea");
    assert!(hits[0].vector_rank.is_some() && hits[0].keyword_rank.is_some());

    let hits = search("reply tone").await;
    let tones: Vec<&str> = hits
        .iter()
        .filter(|h| h.fact.predicate == "tone")
        .map(|h| h.fact.value.as_str())
        .collect();
    assert_eq!(
        tones,
        vec!["casual"],
        "the user layer wins an unlocked conflict"
    );

    store
        .curate_fact(
            account_tone.id,
            Curation::lock(true),
            FactActor::User(me.user),
            t(5),
        )
        .await
        .unwrap();
    let hits = search("reply tone").await;
    let tones: Vec<&str> = hits
        .iter()
        .filter(|h| h.fact.predicate == "tone")
        .map(|h| h.fact.value.as_str())
        .collect();
    assert_eq!(tones, vec!["formal"], "a locked fact wins every conflict");

    // Retracted facts leave search but stay in history.
    store
        .curate_fact(
            user_tone.id,
            Curation::retract(t(6)),
            FactActor::User(me.user),
            t(6),
        )
        .await
        .unwrap();
    let retracted = store.fact(user_tone.id).await.unwrap();
    assert_eq!(
        (retracted.invalid_at, retracted.expired_at),
        (Some(t(6)), Some(t(6)))
    );
    let kinds: Vec<FactChangeKind> = store
        .fact_history(account_tone.id)
        .await
        .unwrap()
        .iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, vec![FactChangeKind::Add, FactChangeKind::Curate]);
    let mut q = FactQuery::new(v.clone(), "casual", None, 5);
    assert!(store.search_facts(&q).await.unwrap().is_empty());
    q.include_history = true;
    assert_eq!(store.search_facts(&q).await.unwrap().len(), 1);

    // A locked slot refuses an unlocked write in the same owner.
    let mut change = NewFact::new(me.account, FactOwner::Account, "reply", "tone", "chatty");
    change.embedding = e.embed_one("reply tone chatty");
    assert!(matches!(
        store.record_fact(change, t(7)).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn deleting_facts_keeps_only_content_free_history<S: Store>(store: S) {
    let me = principal();
    let other = Principal::new(me.account, UserId::new());
    let e = OfflineEmbedder::default();
    let mut ids = Vec::new();
    for (p, v) in [
        (&me, "Ada's passport number is X123"),
        (&me, "Ada likes jazz"),
        (&other, "Bo likes jazz"),
    ] {
        let mut f = NewFact::new(p.account, FactOwner::User(p.user), "", "", v);
        f.embedding = e.embed_one(v);
        ids.push(store.record_fact(f, t(1)).await.unwrap().fact().id);
    }
    let report = store.forget_user(me.account, me.user).await.unwrap();
    assert_eq!(report.facts, 2);
    assert!(matches!(
        store.fact(ids[0]).await,
        Err(StoreError::NotFound { .. })
    ));
    let history = store.fact_history(ids[0]).await.unwrap();
    assert_eq!(history.last().unwrap().kind, FactChangeKind::Delete);
    assert!(
        !serde_json::to_string(&history).unwrap().contains("X123"),
        "history holds no content"
    );
    let jazz_of = |p: &Principal| {
        let q = FactQuery::new(
            Visibility::user_only(p.account, p.user),
            "jazz",
            Some(e.embed_one("jazz")),
            5,
        );
        let store = &store;
        async move { store.search_facts(&q).await.unwrap() }
    };
    assert!(jazz_of(&me).await.is_empty(), "gone from both indexes");
    assert_eq!(jazz_of(&other).await.len(), 1, "others keep theirs");
    assert_eq!(
        store
            .delete_facts(other.account, &FactOwner::User(other.user), t(2))
            .await
            .unwrap(),
        1
    );
}
