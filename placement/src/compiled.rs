//! Compiled `spoofed_excluded_pods` values, shared by every namespace with the same value: a
//! value's regexes are compiled once, not per namespace update (the extender's watch) nor per
//! admitted pod (the webhook's affinity mode).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::rules::{Exclusions, MAX_EXCLUDED_PODS_LEN};

/// Past this many compiled values, drop the ones nobody holds any more.
const PRUNE_AT: usize = 1024;

#[derive(Debug, Default)]
pub struct CompiledExclusions {
    compiled: Mutex<HashMap<String, Arc<Exclusions>>>,
}

impl CompiledExclusions {
    /// The compiled `value`, from the cache when it was compiled before.
    pub fn get(&self, value: &str) -> Arc<Exclusions> {
        // An out-of-bounds value is refused without compiling; keeping it as a key would only
        // hold up to the apiserver's 256 KiB per namespace for nothing.
        if value.len() > MAX_EXCLUDED_PODS_LEN {
            return Arc::new(Exclusions::parse(value));
        }
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = compiled.get(value) {
            return found.clone();
        }
        if compiled.len() >= PRUNE_AT {
            compiled.retain(|_, v| Arc::strong_count(v) > 1);
        }
        let new = Arc::new(Exclusions::parse(value));
        compiled.insert(value.to_owned(), new.clone());
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_compiled_once() {
        let cache = CompiledExclusions::default();
        let (a, b) = (cache.get("x,y"), cache.get("x,y"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &cache.get("x")));
        let long = "x".repeat(MAX_EXCLUDED_PODS_LEN + 1);
        assert!(!Arc::ptr_eq(&cache.get(&long), &cache.get(&long)));
    }
}
