//! The allocation tables: check values from the issue, the pool record, racing reservations.

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

#[test]
fn repair_keeps_held_and_pending_and_frees_the_rest() {
    let mut before = PoolBits::default();
    for i in [0, 1, 2, 5, 9, 11, 12] {
        before.insert(i);
    }
    // a and b hold 0 and 5; c's write of 9 is pending; d landed 11 (its entry is settled);
    // 12 was reserved for a namespace deleted since; 1 and 2 were deleted namespaces'; e holds
    // 7, an exported range never recorded, which is kept.
    let namespaces = BTreeMap::from([
        ("a".to_owned(), Some(0)),
        ("b".to_owned(), Some(5)),
        ("c".to_owned(), None),
        ("d".to_owned(), Some(11)),
        ("e".to_owned(), Some(7)),
    ]);
    let pending: Pending = vec![
        ("c".to_owned(), 9),
        ("d".to_owned(), 11),
        ("deleted".to_owned(), 12),
    ];
    let (bits, left, freed) = repaired(&before, &namespaces, &pending);
    assert_eq!(freed, 3, "1, 2 and 12");
    assert_eq!(left, vec![("c".to_owned(), 9)]);
    for (i, want) in [
        (0, true),
        (1, false),
        (2, false),
        (5, true),
        (7, true),
        (9, true),
        (11, true),
        (12, false),
    ] {
        assert_eq!(bits.contains(i), want, "block {i}");
    }
    let (again, left_again, freed) = repaired(&bits, &namespaces, &left);
    assert_eq!(
        (again.encode(), left_again, freed),
        (bits.encode(), left, 0),
        "a second pass changes nothing"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn repair_holds_exactly_the_held_and_open_pending_blocks(
            before in proptest::collection::btree_set(0..BLOCKS, 0..40),
            namespaces in proptest::collection::btree_map("[a-e]{1,2}", proptest::option::of(0..BLOCKS), 0..20),
            pending in proptest::collection::vec(("[a-f]{1,2}", 0..BLOCKS), 0..10),
        ) {
            let mut bits = PoolBits::default();
            for i in &before {
                bits.insert(*i);
            }
            let (after, left, freed) = repaired(&bits, &namespaces, &pending);
            prop_assert!(left.iter().all(|(n, _)| namespaces.get(n) == Some(&None)));
            prop_assert!(left.iter().all(|e| pending.contains(e)));
            let kept: BTreeSet<u32> = namespaces.values().flatten().copied().chain(left.iter().map(|(_, i)| *i)).collect();
            for i in before.iter().chain(kept.iter()).chain(pending.iter().map(|(_, i)| i)) {
                prop_assert_eq!(after.contains(*i), kept.contains(i), "block {}", i);
            }
            prop_assert_eq!(freed, before.difference(&kept).count());
        }

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
