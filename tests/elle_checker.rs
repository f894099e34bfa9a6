//! The isolation checker of `common::elle` on hand-made histories: each anomaly it reports is
//! detected in a small history made to have it, serial histories pass, and a generated serial
//! history of 50,000 transactions is checked in linear time.

mod common;

use common::elle::{AnomalyKind, Op, Outcome, Report, Txn, check};

use AnomalyKind::*;

fn kinds(report: &Report) -> Vec<AnomalyKind> {
    report.kinds().into_iter().collect()
}

/// Write skew on registers x = 1 and y = 2, both initially absent: each transaction reads both
/// and writes one.
fn write_skew() -> Vec<Txn> {
    vec![
        Txn::committed(
            1,
            vec![Op::read(1, None), Op::read(2, None), Op::write(1, 10)],
        ),
        Txn::committed(
            2,
            vec![Op::read(1, None), Op::read(2, None), Op::write(2, 20)],
        ),
    ]
}

/// Read skew on registers with the store's sequence numbers: T1 writes x = 1 and y = 2, T3
/// overwrites both, and T2 reads x from T1 but y from T3.
fn read_skew() -> Vec<Txn> {
    vec![
        Txn::committed(1, vec![Op::write(1, 11), Op::write(2, 21)]).with_seqs(0, 1),
        Txn::committed(2, vec![Op::read(1, Some(11)), Op::read(2, Some(23))]),
        Txn::committed(3, vec![Op::write(1, 13), Op::write(2, 23)]).with_seqs(1, 2),
    ]
}

#[test]
fn serial_history_passes_both_levels() {
    let history = vec![
        Txn::committed(
            1,
            vec![
                Op::read_list(1, &[]),
                Op::append(1, 1),
                Op::read_list(1, &[1]),
                Op::read(5, None),
                Op::write(5, 1),
            ],
        ),
        Txn::committed(
            2,
            vec![
                Op::read_list(1, &[1]),
                Op::append(1, 2),
                Op::append(2, 1),
                Op::read(5, Some(1)),
                Op::write(5, 2),
                Op::read(5, Some(2)),
            ],
        ),
        Txn::aborted(3, vec![Op::append(1, 3), Op::write(5, 3)]),
        Txn::committed(
            4,
            vec![
                Op::read_list(1, &[1, 2]),
                Op::ReadList {
                    key: 3,
                    value: None,
                },
                Op::read(5, Some(2)),
                Op::read_list(2, &[1]),
            ],
        ),
    ];
    let report = check(&history);
    report.assert_serializable();
    report.assert_snapshot_isolation();
    assert!(report.notes.is_empty(), "{report}");
    assert_eq!(report.to_string(), "no anomalies");
}

#[test]
fn write_skew_is_g2_item_and_passes_snapshot_isolation() {
    let report = check(&write_skew());
    assert_eq!(kinds(&report), [G2Item], "{report}");
    assert!(!report.is_serializable());
    report.assert_snapshot_isolation();
    let cycle = report.of_kind(G2Item).next().expect("a G2-item");
    let mut txns = cycle.txns.clone();
    txns.sort_unstable();
    assert_eq!(txns, [1, 2]);
    assert!(cycle.explanation.contains("-rw->"), "{}", cycle.explanation);

    // The same with the store's sequence numbers: both started from snapshot 0.
    let history: Vec<Txn> = write_skew()
        .into_iter()
        .map(|t| {
            let commit = t.id;
            t.with_seqs(0, commit)
        })
        .collect();
    let report = check(&history);
    assert_eq!(kinds(&report), [G2Item], "{report}");
    report.assert_snapshot_isolation();
}

#[test]
#[should_panic(expected = "G2-item")]
fn write_skew_fails_serializable() {
    check(&write_skew()).assert_serializable();
}

#[test]
fn write_skew_on_lists_is_g2_item() {
    let history = vec![
        Txn::committed(
            1,
            vec![
                Op::read_list(1, &[]),
                Op::read_list(2, &[]),
                Op::append(1, 1),
            ],
        ),
        Txn::committed(
            2,
            vec![
                Op::read_list(1, &[]),
                Op::read_list(2, &[]),
                Op::append(2, 1),
            ],
        ),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [G2Item], "{report}");
}

#[test]
fn lost_update_is_detected() {
    // Registers, no sequence numbers: both read x absent and wrote it.
    let history = vec![
        Txn::committed(1, vec![Op::read(1, None), Op::write(1, 1)]),
        Txn::committed(2, vec![Op::read(1, None), Op::write(1, 2)]),
        Txn::committed(3, vec![Op::read(1, Some(2))]),
    ];
    let report = check(&history);
    assert!(report.has(LostUpdate), "{report}");
    assert!(!report.is_snapshot_isolation());
    let lost = report.of_kind(LostUpdate).next().expect("a lost update");
    assert_eq!(lost.txns, [1, 2]);

    // With the commit order known it is a G-single cycle too.
    let history = vec![
        Txn::committed(1, vec![Op::read(1, None), Op::write(1, 1)]).with_seqs(0, 1),
        Txn::committed(2, vec![Op::read(1, None), Op::write(1, 2)]).with_seqs(0, 2),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [GSingle, LostUpdate], "{report}");

    // Lists: both read [1] and appended.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1)]),
        Txn::committed(2, vec![Op::read_list(1, &[1]), Op::append(1, 2)]),
        Txn::committed(3, vec![Op::read_list(1, &[1]), Op::append(1, 3)]),
        Txn::committed(4, vec![Op::read_list(1, &[1, 2, 3])]),
    ];
    let report = check(&history);
    assert!(report.has(LostUpdate), "{report}");
    assert!(report.has(GSingle), "{report}");
    assert_eq!(
        report.of_kind(LostUpdate).next().map(|a| a.txns.clone()),
        Some(vec![2, 3])
    );
}

#[test]
#[should_panic(expected = "lost-update")]
fn lost_update_fails_snapshot_isolation() {
    let history = vec![
        Txn::committed(1, vec![Op::read(1, None), Op::write(1, 1)]),
        Txn::committed(2, vec![Op::read(1, None), Op::write(1, 2)]),
    ];
    check(&history).assert_snapshot_isolation();
}

#[test]
fn aborted_read_is_g1a() {
    let history = vec![
        Txn::aborted(1, vec![Op::write(1, 1), Op::append(2, 1)]),
        Txn::committed(2, vec![Op::read(1, Some(1))]),
        Txn::committed(3, vec![Op::read_list(2, &[1])]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [G1a], "{report}");
    let txns: Vec<Vec<u64>> = report.of_kind(G1a).map(|a| a.txns.clone()).collect();
    assert_eq!(txns, [vec![2, 1], vec![3, 1]]);
    assert!(
        report.anomalies[0].explanation.contains("aborted"),
        "{report}"
    );
}

#[test]
fn intermediate_read_is_g1b() {
    // A register overwritten by its writer before commit.
    let history = vec![
        Txn::committed(1, vec![Op::write(1, 1), Op::write(1, 2)]),
        Txn::committed(2, vec![Op::read(1, Some(1))]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [G1b], "{report}");
    assert_eq!(report.anomalies[0].txns, [2, 1]);

    // A list appended to again by its writer before commit.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1), Op::append(1, 2)]),
        Txn::committed(2, vec![Op::read_list(1, &[1])]),
        Txn::committed(3, vec![Op::read_list(1, &[1, 2])]),
    ];
    let report = check(&history);
    assert!(report.has(G1b), "{report}");
    assert_eq!(report.of_kind(G1b).count(), 1);
}

#[test]
fn write_cycle_is_g0() {
    // T1 and T2 append to lists 1 and 2 in opposite orders.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1), Op::append(2, 2)]),
        Txn::committed(2, vec![Op::append(1, 2), Op::append(2, 1)]),
        Txn::committed(
            3,
            vec![Op::read_list(1, &[1, 2]), Op::read_list(2, &[1, 2])],
        ),
    ];
    let report = check(&history);
    assert!(report.has(G0), "{report}");
    let g0 = report.of_kind(G0).next().expect("a G0");
    let mut txns = g0.txns.clone();
    txns.sort_unstable();
    assert_eq!(txns, [1, 2]);
    assert!(!g0.explanation.contains("-wr->") && !g0.explanation.contains("-rw->"));
    assert!(!report.is_snapshot_isolation());
}

#[test]
fn circular_information_flow_is_g1c() {
    // Each transaction reads the other's append.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1), Op::read_list(2, &[1])]),
        Txn::committed(2, vec![Op::append(2, 1), Op::read_list(1, &[1])]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [G1c], "{report}");
    assert!(!report.is_snapshot_isolation());

    // The same with registers.
    let history = vec![
        Txn::committed(1, vec![Op::write(1, 1), Op::read(2, Some(1))]),
        Txn::committed(2, vec![Op::write(2, 1), Op::read(1, Some(1))]),
    ];
    assert_eq!(kinds(&check(&history)), [G1c]);
}

#[test]
fn read_skew_is_g_single() {
    let report = check(&read_skew());
    assert_eq!(kinds(&report), [GSingle], "{report}");
    let cycle = &report.anomalies[0];
    assert_eq!(cycle.txns, [2, 3]);
    assert!(
        cycle.explanation.contains("T2 -rw-> T3 -wr-> T2"),
        "{}",
        cycle.explanation
    );

    // On lists, without sequence numbers: T2 sees list 1 before T3's append, list 2 after.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1), Op::append(2, 1)]),
        Txn::committed(2, vec![Op::read_list(1, &[1]), Op::read_list(2, &[1, 3])]),
        Txn::committed(3, vec![Op::append(1, 3), Op::append(2, 3)]),
        Txn::committed(4, vec![Op::read_list(1, &[1, 3])]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [GSingle], "{report}");
}

#[test]
#[should_panic(expected = "G-single")]
fn g_single_fails_snapshot_isolation() {
    check(&read_skew()).assert_snapshot_isolation();
}

#[test]
fn incompatible_list_orders_are_reported() {
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1)]),
        Txn::committed(2, vec![Op::append(1, 2)]),
        Txn::committed(3, vec![Op::append(1, 3)]),
        Txn::committed(4, vec![Op::read_list(1, &[1, 2, 3])]),
        Txn::committed(5, vec![Op::read_list(1, &[1, 3])]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [IncompatibleOrder], "{report}");
    assert_eq!(report.anomalies[0].txns, [4, 5]);
    assert!(
        report.anomalies[0].explanation.contains("index 1"),
        "{report}"
    );

    // A value twice in one read.
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1)]),
        Txn::committed(2, vec![Op::read_list(1, &[1, 1])]),
    ];
    assert_eq!(kinds(&check(&history)), [IncompatibleOrder]);
}

#[test]
fn internal_inconsistency_is_reported() {
    let history = vec![
        // Its own append is missing from its read.
        Txn::committed(1, vec![Op::append(1, 1), Op::read_list(1, &[])]),
        // It reads another value than it just wrote.
        Txn::committed(2, vec![Op::write(2, 2), Op::read(2, Some(3))]),
        Txn::committed(3, vec![Op::write(2, 3)]),
        // Two reads of list 3 without an append between disagree.
        Txn::committed(4, vec![Op::append(3, 1)]),
        Txn::committed(
            5,
            vec![
                Op::read_list(3, &[]),
                Op::read_list(3, &[1]),
                Op::read_list(3, &[]),
            ],
        ),
    ];
    let report = check(&history);
    let internal: Vec<u64> = report.of_kind(Internal).map(|a| a.txns[0]).collect();
    assert_eq!(internal, [1, 2, 5], "{report}");
}

#[test]
fn garbage_reads_are_reported() {
    let history = vec![
        Txn::committed(1, vec![Op::append(1, 1), Op::write(2, 1)]),
        Txn::committed(2, vec![Op::read_list(1, &[1, 99]), Op::read(2, Some(98))]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [GarbageRead], "{report}");
    assert_eq!(report.of_kind(GarbageRead).count(), 2);
    assert!(report.anomalies[0].explanation.contains("99"), "{report}");
}

#[test]
fn duplicate_writes_are_reported() {
    let history = vec![
        Txn::committed(1, vec![Op::write(1, 1)]),
        Txn::committed(2, vec![Op::write(1, 1)]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [DuplicateWrite], "{report}");
    assert_eq!(report.anomalies[0].txns, [1, 2]);
}

#[test]
fn unknown_transactions_count_when_observed() {
    // T1's commit timed out, but T2 read its append: it committed, so the wr cycle is G1c (and
    // not G1a).
    let history = vec![
        Txn::unknown(1, vec![Op::append(1, 1), Op::read_list(2, &[1])]),
        Txn::committed(2, vec![Op::append(2, 1), Op::read_list(1, &[1])]),
    ];
    let report = check(&history);
    assert_eq!(kinds(&report), [G1c], "{report}");

    // Observed through another unknown transaction that is itself observed.
    let history = vec![
        Txn::unknown(1, vec![Op::write(1, 1)]),
        Txn::unknown(2, vec![Op::read(1, Some(1)), Op::write(2, 2)]),
        Txn::committed(3, vec![Op::read(2, Some(2)), Op::read(1, Some(1))]),
    ];
    check(&history).assert_serializable();

    // Unobserved unknown transactions and aborted ones are left out: their reads (here
    // garbage, and a lost update) are not held against the history.
    let history = vec![
        Txn::committed(1, vec![Op::read(1, None), Op::write(1, 1)]),
        Txn::unknown(
            2,
            vec![Op::read(1, None), Op::write(1, 2), Op::read(3, Some(77))],
        ),
        Txn::aborted(
            3,
            vec![Op::read(1, None), Op::write(1, 3), Op::read(3, Some(78))],
        ),
        Txn::committed(4, vec![Op::read(1, Some(1))]),
    ];
    let report = check(&history);
    report.assert_serializable();

    // The same unknown transaction, observed: now it committed, and so lost T1's update.
    let mut history = history;
    history[3] = Txn::committed(4, vec![Op::read(1, Some(2))]);
    let report = check(&history);
    assert!(report.has(LostUpdate), "{report}");
    assert!(report.has(GarbageRead), "{report}");
    assert!(!report.has(G1a), "{report}");
}

#[test]
fn outcome_helpers_build_what_they_say() {
    let t = Txn::unknown(7, vec![Op::write(1, 1)]).with_seqs(3, 4);
    assert_eq!(t.outcome, Outcome::Unknown);
    assert_eq!((t.start_seq, t.commit_seq), (Some(3), Some(4)));
    assert_eq!(GSingle.to_string(), "G-single");
    assert!(G2Item.allowed_under_snapshot_isolation());
    assert!(!GSingle.allowed_under_snapshot_isolation());
}

/// A serial history of `n` transactions over 1,000 lists and 1,000 registers: each reads a list
/// and appends to it, reads a register and overwrites it, and reads another register.
fn serial_history(n: u64, seqs: bool) -> Vec<Txn> {
    const KEYS: u64 = 1000;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); KEYS as usize];
    let mut registers: Vec<Option<u64>> = vec![None; KEYS as usize];
    (0..n)
        .map(|i| {
            let (l, r, r2) = (next() % KEYS, next() % KEYS, next() % KEYS);
            let mut ops = vec![Op::read_list(l, &lists[l as usize]), Op::append(l, i)];
            lists[l as usize].push(i);
            ops.push(Op::read(r, registers[r as usize]));
            ops.push(Op::write(r, i));
            registers[r as usize] = Some(i);
            ops.push(Op::read(r2, registers[r2 as usize]));
            let txn = Txn::committed(i, ops);
            if seqs { txn.with_seqs(i, i + 1) } else { txn }
        })
        .collect()
}

#[test]
fn a_large_serial_history_passes_in_linear_time() {
    let history = serial_history(50_000, true);
    let report = check(&history);
    report.assert_serializable();
    assert!(report.notes.is_empty(), "{report}");
}

#[test]
fn a_large_serial_history_without_seqs_passes() {
    let history = serial_history(50_000, false);
    let report = check(&history);
    report.assert_serializable();
    assert!(report.notes.is_empty(), "{report}");
}

#[test]
fn a_large_history_with_one_anomaly_finds_it() {
    // The serial history with one stale read injected at the end: the last transaction reads a
    // register as the first transaction to write it left it, though later ones overwrote it.
    let mut history = serial_history(50_000, true);
    let (key, first) = history
        .iter()
        .find_map(|t| match t.ops[3] {
            Op::Write { key, value } => Some((key, value)),
            _ => None,
        })
        .expect("a write");
    let last = history.last_mut().expect("a transaction");
    last.ops.insert(0, Op::read(key, Some(first)));
    let report = check(&history);
    assert!(report.has(GSingle) || report.has(G2Item), "{report}");
    assert!(!report.is_serializable());
}
