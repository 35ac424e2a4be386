//! How a new fact meets the facts its owner already holds: cardinality of
//! predicates, what a store must look up, and the one rule every store
//! applies in the transaction that records a fact.
//!
//! Most predicates hold many values at once (likes, visited, owns, said):
//! a new value is added beside the others unless it repeats one. Only
//! predicates that hold one value at a time (lives in, works at, is called)
//! let a newer value replace the older. An update that names the fact it
//! replaces (what the extractor answers when the user contradicts something
//! they said) supersedes that fact and nothing else.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Fact, NewFact, normalise};
use crate::ids::FactId;
use crate::store::{StoreError, StoreResult};
use crate::time::Timestamp;

/// How many values a predicate holds at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cardinality {
    /// One value at a time: a newer value supersedes the older ones of its
    /// slot (lives in, works at, is called).
    Single,
    /// Values accumulate (likes, visited, owns, said): the default.
    #[default]
    Many,
}

crate::step::str_enum!(Cardinality, "cardinality",
    Cardinality::Single => "single",
    Cardinality::Many => "many",
);

/// Predicates that hold one value at a time, as [`predicate_key`] writes
/// them. An account can declare others, or declare one of these many-valued
/// ([`AccountPolicy::cardinality`](crate::AccountPolicy::cardinality)).
pub const SINGLE_VALUED: &[&str] = &[
    "address",
    "age",
    "birthday",
    "born in",
    "born on",
    "email",
    "full name",
    "is called",
    "is married to",
    "is named",
    "job title",
    "lives at",
    "lives in",
    "name",
    "phone",
    "phone number",
    "prefers to be called",
    "pronouns",
    "time zone",
    "timezone",
    "works as",
    "works at",
    "works for",
];

/// Predicates that hold many values whatever a writer says (an extractor
/// that calls `likes` single-valued must not make a new like replace the
/// last), unless the account declares otherwise.
pub const MANY_VALUED: &[&str] = &[
    "dislikes",
    "enjoys",
    "friend",
    "has",
    "has a child named",
    "has a pet named",
    "hates",
    "is allergic to",
    "is friends with",
    "knows",
    "likes",
    "loves",
    "owns",
    "plays",
    "reads",
    "said",
    "speaks",
    "studied",
    "visited",
    "wants",
    "watched",
];

/// A predicate as cardinality rules compare it: lower case, `_` and `-` as
/// spaces, single spaces (`Lives_In` → `lives in`).
pub fn predicate_key(predicate: &str) -> String {
    predicate
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Cardinality {
    /// The cardinality of `predicate`: what the account declares for it
    /// first, then the built-in [`SINGLE_VALUED`] and [`MANY_VALUED`]
    /// lists, then what the writer (the extractor) says, else
    /// [`Cardinality::Many`].
    pub fn resolve(
        predicate: &str,
        declared: &BTreeMap<String, Cardinality>,
        said: Option<Cardinality>,
    ) -> Cardinality {
        let key = predicate_key(predicate);
        if let Some(c) = declared
            .iter()
            .find_map(|(p, c)| (predicate_key(p) == key).then_some(*c))
        {
            return c;
        }
        if SINGLE_VALUED.contains(&key.as_str()) {
            return Cardinality::Single;
        }
        if MANY_VALUED.contains(&key.as_str()) {
            return Cardinality::Many;
        }
        said.unwrap_or_default()
    }
}

/// Two facts' embeddings at least this similar (cosine) hold the same
/// thing: the newer is a duplicate of the older when their slot takes many
/// values, or when both are free text.
pub const NEAR_DUPLICATE: f32 = 0.95;

/// The current facts of the new fact's owner a store reads before it
/// records the fact, and hands to [`NewFact::reconcile`]. Exhaustive on
/// purpose: a new kind of lookup must fail to compile in every store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Every current fact of this slot (a single-valued triple).
    Slot(String),
    /// The current facts of this slot (`None`: free-text facts) whose
    /// normalised text ([`normalise`] of [`Fact::text`]) is `norm_text`, or
    /// whose embedding is at least [`NEAR_DUPLICATE`] similar to the new
    /// fact's (when it has one): its duplicates.
    Duplicates {
        /// The slot, or `None` for free text.
        slot: Option<String>,
        /// The normalised text of the new fact.
        norm_text: String,
    },
}

/// What recording a fact does, given what its [`Lookup`] found: the one
/// rule every store applies in the transaction that records it. Exhaustive
/// on purpose, like [`Lookup`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciliation {
    /// The fact is already known: nothing is written.
    Duplicate(Box<Fact>),
    /// The fact is written; with `invalid_at`, as historical (a newer value
    /// of its single-valued slot exists, valid from then on).
    Insert {
        /// When a newer existing fact took over, if one did.
        invalid_at: Option<Timestamp>,
        /// The current facts it replaces: they become invalid from its
        /// `valid_at`, expired now and superseded by it.
        supersedes: Vec<FactId>,
    },
}

impl NewFact {
    /// Refuses what no store keeps: a confidence outside 0 to 1
    /// ([`StoreError::Conflict`]).
    pub fn check(&self) -> Result<(), StoreError> {
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(StoreError::Conflict(format!(
                "confidence {} is not between 0 and 1",
                self.confidence
            )));
        }
        Ok(())
    }

    /// Its cardinality: the one it was given, else the built-in rule for
    /// its predicate.
    pub fn cardinality(&self) -> Cardinality {
        self.cardinality
            .unwrap_or_else(|| Cardinality::resolve(&self.predicate, &BTreeMap::new(), None))
    }

    /// What a store reads before recording it (see [`Lookup`]).
    pub fn lookup(&self) -> Lookup {
        match self.slot() {
            Some(slot) if self.cardinality() == Cardinality::Single => Lookup::Slot(slot),
            slot => Lookup::Duplicates {
                slot,
                norm_text: normalise(&self.text()),
            },
        }
    }

    /// Decides how this fact, valid from `valid_at`, meets the `existing`
    /// facts its [`lookup`](Self::lookup) found and the current fact it
    /// names in [`replaces`](NewFact::replaces) (`named`, read by the store
    /// from the same owner). A locked fact refuses an unlocked write that
    /// would supersede it with a conflict; naming a fact that is not a
    /// current fact of the owner is not found.
    pub fn reconcile(
        &self,
        existing: &[Fact],
        named: Option<&Fact>,
        valid_at: Timestamp,
    ) -> StoreResult<Reconciliation> {
        let named = match (self.replaces, named) {
            (None, _) => None,
            (Some(id), Some(f)) if f.id == id && f.is_current() && f.owner == self.owner => Some(f),
            (Some(id), _) => return Err(StoreError::not_found("current fact of this owner", id)),
        };
        let value = normalise(&self.value);
        let same_value = |f: &Fact| normalise(&f.value) == value;
        // The named fact already says it (its slot and value, or its free text).
        if let Some(named) = named.filter(|f| f.slot() == self.slot() && same_value(f)) {
            return Ok(Reconciliation::Duplicate(Box::new(named.clone())));
        }
        let single = matches!(self.lookup(), Lookup::Slot(_));
        // Another fact already holding it (for a many-valued slot or free
        // text, everything the lookup found does); the named fact itself is
        // being replaced, so only an equal value (above) repeats it.
        if let Some(dup) = existing
            .iter()
            .filter(|f| Some(f.id) != named.map(|n| n.id))
            .find(|f| !single || same_value(f))
        {
            return Ok(Reconciliation::Duplicate(Box::new(dup.clone())));
        }
        let newer = || {
            existing
                .iter()
                .filter(|f| f.valid_at > valid_at)
                .map(|f| f.valid_at)
                .min()
        };
        // An older value of a single-valued slot is history, unless it is an
        // update someone judged to replace a fact now.
        let invalid_at = if single && named.is_none() {
            newer()
        } else {
            None
        };
        let mut replaced: Vec<&Fact> = Vec::new();
        if invalid_at.is_none() {
            if single {
                replaced.extend(existing.iter());
            }
            if let Some(named) = named
                && !replaced.iter().any(|f| f.id == named.id)
            {
                replaced.push(named);
            }
        }
        refuse_locked(self, replaced.iter().copied())?;
        Ok(Reconciliation::Insert {
            invalid_at,
            supersedes: replaced.iter().map(|f| f.id).collect(),
        })
    }
}

fn refuse_locked<'a>(
    new: &NewFact,
    replaced: impl IntoIterator<Item = &'a Fact>,
) -> StoreResult<()> {
    match replaced.into_iter().find(|f| f.locked && !new.locked) {
        Some(locked) => Err(StoreError::Conflict(format!(
            "fact {} is locked; unlock it to change it",
            locked.id
        ))),
        None => Ok(()),
    }
}

/// The facts a store written before predicates had a cardinality must make
/// current again: before, every triple's slot held one value, so a new
/// value of a many-valued slot (a second thing Ada likes, each line of an
/// imported conversation) superseded the one before it. Given every fact of
/// the store (`cardinality` already resolved for each), this returns the
/// facts superseded by a newer fact of the same owner and slot whose slot
/// takes many values, oldest first, leaving out those whose value another
/// current (or restored) fact of the slot already holds.
pub fn wrongly_superseded(facts: &[Fact]) -> Vec<FactId> {
    let by_id: HashMap<FactId, &Fact> = facts.iter().map(|f| (f.id, f)).collect();
    let group = |f: &Fact| f.slot().map(|s| (f.account, f.owner.key(), s));
    let mut held: HashSet<(crate::ids::AccountId, String, String, String)> = facts
        .iter()
        .filter(|f| f.is_current())
        .filter_map(|f| group(f).map(|(a, o, s)| (a, o, s, normalise(&f.value))))
        .collect();
    let mut candidates: Vec<&Fact> = facts
        .iter()
        .filter(|f| f.cardinality == Cardinality::Many && f.expired_at.is_some())
        .filter(|f| {
            f.superseded_by
                .and_then(|by| by_id.get(&by))
                .is_some_and(|by| group(by).is_some() && group(by) == group(f))
        })
        .collect();
    candidates.sort_by_key(|f| (f.created_at, f.id));
    let mut out = Vec::new();
    for f in candidates {
        let Some((a, o, s)) = group(f) else { continue };
        if held.insert((a, o, s, normalise(&f.value))) {
            out.push(f.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_then_the_built_in_lists_then_the_writer_decide() {
        let none = BTreeMap::new();
        let r = |p: &str, d: &BTreeMap<String, Cardinality>, said| Cardinality::resolve(p, d, said);
        assert_eq!(r("Lives_In", &none, None), Cardinality::Single);
        assert_eq!(
            r("likes", &none, Some(Cardinality::Single)),
            Cardinality::Many
        );
        assert_eq!(
            r("favourite colour", &none, Some(Cardinality::Single)),
            Cardinality::Single
        );
        assert_eq!(r("favourite colour", &none, None), Cardinality::Many);
        let declared = BTreeMap::from([
            ("Lives in".to_owned(), Cardinality::Many),
            ("favourite_colour".to_owned(), Cardinality::Single),
        ]);
        assert_eq!(r("lives in", &declared, None), Cardinality::Many);
        assert_eq!(
            r("favourite colour", &declared, Some(Cardinality::Many)),
            Cardinality::Single
        );
        for p in SINGLE_VALUED.iter().chain(MANY_VALUED).copied() {
            assert_eq!(predicate_key(p), p, "the lists are written as keys");
            assert!(
                !(SINGLE_VALUED.contains(&p) && MANY_VALUED.contains(&p)),
                "{p} in both"
            );
        }
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::ids::{AccountId, UserId};
    use crate::knowledge::{FactOwner, Provenance};

    #[test]
    fn an_update_with_another_subject_but_the_same_value_replaces_the_named_fact() {
        let owner = FactOwner::User(UserId::new());
        let account = AccountId::new();
        let named = Fact {
            id: FactId::new(),
            account,
            owner: owner.clone(),
            subject: "Ada".into(),
            predicate: "likes".into(),
            value: "tea".into(),
            confidence: 1.0,
            provenance: Provenance::Curated,
            locked: false,
            cardinality: Cardinality::Many,
            valid_at: Timestamp::from_millis(1),
            invalid_at: None,
            created_at: Timestamp::from_millis(1),
            expired_at: None,
            superseded_by: None,
        };
        let mut new = NewFact::new(account, owner, "Bo", "likes", "tea");
        new.replaces = Some(named.id);
        let decided = new
            .reconcile(&[], Some(&named), Timestamp::from_millis(2))
            .unwrap();
        assert_eq!(
            decided,
            Reconciliation::Insert {
                invalid_at: None,
                supersedes: vec![named.id]
            }
        );
        let mut same = NewFact::new(account, named.owner.clone(), "ada", "Likes", "TEA");
        same.replaces = Some(named.id);
        assert!(matches!(
            same.reconcile(&[], Some(&named), Timestamp::from_millis(2)),
            Ok(Reconciliation::Duplicate(_))
        ));
    }
}
