//! Checks of knowledge facts: reconciliation, bi-temporal history,
//! visibility inside every query, search, curation and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;
use crate::knowledge::{Cardinality, Curation, FactChangeKind, FactQuery, Period};

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
        // A reply has one tone at a time (as an account would declare it).
        f.cardinality = (p == "tone").then_some(Cardinality::Single);
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
    change.cardinality = Some(Cardinality::Single);
    assert!(matches!(
        store.record_fact(change, t(7)).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Midnight UTC of a day of 2026 (`month`, `day`).
fn day_of_2026(month: i64, day: i64) -> Timestamp {
    Timestamp::from_millis(crate::time::days_from_civil(2026, month, day) * crate::time::DAY_MS)
}

pub async fn a_question_naming_a_period_finds_what_was_said_then<S: Store>(store: S) {
    let me = principal();
    let other = Principal::new(me.account, UserId::new());
    let e = OfflineEmbedder::default();
    let said = |p: &Principal, text: &str, month: i64, day: i64| {
        let mut f = NewFact::new(p.account, FactOwner::User(p.user), "Maya", "said", text);
        f.embedding = e.embed_one(&f.text());
        f.valid_at = Some(day_of_2026(month, day));
        f
    };
    let facts = vec![
        said(&me, "we adopted a greyhound called Pepper", 1, 19),
        said(&me, "my knee started hurting on the long run", 2, 14),
        said(&me, "Jonas cooked jollof rice", 2, 14),
        said(&me, "I started Portuguese lessons", 2, 16),
        said(&me, "the physio says it is IT band syndrome", 3, 22),
        // Said in February too, by another user: never visible.
        said(&other, "my cat knocked over a plant", 2, 15),
    ];
    store
        .import_facts(facts, Timestamp::from_millis(1))
        .await
        .unwrap();
    let v = Visibility::user_only(me.account, me.user);
    let text = "what did I tell you about in the middle of February?";
    let asked = day_of_2026(7, 2);
    for embedding in [Some(e.embed_one(text)), None] {
        let q = FactQuery::new(v.clone(), text, embedding.clone(), 10).asked_at(asked);
        assert_eq!(
            q.during,
            Some(Period::new(day_of_2026(2, 10), day_of_2026(2, 21)))
        );
        let found = store.fact_candidates(&q).await.unwrap();
        let mut then: Vec<&str> = found.during.iter().map(|c| c.fact.value.as_str()).collect();
        then.sort_unstable();
        assert_eq!(
            then,
            vec![
                "I started Portuguese lessons",
                "Jonas cooked jollof rice",
                "my knee started hurting on the long run"
            ],
            "the visible facts of the period, and only they (embedding: {})",
            embedding.is_some()
        );
        if embedding.is_none() {
            let order: Vec<i64> = found
                .during
                .iter()
                .map(|c| c.fact.valid_at.as_millis())
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] >= w[1]),
                "newest first without an embedding"
            );
        }
        // Ranked, the period's facts come first: the question shares no
        // word with them.
        let hits = store.search_facts(&q).await.unwrap();
        assert!(
            hits.iter()
                .take(3)
                .all(|h| Period::new(day_of_2026(2, 10), day_of_2026(2, 21))
                    .contains(h.fact.valid_at)),
            "{hits:?}"
        );
    }
    // A question naming no period brings no third list.
    let q = FactQuery::new(v, "where is Pepper from?", None, 10).asked_at(asked);
    assert_eq!(q.during, None);
    assert!(store.fact_candidates(&q).await.unwrap().during.is_empty());
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

/// The current values of `owner`, sorted.
async fn current_values<S: Store>(store: &S, account: AccountId, owner: &FactOwner) -> Vec<String> {
    let mut values: Vec<String> = store
        .facts(&Visibility::only(account, owner), false)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.text())
        .collect();
    values.sort();
    values
}

pub async fn many_valued_facts_accumulate<S: Store>(store: S) {
    let me = principal();
    let mine = FactOwner::User(me.user);
    for (i, drink) in ["tea", "jazz", "long walks"].iter().enumerate() {
        let w = store
            .record_fact(
                triple(&me, mine.clone(), "Ada", "likes", drink),
                t(i as i64),
            )
            .await
            .unwrap();
        assert_eq!(w.kind(), "added", "a new value of `likes` is added: {w:?}");
        assert_eq!(w.fact().cardinality, Cardinality::Many);
    }
    // The same value, normalised, and a near duplicate by embedding (the
    // offline embedder ignores punctuation) are not added again.
    let same = store
        .record_fact(triple(&me, mine.clone(), "ada", "Likes", " TEA "), t(10))
        .await
        .unwrap();
    assert_eq!(same.kind(), "duplicate");
    let near = store
        .record_fact(triple(&me, mine.clone(), "Ada", "likes", "jazz!"), t(11))
        .await
        .unwrap();
    assert_eq!(near.kind(), "duplicate", "a near duplicate: {near:?}");
    // Free text accumulates and de-duplicates the same way.
    for (i, line) in ["Ada said hello", "Ada said hello!", "Ada said bye"]
        .iter()
        .enumerate()
    {
        let mut f = NewFact::new(me.account, mine.clone(), "", "", *line);
        f.embedding = OfflineEmbedder::new(16).embed_one(line);
        let w = store.record_fact(f, t(20 + i as i64)).await.unwrap();
        assert_eq!(w.kind(), if i == 1 { "duplicate" } else { "added" });
    }
    assert_eq!(
        current_values(&store, me.account, &mine).await,
        vec![
            "Ada likes jazz",
            "Ada likes long walks",
            "Ada likes tea",
            "Ada said bye",
            "Ada said hello"
        ]
    );
    assert_eq!(
        store
            .facts(&Visibility::user_only(me.account, me.user), true)
            .await
            .unwrap()
            .len(),
        5,
        "nothing was superseded"
    );
    // Search shows every value of a many-valued slot, not one winner; the
    // same value in a broader layer still yields to the user's.
    let mut team_tea = triple(&me, FactOwner::Account, "Ada", "likes", "tea");
    team_tea.confidence = 0.5;
    store.record_fact(team_tea, t(30)).await.unwrap();
    let e = OfflineEmbedder::new(16);
    let mut q = FactQuery::new(
        Visibility::of(&me, &AgentId::new("agent")),
        "what does Ada like",
        Some(e.embed_one("what does Ada like")),
        10,
    );
    q.mmr_lambda = 1.0;
    let hits = store.search_facts(&q).await.unwrap();
    let mut liked: Vec<(&str, Layer)> = hits
        .iter()
        .filter(|h| h.fact.predicate == "likes")
        .map(|h| (h.fact.value.as_str(), h.fact.layer()))
        .collect();
    liked.sort();
    assert_eq!(
        liked,
        vec![
            ("jazz", Layer::User),
            ("long walks", Layer::User),
            ("tea", Layer::User)
        ]
    );
    // What the writer declares single-valued supersedes like `lives in`.
    let mut red = triple(&me, mine.clone(), "Ada", "favourite colour", "red");
    red.cardinality = Some(Cardinality::Single);
    store.record_fact(red, t(40)).await.unwrap();
    let mut blue = triple(&me, mine.clone(), "Ada", "favourite colour", "blue");
    blue.cardinality = Some(Cardinality::Single);
    let w = store.record_fact(blue, t(41)).await.unwrap();
    assert_eq!(w.kind(), "superseded");
    assert_eq!(w.fact().cardinality, Cardinality::Single);
}

pub async fn a_single_valued_fact_supersedes_only_its_slot<S: Store>(store: S) {
    let me = principal().with_team(TeamId::new());
    let mine = FactOwner::User(me.user);
    let team = FactOwner::Team(me.team.unwrap());
    let paris = store
        .record_fact(triple(&me, mine.clone(), "Ada", "lives in", "Paris"), t(1))
        .await
        .unwrap();
    assert_eq!(paris.fact().cardinality, Cardinality::Single);
    for (owner, s, p, v) in [
        (&mine, "Ada", "likes", "Paris"),
        (&mine, "Ada", "works at", "Acme"),
        (&mine, "Bo", "lives in", "Rome"),
        (&team, "Ada", "lives in", "Nice"),
    ] {
        store
            .record_fact(triple(&me, owner.clone(), s, p, v), t(2))
            .await
            .unwrap();
    }
    let lyon = store
        .record_fact(triple(&me, mine.clone(), "Ada", "Lives_In", "Lyon"), t(3))
        .await
        .unwrap();
    let FactWrite::Superseded { replaced, .. } = &lyon else {
        panic!("a new value of `lives in` supersedes: {lyon:?}");
    };
    let replaced: Vec<FactId> = replaced.iter().map(|f| f.id).collect();
    assert_eq!(replaced, vec![paris.fact().id], "only its own slot");
    assert_eq!(
        current_values(&store, me.account, &mine).await,
        vec![
            "Ada Lives_In Lyon",
            "Ada likes Paris",
            "Ada works at Acme",
            "Bo lives in Rome"
        ]
    );
    assert_eq!(
        current_values(&store, me.account, &team).await,
        vec!["Ada lives in Nice"],
        "another owner's slot is its own"
    );
}

pub async fn an_update_supersedes_only_the_named_fact<S: Store>(store: S) {
    let me = principal();
    let mine = FactOwner::User(me.user);
    let mut ids = Vec::new();
    for thing in ["tea", "coffee", "jazz"] {
        let w = store
            .record_fact(triple(&me, mine.clone(), "Ada", "likes", thing), t(1))
            .await
            .unwrap();
        ids.push(w.fact().id);
    }
    let mut update = triple(&me, mine.clone(), "Ada", "likes", "green tea");
    update.replaces = Some(ids[0]);
    let w = store.record_fact(update, t(2)).await.unwrap();
    let FactWrite::Superseded { fact, replaced } = &w else {
        panic!("an update supersedes the fact it names: {w:?}");
    };
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].id, ids[0]);
    assert_eq!(replaced[0].superseded_by, Some(fact.id));
    assert_eq!(replaced[0].invalid_at, Some(t(2)));
    assert_eq!(
        current_values(&store, me.account, &mine).await,
        vec!["Ada likes coffee", "Ada likes green tea", "Ada likes jazz"]
    );
    // An update may cross slots: what it names is what it replaces.
    let mut moved = triple(&me, mine.clone(), "Ada", "drinks", "coffee no more");
    moved.replaces = Some(ids[1]);
    assert_eq!(
        store.record_fact(moved, t(3)).await.unwrap().kind(),
        "superseded"
    );
    assert!(!store.fact(ids[1]).await.unwrap().is_current());
    assert!(store.fact(ids[2]).await.unwrap().is_current());

    // Naming a fact that is not a current fact of the owner writes nothing.
    let other = Principal::new(me.account, UserId::new());
    let theirs = store
        .record_fact(
            triple(&other, FactOwner::User(other.user), "Bo", "likes", "rain"),
            t(4),
        )
        .await
        .unwrap();
    let before = store
        .facts(&Visibility::user_only(me.account, me.user), true)
        .await
        .unwrap()
        .len();
    for named in [theirs.fact().id, ids[0], FactId::new()] {
        let mut wrong = triple(&me, mine.clone(), "Ada", "likes", "snow");
        wrong.replaces = Some(named);
        assert!(
            matches!(
                store.record_fact(wrong, t(5)).await,
                Err(StoreError::NotFound { .. })
            ),
            "naming {named} is refused"
        );
    }
    assert!(store.fact(theirs.fact().id).await.unwrap().is_current());
    assert_eq!(
        store
            .facts(&Visibility::user_only(me.account, me.user), true)
            .await
            .unwrap()
            .len(),
        before,
        "the refused updates wrote nothing"
    );
    // A locked fact is not replaced by an unlocked update.
    store
        .curate_fact(ids[2], Curation::lock(true), FactActor::User(me.user), t(6))
        .await
        .unwrap();
    let mut unlock = triple(&me, mine.clone(), "Ada", "likes", "silence");
    unlock.replaces = Some(ids[2]);
    assert!(matches!(
        store.record_fact(unlock, t(7)).await,
        Err(StoreError::Conflict(_))
    ));
    // Repeating the named fact's value changes nothing.
    let mut same = triple(&me, mine.clone(), "Ada", "likes", "Jazz");
    same.replaces = Some(ids[2]);
    assert_eq!(
        store.record_fact(same, t(8)).await.unwrap().kind(),
        "duplicate"
    );
}

/// Facts as a store from before cardinality (SQLite schema 10, PostgreSQL 5) holds them
/// after its users said: Ada likes tea, then jazz, then tea again (each
/// superseding the one before, as every slot held one value); Ada lives in
/// Paris, then Lyon; a free-text note; Ada visited Rome, then retracted.
/// Store crates write these rows with their own SQL into a database made
/// at that version, open it (which migrates it) and run
/// [`a_migrated_store_keeps_every_fact`].
pub fn legacy_facts() -> Vec<Fact> {
    let me = Principal::new(
        AccountId::from_uuid(uuid::Uuid::from_u128(0xacc0)),
        UserId::from_uuid(uuid::Uuid::from_u128(0xada)),
    );
    let mine = FactOwner::User(me.user);
    let ids: Vec<FactId> = (1..=7u128)
        .map(|i| FactId::from_uuid(uuid::Uuid::from_u128(0xfac7_0000 + i)))
        .collect();
    let fact = |i: usize, s: &str, p: &str, v: &str, by: Option<usize>, retracted: bool| Fact {
        id: ids[i],
        account: me.account,
        owner: mine.clone(),
        subject: s.into(),
        predicate: p.into(),
        value: v.into(),
        confidence: 0.9,
        provenance: Provenance::Curated,
        locked: false,
        cardinality: Cardinality::Many,
        valid_at: t(i as i64 * 10),
        invalid_at: by.map(|b| t(b as i64 * 10)).or(retracted.then(|| t(65))),
        created_at: t(i as i64 * 10),
        expired_at: by.map(|b| t(b as i64 * 10)).or(retracted.then(|| t(65))),
        superseded_by: by.map(|b| ids[b]),
    };
    vec![
        fact(0, "Ada", "likes", "tea", Some(1), false),
        fact(1, "Ada", "likes", "jazz", Some(2), false),
        fact(2, "Ada", "likes", "tea", None, false),
        fact(3, "Ada", "lives in", "Paris", Some(4), false),
        fact(4, "Ada", "lives in", "Lyon", None, false),
        fact(5, "", "", "Allergic to peanuts", None, false),
        fact(6, "Ada", "visited", "Rome", None, true),
    ]
}

/// Checks a store opened on the [`legacy_facts`] of a database from before cardinality:
/// every fact is still there with its content; `jazz` is current again (a
/// `restore` entry says why); the older `tea` stays superseded (its value is
/// current already), as do Paris (`lives in` holds one value) and the
/// retracted Rome; cardinalities are resolved.
pub async fn a_migrated_store_keeps_every_fact<S: Store>(store: S, legacy: &[Fact]) {
    let account = legacy[0].account;
    let owner = legacy[0].owner.clone();
    let all = store
        .facts(&Visibility::only(account, &owner), true)
        .await
        .unwrap();
    assert_eq!(all.len(), legacy.len(), "every fact is kept: {all:?}");
    for old in legacy {
        let now = store.fact(old.id).await.unwrap();
        assert_eq!(
            (&now.subject, &now.predicate, &now.value),
            (&old.subject, &old.predicate, &old.value)
        );
    }
    let current: Vec<FactId> = all
        .iter()
        .filter(|f| f.is_current())
        .map(|f| f.id)
        .collect();
    let expected: Vec<FactId> = [1, 2, 4, 5].iter().map(|&i| legacy[i].id).collect();
    assert_eq!(
        current, expected,
        "jazz restored; tea, Lyon and the note stay"
    );
    let jazz = store.fact(legacy[1].id).await.unwrap();
    assert_eq!(
        (jazz.invalid_at, jazz.expired_at, jazz.superseded_by),
        (None, None, None)
    );
    let kinds: Vec<FactChangeKind> = store
        .fact_history(jazz.id)
        .await
        .unwrap()
        .iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds.last(), Some(&FactChangeKind::Restore));
    assert_eq!(
        store.fact(legacy[4].id).await.unwrap().cardinality,
        Cardinality::Single
    );
    assert_eq!(jazz.cardinality, Cardinality::Many);
    // After the migration, reconciliation follows cardinality.
    let mut more = triple(
        &Principal::new(account, UserId::from_uuid(uuid::Uuid::from_u128(0xada))),
        owner.clone(),
        "Ada",
        "likes",
        "chess",
    );
    more.embedding.clear();
    assert_eq!(
        store.record_fact(more, t(100)).await.unwrap().kind(),
        "added"
    );
}
