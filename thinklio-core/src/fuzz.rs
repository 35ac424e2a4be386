//! Strategies for property tests of parsers of outside input (feature
//! `fuzz`): what a provider, a Bot API server, a webhook caller, an MCP
//! server or an old store may send. Each crate's parser tests draw from
//! them with a bounded number of cases, so the suite runs them on every
//! change and a panic is a failing test.
//!
//! Two shapes matter: JSON of any shape ([`json`]), which finds parsers that
//! trust a field's type, and a real payload with parts replaced
//! ([`mutated`]), which gets past the first check and reaches the code
//! that reads deeper.

use proptest::prelude::*;
use serde_json::Value;

/// Case count of the suite's property tests of outside input.
pub const CASES: u32 = 256;

/// A proptest configuration of [`CASES`] cases.
pub fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

/// Text as outside input has it: any Unicode, control characters, JSON
/// syntax, numbers past every integer type.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[\\[\\]{}\":,0-9eE+\\-.a-z ]{0,24}",
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just(String::new()),
    ]
}

/// JSON of any shape, a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// `base` with some of its values (at any depth) replaced by JSON of any
/// shape, some removed, and some objects given fields they do not expect.
pub fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let paths = paths_of(&base);
    let n = paths.len().max(1);
    prop::collection::vec((0..n, 0..3u8, json()), 1..4).prop_map(move |changes| {
        let mut value = base.clone();
        for (index, how, replacement) in changes {
            if let Some(path) = paths.get(index) {
                change(&mut value, path, how, replacement);
            }
        }
        value
    })
}

/// Every path to a value in `value`, as keys and indices.
fn paths_of(value: &Value) -> Vec<Vec<Step>> {
    let mut out = vec![Vec::new()];
    let mut stack = vec![(Vec::new(), value)];
    while let Some((path, v)) = stack.pop() {
        let children: Vec<(Step, &Value)> = match v {
            Value::Object(map) => map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Step::Index(i), v))
                .collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            let mut p = path.clone();
            p.push(step);
            out.push(p.clone());
            stack.push((p, child));
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn change(value: &mut Value, path: &[Step], how: u8, replacement: Value) {
    let Some((last, parent_path)) = path.split_last() else {
        *value = replacement;
        return;
    };
    let mut parent = &mut *value;
    for step in parent_path {
        let next = match (step, parent) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k),
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => parent = v,
            None => return,
        }
    }
    match (last, parent, how) {
        (Step::Key(k), Value::Object(map), 0) => {
            map.remove(k);
        }
        (Step::Key(k), Value::Object(map), 1) => {
            map.insert(format!("{k}_unexpected"), replacement);
        }
        (Step::Key(k), Value::Object(map), _) => {
            map.insert(k.clone(), replacement);
        }
        (Step::Index(i), Value::Array(items), 0) if *i < items.len() => {
            items.remove(*i);
        }
        (Step::Index(i), Value::Array(items), _) if *i < items.len() => {
            items[*i] = replacement;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn mutations_change_what_they_are_given(v in mutated(serde_json::json!({ "a": [1, { "b": "c" }], "d": null }))) {
            // Any shape comes out; the point is that making it never panics.
            let _ = v.to_string();
        }
    }
}
