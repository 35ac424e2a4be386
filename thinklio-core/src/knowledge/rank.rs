//! Ranking of search candidates (fusion, precedence, diversity) and fitting
//! facts into a token budget. Pure functions: every store ranks the same way.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::{Candidate, Candidates, Fact, FactHit, FactQuery, cosine};
use crate::ids::FactId;

/// How [`rank`] fuses a store's candidate lists.
///
/// Each list gives a candidate at rank `r` (0-based) `weight / (k + r + 1)`
/// (weighted reciprocal rank fusion); then each candidate gains
/// `neighbour_weight` times the best fused score among its *neighbours* —
/// other candidates of the same owner valid within `neighbour_window` of
/// it, but not at the same instant — so that a turn of a conversation is
/// lifted by the turn next to it (an answer by the question it answers).
/// Facts valid at one instant (those of one message, or of one import
/// without times) do not lift each other. The defaults are those the
/// conversational memory benchmark supports (`docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Fusion {
    /// The constant `k` of reciprocal rank fusion: smaller trusts the top
    /// of each list more.
    pub k: f32,
    /// The weight of the vector list.
    pub vector_weight: f32,
    /// The weight of the keyword list.
    pub keyword_weight: f32,
    /// The weight of the list of facts from the period the question names.
    pub during_weight: f32,
    /// The share of its best neighbour's score a candidate gains (0: none).
    pub neighbour_weight: f32,
    /// Facts of one owner valid this close together are neighbours.
    pub neighbour_window: std::time::Duration,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            k: 10.0,
            vector_weight: 2.0,
            keyword_weight: 1.0,
            during_weight: 2.0,
            neighbour_weight: 0.5,
            neighbour_window: std::time::Duration::from_secs(120),
        }
    }
}

impl Fusion {
    /// Plain reciprocal rank fusion with `k = 60` and equal weights, no
    /// neighbours: the fusion of the original paper (and of this crate
    /// before the conversational benchmark).
    pub fn reciprocal() -> Self {
        Self {
            k: 60.0,
            vector_weight: 1.0,
            keyword_weight: 1.0,
            during_weight: 1.0,
            neighbour_weight: 0.0,
            neighbour_window: std::time::Duration::ZERO,
        }
    }
}

/// Ranks a store's candidates for `query`:
/// 1. weighted reciprocal rank fusion of the vector, keyword and period
///    lists, and the lift of neighbours ([`Fusion`]);
/// 2. layer precedence: of current facts with the same
///    [`conflict_key`](Fact::conflict_key) (one single-valued slot, or one
///    value of a many-valued slot), only the winner of [`precedence`] stays
///    (taking the best score of its key);
/// 3. MMR: the `k` hits are picked greedily by
///    `λ·relevance − (1−λ)·max similarity to the hits already picked`
///    (with λ = 1, the default, simply the best `k`).
pub fn rank(query: &FactQuery, candidates: Candidates) -> Vec<FactHit> {
    struct Entry {
        candidate: Candidate,
        score: f32,
        vector_rank: Option<usize>,
        keyword_rank: Option<usize>,
    }
    let fusion = &query.fusion;
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<FactId, usize> = HashMap::new();
    let lists = [
        (candidates.vector, fusion.vector_weight, Some(true)),
        (candidates.keyword, fusion.keyword_weight, Some(false)),
        (candidates.during, fusion.during_weight, None),
    ];
    for (list, weight, is_vector) in lists {
        for (r, c) in list.into_iter().enumerate() {
            let add = weight / (fusion.k.max(0.0) + r as f32 + 1.0);
            let i = *index.entry(c.fact.id).or_insert_with(|| {
                entries.push(Entry {
                    candidate: c.clone(),
                    score: 0.0,
                    vector_rank: None,
                    keyword_rank: None,
                });
                entries.len() - 1
            });
            let e = &mut entries[i];
            e.score += add;
            if e.candidate.similarity.is_none() {
                e.candidate.similarity = c.similarity;
            }
            match is_vector {
                Some(true) => e.vector_rank = Some(r),
                Some(false) => e.keyword_rank = Some(r),
                None => {}
            }
        }
    }
    if fusion.neighbour_weight > 0.0 {
        let window = i64::try_from(fusion.neighbour_window.as_millis()).unwrap_or(i64::MAX);
        let scores: Vec<f32> = entries.iter().map(|e| e.score).collect();
        // Sorted by (owner, time), each candidate's neighbours are a run
        // around it: no pair is compared twice.
        let keys: Vec<(String, i64)> = entries
            .iter()
            .map(|e| {
                let f = &e.candidate.fact;
                (f.owner.key(), f.valid_at.as_millis())
            })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        let mut lift = vec![0.0_f32; entries.len()];
        for (at, &i) in order.iter().enumerate() {
            let (owner, t) = &keys[i];
            for &j in &order[at + 1..] {
                let (other, u) = &keys[j];
                if other != owner || u.saturating_sub(*t) > window {
                    break;
                }
                if u == t {
                    // Said at the same moment (one message's facts, one
                    // import's batch): not turns of a conversation.
                    continue;
                }
                lift[i] = lift[i].max(scores[j]);
                lift[j] = lift[j].max(scores[i]);
            }
        }
        for (e, l) in entries.iter_mut().zip(lift) {
            e.score += fusion.neighbour_weight * l;
        }
    }

    // Precedence: one fact per slot among current facts.
    let mut winners: HashMap<String, Candidate> = HashMap::new();
    for c in entries
        .iter()
        .map(|e| &e.candidate)
        .chain(candidates.rivals.iter())
    {
        if !c.fact.is_current() {
            continue;
        }
        if let Some(slot) = c.fact.conflict_key() {
            match winners.get(&slot) {
                Some(w) if precedence(&w.fact, &c.fact) != Ordering::Less => {}
                _ => {
                    winners.insert(slot, c.clone());
                }
            }
        }
    }
    let mut ranked: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut slot_at: HashMap<String, usize> = HashMap::new();
    entries.sort_by(|a, b| b.score.total_cmp(&a.score));
    for mut e in entries {
        if !query.include_history && !e.candidate.fact.is_current() {
            continue;
        }
        let slot = e
            .candidate
            .fact
            .conflict_key()
            .filter(|_| e.candidate.fact.is_current());
        if let Some(slot) = slot {
            if slot_at.contains_key(&slot) {
                continue; // the slot already has its (better-scored) entry
            }
            if let Some(w) = winners.get(&slot)
                && w.fact.id != e.candidate.fact.id
            {
                e.candidate = w.clone();
                e.vector_rank = None;
                e.keyword_rank = None;
            }
            slot_at.insert(slot, ranked.len());
        }
        ranked.push(e);
    }

    // MMR over the fused list.
    let top = ranked.first().map(|e| e.score).unwrap_or(0.0);
    let bottom = ranked.last().map(|e| e.score).unwrap_or(0.0);
    let span = (top - bottom).max(f32::EPSILON);
    let lambda = query.mmr_lambda.clamp(0.0, 1.0);
    // `redundancy[i]`: the highest similarity of candidate `i` to any hit
    // picked so far, updated with each pick (one cosine per candidate per
    // pick rather than one per pair of picks).
    let mut redundancy = vec![0.0_f32; ranked.len()];
    let mut taken = vec![false; ranked.len()];
    let mut order: Vec<usize> = Vec::with_capacity(query.k.min(ranked.len()));
    while order.len() < query.k && order.len() < ranked.len() {
        let mut best = None;
        let mut best_value = f32::NEG_INFINITY;
        for (i, e) in ranked.iter().enumerate() {
            if taken[i] {
                continue;
            }
            let relevance = if ranked.len() == 1 {
                1.0
            } else {
                (e.score - bottom) / span
            };
            let value = lambda * relevance - (1.0 - lambda) * redundancy[i];
            if value > best_value {
                best_value = value;
                best = Some(i);
            }
        }
        let Some(best) = best else { break };
        taken[best] = true;
        order.push(best);
        if lambda < 1.0 {
            let picked = &ranked[best].candidate.embedding;
            for (i, e) in ranked.iter().enumerate() {
                if !taken[i] {
                    redundancy[i] = redundancy[i].max(cosine(picked, &e.candidate.embedding));
                }
            }
        }
    }
    let mut slots: Vec<Option<Entry>> = ranked.into_iter().map(Some).collect();
    let picked: Vec<Entry> = order.into_iter().filter_map(|i| slots[i].take()).collect();
    picked
        .into_iter()
        .map(|e| FactHit {
            fact: e.candidate.fact,
            score: e.score,
            vector_rank: e.vector_rank,
            keyword_rank: e.keyword_rank,
        })
        .collect()
}

/// Orders two conflicting facts: `Greater` if `a` wins. A locked fact wins;
/// then the more specific layer (user over team over agent over account);
/// then the newer `valid_at`; then the higher confidence; then the newer
/// record.
pub fn precedence(a: &Fact, b: &Fact) -> Ordering {
    a.locked
        .cmp(&b.locked)
        .then(a.layer().cmp(&b.layer()))
        .then(a.valid_at.cmp(&b.valid_at))
        .then(a.confidence.total_cmp(&b.confidence))
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}

/// Tokens a text takes, estimated: one per 4 bytes of UTF-8, rounded up,
/// plus one per line for the separator. For English text with the BPE
/// tokenizers of current model families this over-counts slightly (about
/// 4.2 bytes per token is typical), so a budget computed with it is kept.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4) + 1
}

/// The hits that fit in `budget` tokens, most relevant first (the order
/// given): a hit that does not fit is skipped and smaller ones after it may
/// still fit.
pub fn fit_to_budget(hits: &[FactHit], budget: usize) -> Vec<&FactHit> {
    let mut used = 0;
    let mut out = Vec::new();
    for h in hits {
        let cost = estimate_tokens(&h.fact.text());
        if used + cost <= budget {
            used += cost;
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, AgentId, UserId};
    use crate::knowledge::{FactOwner, Provenance, Visibility};
    use crate::time::Timestamp;

    fn fact(owner: FactOwner, subject: &str, value: &str, valid: i64) -> Fact {
        Fact {
            id: FactId::new(),
            account: AccountId::from_uuid(uuid::Uuid::from_u128(1)),
            owner,
            subject: subject.into(),
            predicate: if subject.is_empty() { "" } else { "is" }.into(),
            value: value.into(),
            confidence: 0.9,
            provenance: Provenance::Curated,
            locked: false,
            cardinality: crate::knowledge::Cardinality::Single,
            valid_at: Timestamp::from_millis(valid),
            invalid_at: None,
            created_at: Timestamp::from_millis(valid),
            expired_at: None,
            superseded_by: None,
        }
    }

    fn cand(f: &Fact, e: Vec<f32>) -> Candidate {
        Candidate {
            fact: f.clone(),
            embedding: e,
            similarity: None,
        }
    }

    fn query(k: usize) -> FactQuery {
        let v = Visibility::user_only(
            AccountId::from_uuid(uuid::Uuid::from_u128(1)),
            UserId::new(),
        );
        FactQuery::new(v, "q", None, k)
    }

    #[test]
    fn precedence_follows_lock_then_layer_then_time_then_confidence() {
        let user = fact(FactOwner::User(UserId::new()), "tone", "casual", 1);
        let mut account = fact(FactOwner::Account, "tone", "formal", 5);
        assert_eq!(precedence(&user, &account), Ordering::Greater);
        account.locked = true;
        assert_eq!(precedence(&user, &account), Ordering::Less);
        let agent_old = fact(FactOwner::Agent(AgentId::new("a")), "x", "1", 1);
        let agent_new = fact(FactOwner::Agent(AgentId::new("a")), "x", "2", 2);
        assert_eq!(precedence(&agent_new, &agent_old), Ordering::Greater);
        let mut sure = agent_old.clone();
        sure.confidence = 1.0;
        assert_eq!(precedence(&sure, &agent_old), Ordering::Greater);
    }

    #[test]
    fn fusion_rewards_facts_in_both_lists_and_precedence_replaces_losers() {
        let a = fact(FactOwner::Account, "", "alpha", 1);
        let b = fact(FactOwner::Account, "", "beta", 1);
        let c = fact(FactOwner::Account, "", "gamma", 1);
        let loser = fact(FactOwner::Account, "tone", "formal", 1);
        let winner = fact(FactOwner::User(UserId::new()), "tone", "casual", 1);
        let candidates = Candidates {
            vector: vec![
                cand(&a, vec![1.0, 0.0]),
                cand(&b, vec![0.0, 1.0]),
                cand(&loser, vec![]),
            ],
            keyword: vec![cand(&b, vec![0.0, 1.0]), cand(&c, vec![0.6, 0.8])],
            rivals: vec![cand(&winner, vec![])],
            ..Default::default()
        };
        let hits = rank(&query(10), candidates);
        assert_eq!(hits[0].fact.id, b.id, "in both lists, so first");
        let ids: Vec<FactId> = hits.iter().map(|h| h.fact.id).collect();
        assert!(ids.contains(&winner.id));
        assert!(!ids.contains(&loser.id));
        assert_eq!(hits.len(), 4);
    }

    #[test]
    fn a_turn_is_lifted_by_the_turn_next_to_it_but_not_by_facts_of_its_instant() {
        let me = FactOwner::User(UserId::new());
        let minute = 60_000;
        let question = fact(me.clone(), "", "where did you go on holiday?", 10 * minute);
        let others: Vec<Fact> = (0..4)
            .map(|i| {
                fact(
                    me.clone(),
                    "",
                    &format!("other {i}"),
                    (100 + 10 * i) * minute,
                )
            })
            .collect();
        let rank_of_answer = |answer_at: i64, owner: FactOwner| {
            let answer = fact(owner, "", "Lisbon, it was lovely", answer_at);
            let mut vector = vec![cand(&question, vec![])];
            vector.extend(others.iter().map(|o| cand(o, vec![])));
            vector.push(cand(&answer, vec![]));
            let hits = rank(
                &query(10),
                Candidates {
                    vector,
                    ..Default::default()
                },
            );
            hits.iter().position(|h| h.fact.id == answer.id)
        };
        assert_eq!(
            rank_of_answer(11 * minute, me.clone()),
            Some(1),
            "lifted by the question"
        );
        assert_eq!(
            rank_of_answer(10 * minute, me.clone()),
            Some(5),
            "the same instant: no lift"
        );
        assert_eq!(rank_of_answer(30 * minute, me), Some(5), "too far apart");
        let someone_else = FactOwner::User(UserId::new());
        assert_eq!(
            rank_of_answer(11 * minute, someone_else),
            Some(5),
            "another owner's"
        );
    }

    #[test]
    fn a_fact_of_the_named_period_is_fused_in_as_a_third_list() {
        let me = FactOwner::User(UserId::new());
        let a = fact(me.clone(), "", "a", 1);
        let b = fact(me.clone(), "", "b", 1);
        let then = fact(me, "", "said then", 1);
        let c = Candidates {
            vector: vec![cand(&a, vec![]), cand(&b, vec![]), cand(&then, vec![])],
            during: vec![cand(&then, vec![])],
            ..Default::default()
        };
        let hits = rank(&query(3), c.clone());
        assert_eq!(hits[0].fact.id, then.id);
        let mut plain = query(3);
        plain.fusion.during_weight = 0.0;
        assert_eq!(rank(&plain, c)[2].fact.id, then.id);
    }

    #[test]
    fn mmr_prefers_a_different_fact_over_a_near_copy() {
        let a = fact(FactOwner::Account, "", "a", 1);
        let a2 = fact(FactOwner::Account, "", "a again", 1);
        let other = fact(FactOwner::Account, "", "other", 1);
        let candidates = Candidates {
            vector: vec![
                cand(&a, vec![1.0, 0.0]),
                cand(&a2, vec![1.0, 0.01]),
                cand(&other, vec![0.0, 1.0]),
            ],
            ..Default::default()
        };
        let mut q = query(2);
        q.mmr_lambda = 0.5;
        let hits = rank(&q, candidates);
        assert_eq!(hits[0].fact.id, a.id);
        assert_eq!(hits[1].fact.id, other.id);
    }

    #[test]
    fn superseded_facts_are_dropped_unless_history_is_asked_for() {
        let mut old = fact(FactOwner::Account, "", "old", 1);
        old.expired_at = Some(Timestamp::from_millis(2));
        let c = Candidates {
            keyword: vec![cand(&old, vec![])],
            ..Default::default()
        };
        assert!(rank(&query(5), c.clone()).is_empty());
        let mut q = query(5);
        q.include_history = true;
        assert_eq!(rank(&q, c).len(), 1);
    }

    #[test]
    fn budget_skips_what_does_not_fit_and_keeps_order() {
        let long = fact(FactOwner::Account, "", &"x".repeat(400), 1);
        let short = fact(FactOwner::Account, "", "short", 1);
        let hits: Vec<FactHit> = [&long, &short]
            .iter()
            .map(|f| FactHit {
                fact: (*f).clone(),
                score: 1.0,
                vector_rank: None,
                keyword_rank: None,
            })
            .collect();
        let fitted = fit_to_budget(&hits, 20);
        assert_eq!(fitted.len(), 1);
        assert_eq!(fitted[0].fact.id, short.id);
        assert_eq!(fit_to_budget(&hits, 1000).len(), 2);
    }
}
