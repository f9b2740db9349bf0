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
pub fn parse_block(value: &str) -> Result<Block, String> {
    let first = value.split(',').next().unwrap_or_default().trim();
    let parse = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is not an integer in {value:?}"))
    };
    let block = if let Some((start, size)) = first.split_once('/') {
        Block {
            start: parse(start)?,
            size: parse(size)?,
        }
    } else if let Some((start, end)) = first.split_once('-') {
        let (start, end) = (parse(start)?, parse(end)?);
        Block {
            start,
            size: end - start + 1,
        }
    } else {
        return Err(format!(
            "{value:?} is neither <start>/<size> nor <start>-<end>"
        ));
    };
    if block.start < 0 || block.size <= 0 || block.start.checked_add(block.size).is_none() {
        return Err(format!("{value:?} is not a block of non-negative IDs"));
    }
    Ok(block)
}

/// What a namespace's annotations say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceIds {
    /// The UID block is recorded: use it (fsGroup from supplemental-groups, else the UID block).
    Recorded(Ids),
    /// No UID block yet; `groups` is the supplemental-groups block if one is recorded.
    Missing { groups: Option<Block> },
}

/// Reads OpenShift's annotations. An annotation that does not parse is an error naming it; it is
/// never overwritten.
pub fn from_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<NamespaceIds, String> {
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    let groups = match get(SUPPLEMENTAL_GROUPS) {
        Some(v) => {
            Some(parse_block(v).map_err(|e| format!("annotation {SUPPLEMENTAL_GROUPS}: {e}"))?)
        }
        None => None,
    };
    match get(UID_RANGE) {
        Some(v) => {
            let uids = parse_block(v).map_err(|e| format!("annotation {UID_RANGE}: {e}"))?;
            Ok(NamespaceIds::Recorded(Ids {
                uid: uids.start,
                fs_group: groups.unwrap_or(uids).start,
            }))
        }
        None => Ok(NamespaceIds::Missing { groups }),
    }
}

/// A random aligned block of `BLOCK_SIZE` in `[BLOCKS_START, BLOCKS_END)`.
pub fn random_block(rng: &mut impl Rng) -> Block {
    let blocks = (BLOCKS_END - BLOCKS_START) / BLOCK_SIZE;
    Block {
        start: BLOCKS_START + rng.random_range(0..blocks) * BLOCK_SIZE,
        size: BLOCK_SIZE,
    }
}

/// The annotations to add to a namespace that has no UID block, and the IDs they give.
pub fn allocation(block: Block, groups: Option<Block>) -> (BTreeMap<String, String>, Ids) {
    let mut add = BTreeMap::from([(UID_RANGE.to_owned(), block.annotation())]);
    if groups.is_none() {
        add.insert(SUPPLEMENTAL_GROUPS.to_owned(), block.annotation());
    }
    let ids = Ids {
        uid: block.start,
        fs_group: groups.unwrap_or(block).start,
    };
    (add, ids)
}

/// The `pod` strategy: a random UID in `[min, max]`, also used as fsGroup.
pub fn random_pod_ids(rng: &mut impl Rng, min: i64, max: i64) -> Ids {
    let uid = rng.random_range(min..=max);
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
                Ok(NamespaceIds::Recorded(Ids {
                    uid: 1_000_230_000,
                    fs_group: 1_000_240_000,
                })),
            ),
            (
                "uid range only: groups from it",
                Some(ann(&[(UID_RANGE, "1000230000/10000")])),
                Ok(NamespaceIds::Recorded(Ids {
                    uid: 1_000_230_000,
                    fs_group: 1_000_230_000,
                })),
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
                "broken groups",
                Some(ann(&[(UID_RANGE, "1/1"), (SUPPLEMENTAL_GROUPS, "y")])),
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

    #[test]
    fn random_blocks_are_aligned_and_in_range() {
        let mut rng = rand::rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            let b = random_block(&mut rng);
            assert_eq!(b.size, BLOCK_SIZE);
            assert_eq!(b.start % BLOCK_SIZE, 0, "{b:?}");
            assert!(
                b.start >= BLOCKS_START && b.start + b.size <= BLOCKS_END,
                "{b:?}"
            );
            seen.insert(b.start);
        }
        assert!(
            seen.len() > 9_000,
            "blocks not spread: {} distinct",
            seen.len()
        );
    }

    #[test]
    fn allocation_keeps_recorded_groups() {
        let block = Block {
            start: 1_000_010_000,
            size: BLOCK_SIZE,
        };
        let (add, ids) = allocation(block, None);
        assert_eq!(
            add.get(UID_RANGE).map(String::as_str),
            Some("1000010000/10000")
        );
        assert_eq!(
            add.get(SUPPLEMENTAL_GROUPS).map(String::as_str),
            Some("1000010000/10000")
        );
        assert_eq!(
            ids,
            Ids {
                uid: 1_000_010_000,
                fs_group: 1_000_010_000
            }
        );

        let groups = Block {
            start: 5_000,
            size: 100,
        };
        let (add, ids) = allocation(block, Some(groups));
        assert!(!add.contains_key(SUPPLEMENTAL_GROUPS));
        assert_eq!(
            ids,
            Ids {
                uid: 1_000_010_000,
                fs_group: 5_000
            }
        );
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
