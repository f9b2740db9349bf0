//! UID strategies as pure rules: OpenShift's namespace annotations (parse, allocate a block) and
//! the per-pod random UID. The I/O that reads and writes namespaces lives in `namespaces.rs`.

use std::collections::BTreeMap;

use rand::Rng;

use crate::mutation::Ids;

/// OpenShift's annotation with the namespace's UID block, `"<start>/<size>"`.
pub const UID_RANGE: &str = "openshift.io/sa.scc.uid-range";
/// OpenShift's annotation with the namespace's supplemental groups (fsGroup takes its first).
pub const SUPPLEMENTAL_GROUPS: &str = "openshift.io/sa.scc.supplemental-groups";

/// Blocks handed out: aligned to and sized `BLOCK_SIZE`, inside `[BLOCKS_START, BLOCKS_END)`.
pub const BLOCK_SIZE: i64 = 10_000;
pub const BLOCKS_START: i64 = 1_000_000_000;
pub const BLOCKS_END: i64 = 2_000_000_000;
/// The largest UID or GID Kubernetes accepts in `runAsUser` and `fsGroup` (2^31 - 1).
pub const MAX_ID: i64 = i32::MAX as i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// One block of 10,000 UIDs per namespace, as OpenShift does.
    Namespace,
    /// A fresh random UID for every pod.
    Pod,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Namespace => "namespace",
            Strategy::Pod => "pod",
        }
    }
}

/// What the webhook makes of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Only runAsNonRoot pods without a UID get one (issue 4's behaviour).
    #[value(name = "runasnonroot")]
    RunAsNonRoot,
    /// OpenShift's restricted-v2 SCC: defaults applied, violations refused.
    #[value(name = "openshift-restricted-v2")]
    OpenshiftRestrictedV2,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::RunAsNonRoot => "runasnonroot",
            Profile::OpenshiftRestrictedV2 => "openshift-restricted-v2",
        }
    }
}

/// A block of IDs: `start` and `size` (OpenShift writes `start/size` or `start-end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub start: i64,
    pub size: i64,
}

impl Block {
    pub fn annotation(self) -> String {
        format!("{}/{}", self.start, self.size)
    }
}

/// Parses `"<start>/<size>"` or `"<start>-<end>"`; of a comma-separated list, the first block.
/// Every ID of the block must be one Kubernetes accepts, `[0, MAX_ID]`; the arithmetic is
/// checked, so no annotation value can overflow it.
pub fn parse_block(value: &str) -> Result<Block, String> {
    let shown = Shown(value);
    let first = value.split(',').next().unwrap_or_default().trim();
    let parse = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{} is not an integer in {shown}", Shown(s)))
    };
    let (start, size) = if let Some((start, size)) = first.split_once('/') {
        (parse(start)?, parse(size)?)
    } else if let Some((start, end)) = first.split_once('-') {
        let (start, end) = (parse(start)?, parse(end)?);
        (
            start,
            end.checked_sub(start)
                .and_then(|d| d.checked_add(1))
                .unwrap_or(0),
        )
    } else {
        return Err(format!(
            "{shown} is neither <start>/<size> nor <start>-<end>"
        ));
    };
    let last = start.checked_add(size.saturating_sub(1));
    if start < 0 || size <= 0 || last.is_none_or(|last| last > MAX_ID) {
        return Err(format!("{shown} is not a block of IDs in [0, {MAX_ID}]"));
    }
    Ok(Block { start, size })
}

/// An annotation value in a message, cut to 64 characters: messages end up in warnings, logs
/// and Events, and the value may be as long as the apiserver allows.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 64;
        match self.0.char_indices().nth(MAX) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
        }
    }
}

/// What a namespace's annotations say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceIds {
    /// The UID block is recorded: use it (fsGroup from supplemental-groups, else the UID block).
    /// `ignored` says why a supplemental-groups value that does not parse was passed over.
    Recorded { ids: Ids, ignored: Option<String> },
    /// No UID block yet; `groups` is the supplemental-groups block if one is recorded.
    Missing { groups: Option<Block> },
}

/// Reads OpenShift's annotations. A UID range that does not parse is an error naming it, and it
/// is never overwritten. A supplemental-groups value that does not parse beside a good UID range
/// is handled as if absent (fsGroup from the UID block), with the reason in `ignored`; without a
/// UID range it is an error, since allocating would overwrite it.
pub fn from_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<NamespaceIds, String> {
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    let groups = get(SUPPLEMENTAL_GROUPS)
        .map(|v| parse_block(v).map_err(|e| format!("annotation {SUPPLEMENTAL_GROUPS}: {e}")))
        .transpose();
    match get(UID_RANGE) {
        Some(v) => {
            let uids = parse_block(v).map_err(|e| format!("annotation {UID_RANGE}: {e}"))?;
            let (groups, ignored) = match groups {
                Ok(groups) => (groups, None),
                Err(e) => (None, Some(format!("{e}; fsGroup taken from {UID_RANGE}"))),
            };
            Ok(NamespaceIds::Recorded {
                ids: Ids {
                    uid: uids.start,
                    fs_group: groups.unwrap_or(uids).start,
                },
                ignored,
            })
        }
        None => Ok(NamespaceIds::Missing { groups: groups? }),
    }
}

/// The `pod` strategy: a random UID in `[min, max]`, also used as fsGroup. `Config::validate`
/// keeps `min <= max`; should they ever arrive swapped, they are taken in order, not a panic.
pub fn random_pod_ids(rng: &mut impl Rng, min: i64, max: i64) -> Ids {
    let uid = rng.random_range(min.min(max)..=max.max(min));
    Ids { uid, fs_group: uid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_block_table() {
        let cases: &[(&str, Result<Block, &str>)] = &[
            (
                "1000680000/10000",
                Ok(Block {
                    start: 1_000_680_000,
                    size: 10_000,
                }),
            ),
            (
                "1000680000-1000689999",
                Ok(Block {
                    start: 1_000_680_000,
                    size: 10_000,
                }),
            ),
            (
                "1000680000/10000,1000700000/10000",
                Ok(Block {
                    start: 1_000_680_000,
                    size: 10_000,
                }),
            ),
            (" 5/1 ", Ok(Block { start: 5, size: 1 })),
            ("abc/10000", Err("not an integer")),
            ("1000", Err("neither")),
            ("100/0", Err("not a block")),
            ("-5/10", Err("not a block")),
            ("", Err("neither")),
            (
                "2147483647/1",
                Ok(Block {
                    start: MAX_ID,
                    size: 1,
                }),
            ),
            ("2147483647/2", Err("not a block")),
            (
                "0/2147483648",
                Ok(Block {
                    start: 0,
                    size: MAX_ID + 1,
                }),
            ),
            ("1000680000-1000679999", Err("not a block")),
            ("0-9223372036854775807", Err("not a block")),
            ("1--9223372036854775808", Err("not a block")),
            (
                "9223372036854775807/9223372036854775807",
                Err("not a block"),
            ),
            ("99999999999999999999/1", Err("not an integer")),
        ];
        for (input, want) in cases {
            match (parse_block(input), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w, "{input:?}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{input:?}: {e}"),
                (got, _) => panic!("{input:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn from_annotations_table() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        type Case = (
            &'static str,
            Option<BTreeMap<String, String>>,
            Result<NamespaceIds, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "no annotations",
                None,
                Ok(NamespaceIds::Missing { groups: None }),
            ),
            (
                "both recorded",
                Some(ann(&[
                    (UID_RANGE, "1000230000/10000"),
                    (SUPPLEMENTAL_GROUPS, "1000240000/10000"),
                ])),
                Ok(NamespaceIds::Recorded {
                    ids: Ids {
                        uid: 1_000_230_000,
                        fs_group: 1_000_240_000,
                    },
                    ignored: None,
                }),
            ),
            (
                "uid range only: groups from it",
                Some(ann(&[(UID_RANGE, "1000230000/10000")])),
                Ok(NamespaceIds::Recorded {
                    ids: Ids {
                        uid: 1_000_230_000,
                        fs_group: 1_000_230_000,
                    },
                    ignored: None,
                }),
            ),
            (
                "groups only",
                Some(ann(&[(SUPPLEMENTAL_GROUPS, "1000240000/10000")])),
                Ok(NamespaceIds::Missing {
                    groups: Some(Block {
                        start: 1_000_240_000,
                        size: 10_000,
                    }),
                }),
            ),
            (
                "broken uid range",
                Some(ann(&[(UID_RANGE, "x")])),
                Err(UID_RANGE),
            ),
            (
                "broken groups beside a uid range: as if absent",
                Some(ann(&[(UID_RANGE, "1/1"), (SUPPLEMENTAL_GROUPS, "y")])),
                Ok(NamespaceIds::Recorded {
                    ids: Ids {
                        uid: 1,
                        fs_group: 1,
                    },
                    ignored: Some(format!(
                        "annotation {SUPPLEMENTAL_GROUPS}: \"y\" is neither <start>/<size> nor <start>-<end>; fsGroup taken from {UID_RANGE}"
                    )),
                }),
            ),
            (
                "broken groups alone: never overwritten",
                Some(ann(&[(SUPPLEMENTAL_GROUPS, "2147483647/2")])),
                Err(SUPPLEMENTAL_GROUPS),
            ),
        ];
        for (name, annotations, want) in cases {
            match (from_annotations(annotations.as_ref()), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{name}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{name}: {e}"),
                (got, want) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn block_is_valid(b: Block) -> bool {
            b.start >= 0 && b.size >= 1 && b.start + (b.size - 1) <= MAX_ID
        }

        proptest! {
            #[test]
            fn parse_block_never_panics_and_stays_in_bounds(s in "\\PC*") {
                if let Ok(b) = parse_block(&s) {
                    prop_assert!(block_is_valid(b), "{s:?}: {b:?}");
                }
            }

            #[test]
            fn parse_block_on_any_pair_of_numbers(
                a in any::<i64>(),
                b in any::<i64>(),
                sep in prop_oneof![Just('/'), Just('-')],
            ) {
                let s = format!("{a}{sep}{b}");
                let want = match sep {
                    '/' => (a >= 0 && b >= 1 && a.checked_add(b - 1).is_some_and(|l| l <= MAX_ID))
                        .then_some(Block { start: a, size: b }),
                    // "a--b" reads b as negative; "-a-b" has no start.
                    _ => (a >= 0 && b >= a && b <= MAX_ID)
                        .then(|| Block { start: a, size: b - a + 1 }),
                };
                match (parse_block(&s), want) {
                    (Ok(got), Some(w)) => prop_assert_eq!(got, w),
                    (Err(e), None) => prop_assert!(e.len() < 300, "{e}"),
                    (got, want) => prop_assert!(false, "{s:?}: got {got:?}, want {want:?}"),
                }
            }

            #[test]
            fn blocks_round_trip(start in 0..=MAX_ID, size in 1..=MAX_ID + 1) {
                let size = size.min(MAX_ID - start + 1);
                let block = Block { start, size };
                prop_assert_eq!(parse_block(&block.annotation()), Ok(block));
                let range = format!("{}-{}", start, start + size - 1);
                prop_assert_eq!(parse_block(&range), Ok(block));
            }

            #[test]
            fn from_annotations_never_panics_and_ids_stay_in_bounds(
                entries in proptest::collection::btree_map(
                    prop_oneof![
                        Just(UID_RANGE.to_owned()),
                        Just(SUPPLEMENTAL_GROUPS.to_owned()),
                        "\\PC{0,20}",
                    ],
                    prop_oneof!["[0-9/,-]{0,30}", "\\PC{0,40}"],
                    0..4,
                )
            ) {
                match from_annotations(Some(&entries)) {
                    Ok(NamespaceIds::Recorded { ids, .. }) => {
                        prop_assert!((0..=MAX_ID).contains(&ids.uid), "{ids:?}");
                        prop_assert!((0..=MAX_ID).contains(&ids.fs_group), "{ids:?}");
                    }
                    Ok(NamespaceIds::Missing { groups }) => {
                        prop_assert!(!entries.contains_key(UID_RANGE));
                        prop_assert!(groups.is_none_or(block_is_valid));
                    }
                    Err(e) => prop_assert!(e.len() < 400, "{e}"),
                }
            }

            #[test]
            fn pod_ids_stay_in_any_range(a in 0..=MAX_ID, b in 0..=MAX_ID) {
                let ids = random_pod_ids(&mut rand::rng(), a, b);
                prop_assert!((a.min(b)..=a.max(b)).contains(&ids.uid));
                prop_assert_eq!(ids.uid, ids.fs_group);
            }
        }
    }

    #[test]
    fn pod_ids_in_range() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let ids = random_pod_ids(&mut rng, 2000, 2009);
            assert!((2000..=2009).contains(&ids.uid));
            assert_eq!(ids.uid, ids.fs_group);
        }
    }
}
