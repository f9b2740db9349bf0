//! THE ALLOCATION: which block of the pool a new namespace gets, the SELinux MCS level OpenShift
//! derives from it, and which of OpenShift's three namespace annotations to add. Pure: the
//! namespace's annotations and the blocks in use in, a typed plan out.
//!
//! As openshift/cluster-policy-controller's namespace-security-allocation controller does: the
//! pool is `[BLOCKS_START, BLOCKS_END)` in blocks of `BLOCK_SIZE`, a new namespace gets the
//! lowest free block, and its MCS level is the label at offset `index × MCS_LABELS_PER_BLOCK`
//! of the range `s0:/2` (two categories out of 1024, co-lexicographic order).

use std::collections::{BTreeMap, BTreeSet};

use crate::strategy::{
    BLOCK_SIZE, BLOCKS_END, BLOCKS_START, Block, SUPPLEMENTAL_GROUPS, UID_RANGE,
};

/// OpenShift's annotation with the namespace's SELinux level, e.g. `s0:c26,c15`.
pub const MCS: &str = "openshift.io/sa.scc.mcs";

/// Blocks in the pool: 100,000.
pub const BLOCKS: u32 = ((BLOCKS_END - BLOCKS_START) / BLOCK_SIZE) as u32;
/// OpenShift's `mcsLabelsPerProject`: consecutive blocks are 5 labels apart.
pub const MCS_LABELS_PER_BLOCK: u64 = 5;
/// SELinux categories `c0..c1023`.
pub const MCS_CATEGORIES: u64 = 1024;
/// Categories per label.
pub const MCS_K: u32 = 2;
/// The sensitivity prefix of every label.
pub const MCS_PREFIX: &str = "s0:";

/// The index of a block in the pool, if it is one of the pool's aligned blocks.
pub fn block_index(block: Block) -> Option<u32> {
    let offset = block.start.checked_sub(BLOCKS_START)?;
    if block.size != BLOCK_SIZE || offset < 0 || offset % BLOCK_SIZE != 0 {
        return None;
    }
    u32::try_from(offset / BLOCK_SIZE)
        .ok()
        .filter(|i| *i < BLOCKS)
}

/// The block at `index` of the pool (`index < BLOCKS`).
pub fn block_at(index: u32) -> Option<Block> {
    (index < BLOCKS).then(|| Block {
        start: BLOCKS_START + i64::from(index) * BLOCK_SIZE,
        size: BLOCK_SIZE,
    })
}

/// The lowest index of the pool not in `used`; `None` when all 100,000 are taken.
pub fn lowest_free(used: &BTreeSet<u32>) -> Option<u32> {
    // `used` is sorted: the first gap in 0, 1, 2… is the answer.
    let mut want = 0u32;
    for &i in used.range(0..BLOCKS) {
        if i != want {
            break;
        }
        want += 1;
    }
    (want < BLOCKS).then_some(want)
}

/// `n choose k` with checked arithmetic (`None` on overflow).
fn choose(n: u64, k: u32) -> Option<u64> {
    let k = u64::from(k);
    if k > n {
        return Some(0);
    }
    let mut acc: u64 = 1;
    for i in 0..k {
        // acc * (n - i) / (i + 1) stays an integer at every step.
        acc = acc.checked_mul(n - i)? / (i + 1);
    }
    Some(acc)
}

/// The categories at `offset` in the co-lexicographic order of `k`-subsets of `0..n`, largest
/// first (OpenShift's `mcs.Range.LabelAt`); `None` when `offset` is past the last subset.
fn colex_unrank(mut offset: u64, n: u64, k: u32) -> Option<Vec<u64>> {
    if offset >= choose(n, k)? {
        return None;
    }
    let mut out = Vec::with_capacity(k as usize);
    let mut upper = n;
    for k in (1..=k).rev() {
        // The largest c below `upper` with C(c, k) <= offset, by binary search.
        let (mut lo, mut hi) = (u64::from(k) - 1, upper - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if choose(mid, k)? <= offset {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        offset -= choose(lo, k)?;
        out.push(lo);
        upper = lo;
    }
    Some(out)
}

/// The MCS level OpenShift gives the namespace owning block `index`, e.g. 68 → `s0:c26,c15`.
pub fn mcs_level(index: u32) -> Option<String> {
    let offset = u64::from(index).checked_mul(MCS_LABELS_PER_BLOCK)?;
    let categories = colex_unrank(offset, MCS_CATEGORIES, MCS_K)?;
    let list: Vec<String> = categories.iter().map(|c| format!("c{c}")).collect();
    Some(format!("{MCS_PREFIX}{}", list.join(",")))
}

/// What the controller does with one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// All three annotations are there: nothing to do.
    Complete,
    /// The UID range is missing: take a new block from the pool, then add these.
    NewBlock,
    /// The UID range is there (it wins); add the missing others.
    Fill(BTreeMap<String, String>),
    /// The recorded UID range does not parse: left alone, for a person to fix.
    Invalid(String),
}

/// Reads a namespace's annotations. An annotation already there always wins and is never
/// rewritten; only missing ones are added.
pub fn plan(annotations: Option<&BTreeMap<String, String>>) -> Plan {
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    let Some(range) = get(UID_RANGE) else {
        return Plan::NewBlock;
    };
    let block = match crate::strategy::parse_block(range) {
        Ok(b) => b,
        Err(e) => return Plan::Invalid(format!("annotation {UID_RANGE}: {e}")),
    };
    let mut add = BTreeMap::new();
    if get(SUPPLEMENTAL_GROUPS).is_none() {
        add.insert(SUPPLEMENTAL_GROUPS.to_owned(), block.annotation());
    }
    if get(MCS).is_none() {
        // A range outside the pool (set by hand) has no OpenShift-derived level.
        match block_index(block).and_then(mcs_level) {
            Some(level) => {
                add.insert(MCS.to_owned(), level);
            }
            None => {
                return Plan::Invalid(format!(
                    "annotation {UID_RANGE} {range:?} is not a block of the pool, so no {MCS} can be derived; set {MCS} by hand"
                ));
            }
        }
    }
    if add.is_empty() {
        Plan::Complete
    } else {
        Plan::Fill(add)
    }
}

/// The annotations of a new block at `index`, keeping the ones the namespace already has.
pub fn new_block_annotations(
    index: u32,
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    let block = block_at(index)?;
    let mut add = BTreeMap::from([(UID_RANGE.to_owned(), block.annotation())]);
    for (key, value) in [
        (SUPPLEMENTAL_GROUPS, block.annotation()),
        (MCS, mcs_level(index)?),
    ] {
        if annotations.is_none_or(|a| !a.contains_key(key)) {
            add.insert(key.to_owned(), value);
        }
    }
    Some(add)
}

/// The pool block a namespace's annotations hold, if any (they count as used).
pub fn used_block(annotations: Option<&BTreeMap<String, String>>) -> Option<u32> {
    let range = annotations?.get(UID_RANGE)?;
    block_index(crate::strategy::parse_block(range).ok()?)
}

/// The annotation on the webhook's own namespace that records which blocks of the pool are
/// handed out (base64 of a bitmap, one bit a block): the record every replica updates with
/// optimistic concurrency before it writes a block on a namespace, as OpenShift's allocator
/// updates its RangeAllocation object.
pub const POOL: &str = "mock-kind.io/uid-blocks";

/// Bytes of the pool bitmap.
const POOL_BYTES: usize = BLOCKS.div_ceil(8) as usize;

/// The blocks handed out, one bit each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolBits(Vec<u8>);

impl Default for PoolBits {
    fn default() -> Self {
        Self(vec![0; POOL_BYTES])
    }
}

impl PoolBits {
    /// Reads the annotation value; anything but a bitmap of exactly the pool's size is an error.
    pub fn decode(value: &str) -> Result<Self, String> {
        use base64::Engine;
        // base64 of POOL_BYTES is under 17,000 characters: refuse longer before decoding.
        if value.len() > POOL_BYTES.div_ceil(3) * 4 {
            return Err(format!(
                "annotation {POOL} is {} bytes, too long",
                value.len()
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| format!("annotation {POOL} is not base64: {e}"))?;
        if bytes.len() != POOL_BYTES {
            return Err(format!(
                "annotation {POOL} holds {} bytes, not {POOL_BYTES}",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    pub fn contains(&self, index: u32) -> bool {
        let i = index as usize;
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub fn insert(&mut self, index: u32) {
        let i = index as usize;
        if let Some(b) = self.0.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    pub fn remove(&mut self, index: u32) {
        let i = index as usize;
        if let Some(b) = self.0.get_mut(i / 8) {
            *b &= !(1 << (i % 8));
        }
    }

    /// Takes the `n` lowest blocks free in both this record and `also_used` (blocks the
    /// namespaces already hold), marks them, and returns them; fewer when the pool runs out.
    pub fn take_lowest(&mut self, also_used: &BTreeSet<u32>, n: usize) -> Vec<u32> {
        let mut taken = Vec::with_capacity(n);
        for index in 0..BLOCKS {
            if taken.len() == n {
                break;
            }
            if !self.contains(index) && !also_used.contains(&index) {
                self.insert(index);
                taken.push(index);
            }
        }
        taken
    }
}

/// The annotation beside [`POOL`] naming the blocks reserved for namespaces whose own write
/// may not have landed yet, `name=index,…`: a replica that finds a namespace there reuses its
/// block instead of reserving a second one, so racing replicas leave no holes.
pub const PENDING: &str = "mock-kind.io/uid-blocks-pending";
/// Pending entries kept at most (about 80 bytes each, far under the 256 KiB annotation limit);
/// beyond it the oldest are forgotten, which can only leave a hole, never a duplicate.
pub const MAX_PENDING: usize = 2_000;

/// Namespaces with a reserved block, oldest first.
pub type Pending = Vec<(String, u32)>;

/// Reads [`PENDING`]; entries that do not parse (a namespace name is at most 63 characters)
/// are dropped: losing one can only leave a hole.
pub fn decode_pending(value: &str) -> Pending {
    value
        .split(',')
        .filter_map(|entry| {
            let (name, index) = entry.split_once('=')?;
            let index: u32 = index.parse().ok()?;
            let name_ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            (name_ok && index < BLOCKS).then(|| (name.to_owned(), index))
        })
        .take(MAX_PENDING)
        .collect()
}

pub fn encode_pending(pending: &Pending) -> String {
    let entries: Vec<String> = pending.iter().map(|(n, i)| format!("{n}={i}")).collect();
    entries.join(",")
}

/// Reserves a block for each of `names`: the block already pending for it if there is one,
/// else the lowest free one (free in `bits` and not in `held`). `holds` tells which pool block
/// a namespace carries now, if any: a pending entry whose namespace carries its block is done
/// (dropped); one whose namespace carries another block can never land (namespace writes are
/// conditional and re-planned), so its block is freed too. Returns the blocks in the order of
/// `names` (`None`: the pool is exhausted).
pub fn reserve(
    bits: &mut PoolBits,
    pending: &mut Pending,
    held: &BTreeSet<u32>,
    names: &[String],
    holds: impl Fn(&str) -> Option<u32>,
) -> Vec<Option<u32>> {
    pending.retain(|(name, index)| match holds(name) {
        None => true,
        Some(h) if h == *index => false,
        Some(_) => {
            bits.remove(*index);
            false
        }
    });
    let out = names
        .iter()
        .map(|name| {
            if let Some((_, index)) = pending.iter().find(|(n, _)| n == name) {
                return Some(*index);
            }
            let index = bits.take_lowest(held, 1).first().copied()?;
            pending.push((name.clone(), index));
            Some(index)
        })
        .collect();
    let excess = pending.len().saturating_sub(MAX_PENDING);
    pending.drain(..excess);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcs_levels_table() {
        let cases: &[(&str, u32, Option<&str>)] = &[
            ("first block", 0, Some("s0:c1,c0")),
            ("issue check: block 1", 1, Some("s0:c3,c2")),
            (
                "issue check: block 68 (1000680000/10000)",
                68,
                Some("s0:c26,c15"),
            ),
            ("block 2: offset 10", 2, Some("s0:c5,c0")),
            ("last block", BLOCKS - 1, Some("s0:c1000,c495")),
            ("past the pool", BLOCKS, Some("s0:c1000,c500")),
            ("past the labels", u32::MAX, None),
        ];
        for (name, index, want) in cases {
            assert_eq!(mcs_level(*index).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn lowest_free_table() {
        let cases: &[(&str, Vec<u32>, Option<u32>)] = &[
            ("empty pool", vec![], Some(0)),
            ("first taken", vec![0], Some(1)),
            ("a hole", vec![0, 1, 3], Some(2)),
            ("hole at the start", vec![1, 2], Some(0)),
            ("outside the pool ignored", vec![0, BLOCKS + 5], Some(1)),
            ("all taken", (0..BLOCKS).collect(), None),
            (
                "all but the last",
                (0..BLOCKS - 1).collect(),
                Some(BLOCKS - 1),
            ),
        ];
        for (name, used, want) in cases {
            let used: BTreeSet<u32> = used.iter().copied().collect();
            assert_eq!(lowest_free(&used), *want, "{name}");
        }
    }

    #[test]
    fn block_index_table() {
        let b = |start, size| Block { start, size };
        let cases: &[(&str, Block, Option<u32>)] = &[
            ("first", b(1_000_000_000, 10_000), Some(0)),
            ("68", b(1_000_680_000, 10_000), Some(68)),
            ("last", b(1_999_990_000, 10_000), Some(BLOCKS - 1)),
            ("past the end", b(2_000_000_000, 10_000), None),
            ("below the pool", b(999_990_000, 10_000), None),
            ("not aligned", b(1_000_000_001, 10_000), None),
            ("other size", b(1_000_000_000, 5_000), None),
            ("zero", b(0, 10_000), None),
        ];
        for (name, block, want) in cases {
            assert_eq!(block_index(*block), *want, "{name}");
            if let Some(i) = want {
                assert_eq!(block_at(*i), Some(*block), "{name}: round trip");
            }
        }
    }

    #[test]
    fn plan_table() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let fill = |pairs: &[(&str, &str)]| Plan::Fill(ann(pairs));
        type Annotations = Option<BTreeMap<String, String>>;
        let cases: Vec<(&str, Annotations, Plan)> = vec![
            ("no annotations", None, Plan::NewBlock),
            (
                "groups only: still a new block",
                Some(ann(&[(SUPPLEMENTAL_GROUPS, "5/5")])),
                Plan::NewBlock,
            ),
            (
                "range only",
                Some(ann(&[(UID_RANGE, "1000680000/10000")])),
                fill(&[
                    (SUPPLEMENTAL_GROUPS, "1000680000/10000"),
                    (MCS, "s0:c26,c15"),
                ]),
            ),
            (
                "range and groups",
                Some(ann(&[
                    (UID_RANGE, "1000010000/10000"),
                    (SUPPLEMENTAL_GROUPS, "7/1"),
                ])),
                fill(&[(MCS, "s0:c3,c2")]),
            ),
            (
                "all three, even odd ones",
                Some(ann(&[
                    (UID_RANGE, "5/5"),
                    (SUPPLEMENTAL_GROUPS, "x"),
                    (MCS, "s0:c1,c2"),
                ])),
                Plan::Complete,
            ),
            (
                "hand-made range, no mcs",
                Some(ann(&[
                    (UID_RANGE, "5000/100"),
                    (SUPPLEMENTAL_GROUPS, "5000/100"),
                ])),
                Plan::Invalid(String::new()),
            ),
            (
                "broken range",
                Some(ann(&[(UID_RANGE, "nope")])),
                Plan::Invalid(String::new()),
            ),
        ];
        for (name, annotations, want) in cases {
            let got = plan(annotations.as_ref());
            match (&got, &want) {
                (Plan::Invalid(e), Plan::Invalid(_)) => {
                    assert!(e.contains(UID_RANGE), "{name}: {e}")
                }
                _ => assert_eq!(got, want, "{name}"),
            }
        }
    }

    #[test]
    fn new_block_keeps_existing_annotations() {
        let existing = BTreeMap::from([(MCS.to_owned(), "s0:c9,c8".to_owned())]);
        let add = new_block_annotations(68, Some(&existing)).expect("in the pool");
        assert_eq!(
            add.get(UID_RANGE).map(String::as_str),
            Some("1000680000/10000")
        );
        assert_eq!(
            add.get(SUPPLEMENTAL_GROUPS).map(String::as_str),
            Some("1000680000/10000")
        );
        assert!(!add.contains_key(MCS), "an existing level wins");
        let add = new_block_annotations(1, None).expect("in the pool");
        assert_eq!(add.get(MCS).map(String::as_str), Some("s0:c3,c2"));
        assert_eq!(new_block_annotations(BLOCKS, None), None);
    }

    #[test]
    fn pool_bits_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("empty", "", false),
            ("not base64", "!!!", false),
            ("too short", "AAAA", false),
        ];
        for (name, value, ok) in cases {
            assert_eq!(PoolBits::decode(value).is_ok(), *ok, "{name}");
        }
        let mut bits = PoolBits::default();
        let used = BTreeSet::from([0, 2]);
        assert_eq!(bits.take_lowest(&used, 3), vec![1, 3, 4]);
        assert_eq!(bits.take_lowest(&used, 1), vec![5]);
        bits.remove(3);
        assert_eq!(
            bits.take_lowest(&used, 1),
            vec![3],
            "a released block is free again"
        );
        let back = PoolBits::decode(&bits.encode()).expect("round trip");
        assert_eq!(back, bits);
        assert!(back.contains(1) && back.contains(5) && !back.contains(0) && !back.contains(6));
        let mut full = PoolBits(vec![0xff; POOL_BYTES]);
        assert_eq!(full.take_lowest(&BTreeSet::new(), 1), Vec::<u32>::new());
    }

    #[test]
    fn reserve_reuses_pending_blocks() {
        let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
        let mut bits = PoolBits::default();
        let mut pending = Pending::new();
        let held = BTreeSet::from([1]);
        // Replica A reserves for a and b.
        let got = reserve(&mut bits, &mut pending, &held, &names(&["a", "b"]), |_| {
            None
        });
        assert_eq!(got, vec![Some(0), Some(2)]);
        // Replica B, racing on b and c, reads A's record: b keeps its block.
        let mut pending = decode_pending(&encode_pending(&pending));
        let got = reserve(&mut bits, &mut pending, &held, &names(&["b", "c"]), |_| {
            None
        });
        assert_eq!(got, vec![Some(2), Some(3)]);
        // Once a carries its block its entry goes (the block stays taken); c ended up with
        // another block (a replica that lost a race): its entry goes and its block is free again.
        reserve(&mut bits, &mut pending, &held, &[], |n| match n {
            "a" => Some(0),
            "c" => Some(9),
            _ => None,
        });
        assert_eq!(pending, vec![("b".to_owned(), 2)]);
        assert!(bits.contains(0) && bits.contains(2) && !bits.contains(3));
        let cases: &[(&str, &str, usize)] = &[
            ("empty", "", 0),
            ("two", "a=1,b-2=99999", 2),
            ("past the pool", "a=100000", 0),
            ("bad names", "A=1,=2,a b=3,a=x", 0),
            ("too long a name", &format!("{}=1", "a".repeat(64)), 0),
        ];
        for (name, value, want) in cases {
            assert_eq!(decode_pending(value).len(), *want, "{name}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn distinct_blocks_get_distinct_levels(a in 0..BLOCKS, b in 0..BLOCKS) {
                prop_assume!(a != b);
                prop_assert_ne!(mcs_level(a), mcs_level(b));
            }

            #[test]
            fn levels_are_two_distinct_categories_largest_first(i in any::<u32>()) {
                if let Some(level) = mcs_level(i) {
                    let cats: Vec<u64> = level
                        .strip_prefix(MCS_PREFIX)
                        .expect("prefix")
                        .split(',')
                        .map(|c| c.trim_start_matches('c').parse().expect("number"))
                        .collect();
                    prop_assert_eq!(cats.len(), 2);
                    prop_assert!(cats[0] > cats[1] && cats[0] < MCS_CATEGORIES, "{}", level);
                    // The rank of (c1, c0) in co-lex order is C(c1, 2) + C(c0, 1).
                    let rank = choose(cats[0], 2).expect("small") + cats[1];
                    prop_assert_eq!(rank, u64::from(i) * MCS_LABELS_PER_BLOCK);
                } else {
                    prop_assert!(u64::from(i) * MCS_LABELS_PER_BLOCK >= choose(MCS_CATEGORIES, 2).expect("small"));
                }
            }

            #[test]
            fn lowest_free_is_free_and_lowest(used in proptest::collection::btree_set(0..200u32, 0..150)) {
                let got = lowest_free(&used).expect("pool not full");
                prop_assert!(!used.contains(&got));
                prop_assert!((0..got).all(|i| used.contains(&i)));
            }

            #[test]
            fn pool_bits_decode_never_panics(s in "\\PC{0,64}", n in 0usize..20_000) {
                let _ = PoolBits::decode(&s);
                let _ = PoolBits::decode(&"A".repeat(n));
            }

            #[test]
            fn take_lowest_hands_out_distinct_free_blocks(
                taken in proptest::collection::btree_set(0..300u32, 0..100),
                held in proptest::collection::btree_set(0..300u32, 0..100),
                rounds in proptest::collection::vec(1usize..20, 1..5),
            ) {
                let mut bits = PoolBits::default();
                for i in &taken { bits.insert(*i); }
                let mut seen = BTreeSet::new();
                for n in rounds {
                    // Each round goes through the annotation, as replicas do.
                    bits = PoolBits::decode(&bits.encode()).expect("round trip");
                    for i in bits.take_lowest(&held, n) {
                        prop_assert!(!taken.contains(&i) && !held.contains(&i), "{}", i);
                        prop_assert!(seen.insert(i), "{} handed out twice", i);
                    }
                }
            }

            #[test]
            fn racing_reservations_never_share_a_block(
                rounds in proptest::collection::vec(proptest::collection::vec(0..30usize, 1..8), 1..6),
                value in "\\PC{0,80}",
            ) {
                let _ = decode_pending(&value);
                let mut bits = PoolBits::default();
                let mut pending = Pending::new();
                let mut owner: std::collections::BTreeMap<u32, String> = Default::default();
                for round in rounds {
                    let names: Vec<String> = round.iter().map(|i| format!("ns-{i}")).collect();
                    pending = decode_pending(&encode_pending(&pending));
                    let got = reserve(&mut bits, &mut pending, &BTreeSet::new(), &names, |_| None);
                    for (name, index) in names.iter().zip(got) {
                        let index = index.expect("pool not exhausted");
                        let first = owner.entry(index).or_insert_with(|| name.clone());
                        prop_assert_eq!(&*first, name, "block {} given to two namespaces", index);
                    }
                }
            }

            #[test]
            fn plan_never_panics(
                entries in proptest::collection::btree_map(
                    prop_oneof![Just(UID_RANGE.to_owned()), Just(SUPPLEMENTAL_GROUPS.to_owned()), Just(MCS.to_owned()), "\\PC{0,10}"],
                    prop_oneof!["[0-9/,-]{0,24}", "\\PC{0,30}"],
                    0..4,
                )
            ) {
                match plan(Some(&entries)) {
                    Plan::NewBlock => prop_assert!(!entries.contains_key(UID_RANGE)),
                    Plan::Fill(add) => prop_assert!(add.keys().all(|k| !entries.contains_key(k))),
                    Plan::Complete => prop_assert!([UID_RANGE, SUPPLEMENTAL_GROUPS, MCS].iter().all(|k| entries.contains_key(*k))),
                    Plan::Invalid(e) => prop_assert!(e.len() < 500),
                }
                let _ = used_block(Some(&entries));
            }
        }
    }
}
