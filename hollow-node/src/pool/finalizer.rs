//! The pool's finalizer: while a process runs a pool, the pool carries `mock-kind.io/nodes`, so
//! deleting it waits until its Nodes and Leases are gone (also when the pool is deleted while
//! no process runs it: the next process to run it finishes the job). Pure: which list of
//! finalizers to write, if any.

/// Held by a pool whose Nodes a process manages.
pub const FINALIZER: &str = "mock-kind.io/nodes";

/// What the process must do with the pool's finalizer, from what the pool holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalizer {
    /// Nothing to write.
    Keep,
    /// Write this list (ours added, or ours removed), others' finalizers kept in their order.
    Write(Vec<String>),
}

/// `deleting`: the pool has a deletionTimestamp; `nodes_left`: its Nodes or Leases still exist.
/// A live pool gets the finalizer; a deleted one keeps it until nothing of it is left, and then
/// loses it (others' finalizers stay for their owners to remove).
pub fn finalizer(existing: &[String], deleting: bool, nodes_left: bool) -> Finalizer {
    let held = existing.iter().any(|f| f == FINALIZER);
    match (deleting, held) {
        // The apiserver refuses new finalizers on a deleted object; nothing to add then.
        (false, false) => {
            let mut next = existing.to_vec();
            next.push(FINALIZER.to_string());
            Finalizer::Write(next)
        }
        (true, true) if !nodes_left => Finalizer::Write(
            existing
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect(),
        ),
        _ => Finalizer::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finalizer_table() {
        let cases: [(&str, &[&str], bool, bool, Finalizer); 7] = [
            (
                "live pool gets it",
                &[],
                false,
                false,
                Finalizer::Write(list(&[FINALIZER])),
            ),
            (
                "others' kept, ours appended",
                &["example.com/x"],
                false,
                true,
                Finalizer::Write(list(&["example.com/x", FINALIZER])),
            ),
            (
                "live pool holding it",
                &[FINALIZER],
                false,
                true,
                Finalizer::Keep,
            ),
            (
                "deleted, nodes left: held",
                &[FINALIZER],
                true,
                true,
                Finalizer::Keep,
            ),
            (
                "deleted, nothing left: removed, others kept",
                &["a/b", FINALIZER, "c/d"],
                true,
                false,
                Finalizer::Write(list(&["a/b", "c/d"])),
            ),
            (
                "deleted without ours: never added",
                &["a/b"],
                true,
                true,
                Finalizer::Keep,
            ),
            (
                "deleted without ours, empty",
                &[],
                true,
                false,
                Finalizer::Keep,
            ),
        ];
        for (name, existing, deleting, left, want) in cases {
            assert_eq!(finalizer(&list(existing), deleting, left), want, "{name}");
        }
    }

    proptest::proptest! {
        /// Others' finalizers are never touched, and ours is never added to a deleted pool.
        #[test]
        fn only_ours_changes(
            existing in proptest::collection::vec("[a-z./]{0,12}", 0..5),
            deleting: bool,
            left: bool,
        ) {
            let others: Vec<&String> = existing.iter().filter(|f| *f != FINALIZER).collect();
            if let Finalizer::Write(next) = finalizer(&existing, deleting, left) {
                let next_others: Vec<&String> = next.iter().filter(|f| *f != FINALIZER).collect();
                proptest::prop_assert_eq!(next_others, others);
                proptest::prop_assert_eq!(next.iter().any(|f| f == FINALIZER), !deleting);
            }
        }
    }
}
