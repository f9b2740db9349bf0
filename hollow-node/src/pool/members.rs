//! Several hollow-node replicas running one pool: which replica runs which node, and when a
//! replica may start the nodes it gains. Pure; `membership` holds the glue.
//!
//! Each replica holds a membership Lease that names the replicas it saw alive when it last
//! changed what it runs (its published view). A node belongs to one replica of a view
//! (rendezvous hashing: a replica joining or leaving moves only the nodes it takes or leaves).
//! The rule that keeps a node from ever having two writers:
//! - a replica stops the nodes it loses *before* it publishes a new view, so it only ever runs
//!   nodes of the view it has published;
//! - it starts the nodes it gains only when a fresh (quorum) read shows every live replica
//!   publishing that same view, so none of them still runs one of those nodes;
//! - a replica that cannot renew its Lease for [`FENCE`] stops all its nodes, well before the
//!   others count it gone (they wait a whole lease duration from the last change they saw).

use std::collections::BTreeSet;
use std::time::Duration;

/// How long a membership Lease lasts without renewal, as the other replicas count it.
pub const LEASE_DURATION: Duration = Duration::from_secs(20);
/// A replica whose last successful renewal began this long ago stops running nodes.
pub const FENCE: Duration = Duration::from_secs(10);

/// A live replica as the last read showed it: its name and the view it published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub view: Vec<String>,
}

/// What a replica does next: run exactly `run` (stopping the rest first), then, if set,
/// publish `publish` as its view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub run: Vec<u32>,
    pub publish: Option<Vec<String>>,
}

/// FNV-1a: stable across builds and platforms, so every replica computes the same owners.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The replica of `view` that runs node `number` of `pool` (highest random weight); `None`
/// for an empty view.
pub fn owner<'a>(view: &'a [String], pool: &str, number: u32) -> Option<&'a str> {
    let n = number.to_le_bytes();
    view.iter()
        .max_by_key(|m| (fnv1a(&[pool.as_bytes(), m.as_bytes(), &n]), m.as_str()))
        .map(String::as_str)
}

/// The node numbers (of `0..replicas`) that `me` runs under `view`.
pub fn share(view: &[String], pool: &str, replicas: u32, me: &str) -> Vec<u32> {
    (0..replicas)
        .filter(|n| owner(view, pool, *n) == Some(me))
        .collect()
}

/// The next step of replica `me` of `pool` (`replicas` nodes), from the live replicas of a
/// fresh read (`me` among them once its Lease exists) and the node numbers it runs now.
/// `fenced`: its own Lease is not renewed, so it must run nothing.
pub fn decide(
    me: &str,
    pool: &str,
    replicas: u32,
    live: &[Seen],
    running: &[u32],
    fenced: bool,
) -> Step {
    let Some(mine) = live.iter().find(|s| s.id == me).filter(|_| !fenced) else {
        return Step {
            run: Vec::new(),
            publish: None,
        };
    };
    let view: Vec<String> = live
        .iter()
        .map(|s| s.id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let want = share(&view, pool, replicas, me);
    let keep: Vec<u32> = running
        .iter()
        .copied()
        .filter(|n| want.binary_search(n).is_ok())
        .collect();
    if mine.view != view {
        return Step {
            run: keep,
            publish: Some(view),
        };
    }
    let agreed = live.iter().all(|s| s.view == view);
    Step {
        run: if agreed { want } else { keep },
        publish: None,
    }
}

/// A membership Lease's view annotation: the replica names, comma-separated.
pub fn parse_view(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn seen(id: &str, view: &[&str]) -> Seen {
        Seen {
            id: id.into(),
            view: ids(view),
        }
    }

    #[test]
    fn every_node_has_one_owner_and_shares_are_even_enough() {
        let view = ids(&["a", "b", "c"]);
        let shares: Vec<Vec<u32>> = view.iter().map(|m| share(&view, "gpu", 300, m)).collect();
        let mut all: Vec<u32> = shares.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..300).collect::<Vec<_>>());
        for s in &shares {
            assert!((50..=150).contains(&s.len()), "uneven: {}", s.len());
        }
    }

    #[test]
    fn a_replica_joining_moves_only_the_nodes_it_takes() {
        let two = ids(&["a", "b"]);
        let three = ids(&["a", "b", "c"]);
        for n in 0..500 {
            let before = owner(&two, "p", n);
            let after = owner(&three, "p", n);
            assert!(
                after == before || after == Some("c"),
                "node {n}: {before:?} → {after:?}"
            );
        }
    }

    #[test]
    fn steps() {
        let all = |view: &[&str], me: &str| share(&ids(view), "p", 10, me);
        let ab = all(&["a", "b"], "a");
        let step = |run: Vec<u32>, publish: Option<&[&str]>| Step {
            run,
            publish: publish.map(ids),
        };
        /// (case, me, live, running, fenced, the step).
        type Case = (&'static str, &'static str, Vec<Seen>, Vec<u32>, bool, Step);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("alone and new: publish itself, run nothing yet", "a",
             vec![seen("a", &[])], vec![], false, step(vec![], Some(&["a"]))),
            ("alone, published: run every node", "a",
             vec![seen("a", &["a"])], vec![], false, step((0..10).collect(), None)),
            ("b joined: a stops what b gets, then publishes", "a",
             vec![seen("a", &["a"]), seen("b", &["a", "b"])], (0..10).collect(), false,
             step(ab.clone(), Some(&["a", "b"]))),
            ("b waits while a has not published the view", "b",
             vec![seen("a", &["a"]), seen("b", &["a", "b"])], vec![], false, step(vec![], None)),
            ("everyone agrees: b runs its whole share", "b",
             vec![seen("a", &["a", "b"]), seen("b", &["a", "b"])], vec![], false,
             step(all(&["a", "b"], "b"), None)),
            ("b gone: a publishes before it takes b's nodes", "a",
             vec![seen("a", &["a", "b"])], ab.clone(), false, step(ab.clone(), Some(&["a"]))),
            ("fenced: nothing runs, nothing is published", "a",
             vec![seen("a", &["a"])], (0..10).collect(), true, step(vec![], None)),
            ("its own Lease not read: nothing runs", "a",
             vec![seen("b", &["b"])], (0..3).collect(), false, step(vec![], None)),
        ];
        for (name, me, live, running, fenced, want) in cases {
            assert_eq!(decide(me, "p", 10, &live, &running, fenced), want, "{name}");
        }
    }

    #[test]
    fn views_parse() {
        assert_eq!(parse_view(" b,a,,a "), ids(&["a", "b"]));
        assert!(parse_view("").is_empty());
    }

    proptest! {
        /// Whatever each replica published and runs, a replica never adds a node another
        /// replica may be running: it only starts nodes when every live replica's published
        /// view gives them to it, and the others run only nodes of their published views.
        #[test]
        fn no_node_is_started_where_another_may_run_it(
            views in proptest::collection::vec(proptest::collection::btree_set(0u8..4, 1..4), 1..4),
            replicas in 0u32..40,
        ) {
            let names = ["a", "b", "c", "d"];
            let live: Vec<Seen> = views
                .iter()
                .enumerate()
                .map(|(i, v)| Seen {
                    id: names[i].into(),
                    view: v.iter().map(|j| names[*j as usize].to_string()).collect(),
                })
                .collect();
            for me in live.iter().map(|s| s.id.clone()) {
                // What `me` may run now: its published view's share (the invariant).
                let mine = live.iter().find(|s| s.id == me).map(|s| s.view.clone()).unwrap_or_default();
                let running = share(&mine, "p", replicas, &me);
                let step = decide(&me, "p", replicas, &live, &running, false);
                for n in step.run.iter().filter(|n| !running.contains(n)) {
                    for other in live.iter().filter(|s| s.id != me) {
                        prop_assert_ne!(owner(&other.view, "p", *n), Some(other.id.as_str()));
                    }
                }
                // Nothing outside the share of the view it ends up publishing.
                let published = step.publish.clone().unwrap_or(mine);
                for n in &step.run {
                    prop_assert_eq!(owner(&published, "p", *n), Some(me.as_str()));
                }
            }
        }
    }
}
