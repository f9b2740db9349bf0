//! Label selectors as the apiserver writes them in `labelSelector` (`a=b,c!=d,e,!f,
//! g in (x,y),h notin (z)`), parsed bounded and matched against a label map. Pure.

use std::collections::BTreeMap;

/// Longest selector accepted.
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Most requirements in one selector.
pub const MAX_REQUIREMENTS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("label selector longer than {MAX_SELECTOR_LEN} bytes")]
    TooLong,
    #[error("label selector with more than {MAX_REQUIREMENTS} requirements")]
    TooMany,
    #[error("label selector requirement {0:?} is not understood")]
    Bad(String),
}

/// The requirements, split at commas outside parentheses.
fn split(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn key(k: &str) -> Option<String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    ok.then(|| k.to_string())
}

fn value(v: &str) -> Option<String> {
    let v = v.trim();
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        .then(|| v.to_string())
}

fn set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner.split(',').map(value).collect()
}

fn requirement(text: &str) -> Option<Requirement> {
    let t = text.trim();
    if let Some((k, v)) = t.split_once("!=") {
        return Some(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Some(Requirement::Equals(key(k)?, value(v)?));
    }
    if let Some(k) = t.strip_prefix('!') {
        return Some(Requirement::NotExists(key(k)?));
    }
    if let Some((k, rest)) = t.split_once(" notin ") {
        return Some(Requirement::NotIn(key(k)?, set(rest)?));
    }
    if let Some((k, rest)) = t.split_once(" in ") {
        return Some(Requirement::In(key(k)?, set(rest)?));
    }
    Some(Requirement::Exists(key(t)?))
}

/// Parses a selector; empty selects everything.
pub fn parse(s: &str) -> Result<Vec<Requirement>, SelectorError> {
    if s.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::TooLong);
    }
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parts = split(s);
    if parts.len() > MAX_REQUIREMENTS {
        return Err(SelectorError::TooMany);
    }
    parts
        .into_iter()
        .map(|p| {
            requirement(p).ok_or_else(|| SelectorError::Bad(telemetry::char_prefix(p, 64).into()))
        })
        .collect()
}

/// Whether `labels` satisfy every requirement.
pub fn matches(reqs: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels.get(k) == Some(v),
        Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::NotExists(k) => !labels.contains_key(k),
        Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
        Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn selectors_select() {
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        let cases: [(&str, &str, Result<bool, ()>); 12] = [
            ("empty selects all", "", Ok(true)),
            ("equals", "app=web", Ok(true)),
            ("double equals", "app==web", Ok(true)),
            ("equals, other value", "app=db", Ok(false)),
            ("not equals", "app!=db", Ok(true)),
            ("exists and equals", "tier,app=web", Ok(true)),
            ("not exists", "!zone", Ok(true)),
            ("not exists, present", "!app", Ok(false)),
            ("in", "app in (db, web)", Ok(true)),
            ("notin", "tier notin (front),app=web", Ok(false)),
            ("bad value", "app=a b", Err(())),
            ("unbalanced set", "app in (web", Err(())),
        ];
        for (name, s, want) in cases {
            let got = parse(s).map(|r| matches(&r, &labels)).map_err(|_| ());
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            parse(&"a,".repeat(MAX_REQUIREMENTS)),
            Err(SelectorError::TooMany)
        );
        assert_eq!(
            parse(&"a".repeat(MAX_SELECTOR_LEN + 1)),
            Err(SelectorError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn any_selector_parses_or_errs(s in ".{0,200}") {
            if let Ok(reqs) = parse(&s) {
                prop_assert!(reqs.len() <= MAX_REQUIREMENTS);
            }
        }

        #[test]
        fn an_equality_selects_exactly_its_value(k in "[a-z]{1,8}", v in "[a-z]{0,8}", w in "[a-z]{0,8}") {
            let reqs = parse(&format!("{k}={v}")).expect("valid");
            let labels = BTreeMap::from([(k.clone(), w.clone())]);
            prop_assert_eq!(matches(&reqs, &labels), v == w);
        }
    }
}
