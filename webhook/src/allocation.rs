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

/// OpenShift's repair of its allocation record: rebuilt from the blocks the namespaces hold
/// now, so the blocks of deleted namespaces are free again. `namespaces` maps every namespace
/// listed after the record was read to the pool block it carries. A pending reservation stays
/// only while its namespace is listed without a block (its write may still land): one whose
/// namespace carries a block is settled, and one whose namespace is gone was deleted (a
/// reservation is made for a namespace that exists, before the record was read). Returns the
/// record, the pending reservations left and how many blocks it frees compared with `before`.
pub fn repaired(
    before: &PoolBits,
    namespaces: &BTreeMap<String, Option<u32>>,
    pending: &Pending,
) -> (PoolBits, Pending, usize) {
    let left: Pending = pending
        .iter()
        .filter(|(name, _)| matches!(namespaces.get(name), Some(None)))
        .cloned()
        .collect();
    let mut bits = PoolBits::default();
    for index in namespaces
        .values()
        .flatten()
        .chain(left.iter().map(|(_, i)| i))
    {
        bits.insert(*index);
    }
    let freed = (0..BLOCKS)
        .filter(|i| before.contains(*i) && !bits.contains(*i))
        .count();
    (bits, left, freed)
}

#[cfg(test)]
#[path = "allocation_tests.rs"]
mod tests;
