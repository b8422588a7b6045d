//! The journal on real sled in a temporary directory: damaged tails are cut, damage in
//! the middle is refused (and repaired by cutting), the directory is locked, snapshots
//! truncate the log and recover to the same state.

mod common;

use common::*;
use omniroute_engine::journal::*;
use omniroute_engine::*;
use std::path::Path;

fn jc(snapshot_every: u64) -> JournalConfig {
    JournalConfig {
        snapshot_every,
        ..JournalConfig::default()
    }
}

fn center2() -> CenterConfig {
    center(vec![
        voice_chat_agent("a1", &[("billing", 5)]),
        voice_chat_agent("a2", &[("billing", 7)]),
    ])
}

/// Writes `n` submits (plus the initial configure record) and returns the live image.
fn write(dir: &Path, n: u64, snapshot_every: u64) -> EngineImage {
    let (j, _) = Journal::open_dir(dir, Some(center2()), jc(snapshot_every), 0).unwrap();
    for k in 0..n {
        j.execute(
            Command::Submit {
                request: NewInteraction::new("email", &format!("c{k}")).to_queue("billing"),
            },
            k + 1,
        )
        .unwrap();
    }
    j.read(Engine::export)
}

fn damage(dir: &Path, key: u64, how: impl FnOnce(&mut Vec<u8>)) {
    let store = SledStore::open(dir).unwrap();
    let (raw, mut value) = store.read_from(key).next().unwrap().unwrap();
    assert_eq!(raw, key.to_be_bytes());
    how(&mut value);
    store.append(key, &value).unwrap();
    store.sync().unwrap();
}

fn replayed(dir: &Path) -> (Option<Engine>, RecoveryReport) {
    let store = SledStore::open(dir).unwrap();
    replay(&store, true).unwrap()
}

#[test]
fn a_truncated_tail_record_is_cut_and_the_server_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 30, 0);
    // Records: 1 = configure, 2..=31 = submits. Tear the last one in half.
    damage(dir, 31, |v| v.truncate(v.len() / 2));
    let (engine, report) = replayed(dir);
    let cut = report.tail_cut.expect("the tail is cut");
    assert_eq!(cut.key, 31);
    assert_eq!(cut.removed, 1);
    assert!(cut.reason.contains("checksum"), "{}", cut.reason);
    assert_eq!(report.last_seq, 30);
    assert_eq!(engine.unwrap().interaction_ids().len(), 29);
    // And the server starts on it, appending after the cut.
    let (j, report) = Journal::open_dir(dir, None, jc(0), 100).unwrap();
    assert!(report.tail_cut.is_none(), "already cut");
    assert_eq!(j.last_seq(), 31, "the restart record follows record 30");
}

#[test]
fn a_flipped_byte_in_the_tail_is_cut_with_a_clear_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 30, 0);
    damage(dir, 31, |v| {
        let at = v.len() - 3;
        v[at] ^= 0x01;
    });
    let (j, report) = Journal::open_dir(dir, None, jc(0), 100).unwrap();
    let cut = report.tail_cut.expect("the tail is cut");
    assert_eq!((cut.key, cut.removed), (31, 1));
    assert!(
        cut.reason.contains("checksum mismatch: stored"),
        "{}",
        cut.reason
    );
    assert_eq!(j.read(|e| e.interaction_ids().len()), 29);
}

#[test]
fn a_flipped_byte_in_the_middle_refuses_to_start_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 30, 0);
    damage(dir, 10, |v| v[7] ^= 0x40);
    for _ in 0..2 {
        // Refused, and refusing changes nothing: the same answer twice.
        let err = Journal::open_dir(dir, None, jc(0), 100)
            .err()
            .expect("refused");
        match &err {
            JournalError::Corrupt {
                key,
                good_after,
                repair,
                ..
            } => {
                assert_eq!(*key, 10);
                assert_eq!(*good_after, 21);
                assert!(repair.contains("omniroute repair --data-dir"), "{repair}");
                assert!(repair.contains("--cut-at 10"), "{repair}");
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("log record 10 is damaged"), "{message}");
    }
    assert_eq!(Journal::<SledStore>::cut_at(dir, 10).unwrap(), 22);
    let (j, report) = Journal::open_dir(dir, None, jc(0), 100).unwrap();
    assert_eq!(report.replayed, 9);
    assert_eq!(j.read(|e| e.interaction_ids().len()), 8);
}

#[test]
fn a_missing_record_in_the_middle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 10, 0);
    {
        let store = SledStore::open(dir).unwrap();
        // Remove record 5 alone: cut from 5, then put 6.. back.
        let rest: Vec<_> = store.read_from(6).map(|e| e.unwrap()).collect();
        store.remove_from(5).unwrap();
        for (k, v) in rest {
            store
                .append(u64::from_be_bytes(k.try_into().unwrap()), &v)
                .unwrap();
        }
        store.sync().unwrap();
    }
    let err = Journal::open_dir(dir, None, jc(0), 100)
        .err()
        .expect("refused");
    assert!(
        matches!(
            &err,
            JournalError::Corrupt {
                key: 5,
                good_after: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = Journal::open_dir(tmp.path(), Some(center2()), jc(0), 0).unwrap();
    let err = Journal::open_dir(tmp.path(), Some(center2()), jc(0), 0)
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(matches!(err, JournalError::Locked { .. }), "{message}");
    assert!(
        message.contains("in use by another omniroute process")
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(first);
    Journal::open_dir(tmp.path(), None, jc(0), 1).expect("free again once the first stops");
}

#[test]
fn snapshots_truncate_the_log_and_recover_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = write(dir, 250, 40);
    let store = SledStore::open(dir).unwrap();
    // Every 40 records a `rebase` record and a snapshot of the state after it: at 41,
    // 82, 123, 164, 205, 246. The newest and the one before it are kept, and the log
    // from the one before on (206..=257).
    let snapshots: Vec<u64> = store
        .snapshots()
        .unwrap()
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(snapshots, vec![246, 205]);
    let keys: Vec<u64> = store
        .read_from(0)
        .map(|e| u64::from_be_bytes(e.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(keys, (206..=257).collect::<Vec<_>>());
    let (engine, report) = replay(&store, true).unwrap();
    assert_eq!(report.snapshot_seq, Some(246));
    assert_eq!(report.replayed, 11);
    assert_eq!(engine.unwrap().export(), live);
}

#[test]
fn a_damaged_newest_snapshot_recovers_from_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = write(dir, 250, 40);
    let newest = dir.join("snapshots").join(format!("{:020}.snap", 246));
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(&newest, bytes).unwrap();
    let store = SledStore::open(dir).unwrap();
    let (engine, report) = replay(&store, true).unwrap();
    assert_eq!(report.snapshot_seq, Some(205));
    assert_eq!(report.replayed, 52);
    assert_eq!(engine.unwrap().export(), live);
}

#[test]
fn no_usable_snapshot_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 250, 40);
    for seq in [205, 246] {
        let path = dir.join("snapshots").join(format!("{seq:020}.snap"));
        std::fs::write(&path, b"garbage").unwrap();
    }
    let err = Journal::open_dir(dir, Some(center2()), jc(0), 1)
        .err()
        .expect("refused: starting empty would lose everything");
    assert!(matches!(err, JournalError::Unrecoverable(_)), "{err}");
    assert!(
        err.to_string()
            .contains("the log starts at record 206 and no usable snapshot covers"),
        "{err}"
    );
}

#[test]
fn a_log_missing_its_beginning_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 3, 0);
    let store = SledStore::open(dir).unwrap();
    store.remove_through(1).unwrap();
    store.sync().unwrap();
    drop(store);
    // Record 1 gone and no snapshot: nothing can rebuild the state.
    let err = Journal::open_dir(dir, None, jc(0), 100)
        .err()
        .expect("refused");
    assert!(matches!(err, JournalError::Unrecoverable(_)), "{err}");
    assert!(
        err.to_string().contains("the log starts at record 2"),
        "{err}"
    );
}

#[test]
fn a_log_shorter_than_what_was_acknowledged_is_refused_until_the_loss_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 30, 0);
    {
        // What sled does when damage in its own files cuts its log short: the records
        // are gone, with no damaged record left to see.
        let store = SledStore::open(dir).unwrap();
        assert_eq!(store.mark().unwrap(), Some(31));
        store.remove_from(25).unwrap();
        store.sync().unwrap();
    }
    let err = Journal::open_dir(dir, None, jc(0), 100)
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(matches!(err, JournalError::Unrecoverable(_)), "{message}");
    assert!(
        message.contains("the log ends at record 24 but records up to 31 were acknowledged")
            && message.contains("--accept-loss"),
        "{message}"
    );
    assert_eq!(Journal::<SledStore>::accept_loss(dir).unwrap(), (31, 24));
    let (j, report) = Journal::open_dir(dir, None, jc(0), 100).unwrap();
    assert_eq!(report.replayed, 24);
    assert_eq!(j.read(|e| e.interaction_ids().len()), 23);
}

#[test]
fn a_damaged_only_snapshot_recovers_from_the_whole_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = {
        let (j, _) = Journal::open_dir(dir, Some(center2()), jc(0), 0).unwrap();
        for k in 0..5 {
            j.execute(
                Command::Submit {
                    request: NewInteraction::new("email", &format!("c{k}")).to_queue("billing"),
                },
                k + 1,
            )
            .unwrap();
        }
        let seq = j.snapshot_now(10).unwrap();
        assert_eq!(seq, 7);
        for k in 5..8 {
            j.execute(
                Command::Submit {
                    request: NewInteraction::new("email", &format!("c{k}")).to_queue("billing"),
                },
                k + 20,
            )
            .unwrap();
        }
        j.read(Engine::export)
    };
    let only = dir.join("snapshots").join(format!("{:020}.snap", 7));
    let mut bytes = std::fs::read(&only).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&only, bytes).unwrap();
    let store = SledStore::open(dir).unwrap();
    let (engine, report) = replay(&store, true).unwrap();
    assert_eq!(report.snapshot_seq, None);
    assert_eq!(report.replayed, 10, "the whole log, from record 1");
    assert_eq!(engine.unwrap().export(), live);
}

#[test]
fn an_unfinished_sled_snapshot_left_by_a_crash_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = write(dir, 5, 0);
    // What a kill during sled's own open leaves behind (sled issue #1527).
    std::fs::write(
        dir.join("sled").join("snap.00000000FFFFFFFF.generating"),
        b"",
    )
    .unwrap();
    let store = SledStore::open(dir).unwrap();
    let (engine, _) = replay(&store, true).unwrap();
    assert_eq!(engine.unwrap().export(), live);
}

#[test]
fn a_damaged_high_water_mark_is_refused_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, 5, 0);
    std::fs::write(dir.join("ACKED"), [0xABu8; 14]).unwrap(); // wrong length too
    let err = Journal::open_dir(dir, None, jc(0), 100)
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("high-water mark") && err.to_string().contains("--accept-loss"),
        "{err}"
    );
    assert_eq!(Journal::<SledStore>::accept_loss(dir).unwrap(), (0, 6));
    let (j, _) = Journal::open_dir(dir, None, jc(0), 100).unwrap();
    assert_eq!(j.read(|e| e.interaction_ids().len()), 5);
}

#[test]
fn records_larger_than_a_sled_blob_round_trip_through_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(tmp.path()).unwrap();
    let big = vec![7u8; 300 * 1024];
    store.append(1, &big).unwrap();
    store.sync().unwrap();
    let blobs: Vec<_> = std::fs::read_dir(tmp.path().join("sled").join("blobs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!blobs.is_empty(), "sled stored the value as a blob");
    let (_, value) = store.read_from(1).next().unwrap().unwrap();
    assert_eq!(value, big);
}

#[test]
fn records_are_packed_into_blocks_and_cut_or_truncated_inside_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(tmp.path()).unwrap();
    for k in 1..=50u64 {
        store.append(k, format!("record {k}").as_bytes()).unwrap();
    }
    store.sync().unwrap();
    let keys = |store: &SledStore, from: u64| -> Vec<u64> {
        store
            .read_from(from)
            .map(|e| u64::from_be_bytes(e.unwrap().0.try_into().unwrap()))
            .collect()
    };
    assert_eq!(keys(&store, 1), (1..=50).collect::<Vec<_>>());
    assert_eq!(
        keys(&store, 37),
        (37..=50).collect::<Vec<_>>(),
        "read from inside a block"
    );
    assert_eq!(store.remove_from(20).unwrap(), 31);
    assert_eq!(store.remove_through(10).unwrap(), 10);
    store.sync().unwrap();
    drop(store);
    let store = SledStore::open(tmp.path()).unwrap();
    assert_eq!(keys(&store, 0), (11..=19).collect::<Vec<_>>());
    let (_, v) = store.read_from(15).next().unwrap().unwrap();
    assert_eq!(v, b"record 15");
    // Appends go on after the cut.
    store.append(20, b"again").unwrap();
    store.sync().unwrap();
    assert_eq!(keys(&store, 19), vec![19, 20]);
}

#[test]
fn a_damaged_block_frame_is_refused_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let batched = JournalConfig {
        durability: Durability::Batched {
            flush_every_ms: 60_000,
        },
        ..jc(0)
    };
    for round in 0..2u64 {
        let config = (round == 0).then(center2);
        let (j, _) = Journal::open_dir(dir, config, batched.clone(), round * 100).unwrap();
        for k in 0..20 {
            j.execute(
                Command::Submit {
                    request: NewInteraction::new("email", &format!("c{round}-{k}"))
                        .to_queue("billing"),
                },
                round * 100 + k + 1,
            )
            .unwrap();
        }
    }
    {
        // Flip a byte in the first block's length fields (its frame, not a record).
        let db = raw_sled(dir);
        let log = db.open_tree("log").unwrap();
        let (k, v) = log.iter().next().unwrap().unwrap();
        assert_eq!(v[0], 0xB7, "a block");
        let mut v = v.to_vec();
        v[9 + 9] ^= 0x40;
        log.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let err = Journal::open_dir(dir, None, jc(0), 1_000)
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("log record 1 is damaged") && message.contains("--cut-at 1"),
        "{message}"
    );
}

fn sled_values(dir: &Path) -> Vec<u64> {
    let db = raw_sled(dir);
    let log = db.open_tree("log").unwrap();
    log.iter()
        .map(|e| u64::from_be_bytes(e.unwrap().0.as_ref().try_into().unwrap()))
        .collect()
}

/// Changes the `nth` stored sled value of the log.
fn poke(dir: &Path, nth: usize, f: impl FnOnce(&mut Vec<u8>)) {
    let db = raw_sled(dir);
    let log = db.open_tree("log").unwrap();
    let (k, v) = log.iter().nth(nth).unwrap().unwrap();
    let mut v = v.to_vec();
    f(&mut v);
    log.insert(k, v).unwrap();
    db.flush().unwrap();
}

/// The whole log (configure + 10 submits, a snapshot after them, 10 more submits)
/// packed into one block, as a batched flush or a group commit writes it.
fn one_block_spanning_a_snapshot(dir: &Path) -> (u64, u64) {
    let (snapshot, last) = {
        let (j, _) = Journal::open_dir(dir, Some(center2()), jc(0), 0).unwrap();
        let submit = |tag: &str, t: u64| {
            j.execute(
                Command::Submit {
                    request: NewInteraction::new("email", tag).to_queue("billing"),
                },
                t,
            )
            .unwrap();
        };
        for k in 0..10 {
            submit(&format!("a{k}"), k + 1);
        }
        let s = j.snapshot_now(50).unwrap();
        for k in 0..10 {
            submit(&format!("b{k}"), 60 + k);
        }
        (s, j.last_seq())
    };
    let store = SledStore::open(dir).unwrap();
    let all: Vec<_> = store.read_from(0).map(|e| e.unwrap()).collect();
    store.remove_from(0).unwrap();
    for (k, v) in &all {
        store
            .append(u64::from_be_bytes(k.as_slice().try_into().unwrap()), v)
            .unwrap();
    }
    store.sync().unwrap();
    drop(store);
    assert_eq!(sled_values(dir).len(), 1);
    (snapshot, last)
}

#[test]
fn damage_inside_a_block_is_found_record_by_record_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, last) = one_block_spanning_a_snapshot(dir);
    // A byte inside the payload of a record after the snapshot: that record is
    // damaged, intact ones follow it in the same block.
    poke(dir, 0, |v| {
        let at = v.len() * 3 / 4;
        v[at] ^= 0x01
    });
    let err = Journal::open_dir(dir, Some(center2()), jc(0), 1_000)
        .err()
        .expect("refused, not cut");
    assert!(
        matches!(err, JournalError::Corrupt { good_after, .. } if good_after > 0),
        "{err}"
    );
    assert!(last > 20);
}

#[test]
fn a_block_whose_tag_byte_alone_is_hit_is_still_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, last) = one_block_spanning_a_snapshot(dir);
    poke(dir, 0, |v| v[0] = 0x01);
    let (j, report) = Journal::open_dir(dir, Some(center2()), jc(0), 1_000).unwrap();
    assert!(report.tail_cut.is_none(), "{report:?}");
    assert!(j.last_seq() > last, "nothing lost");
    assert_eq!(j.read(|e| e.interaction_ids().len()), 20);
}

#[test]
fn a_block_frame_damaged_where_recovery_starts_inside_it_is_refused_with_its_repair() {
    for (what, hit) in [
        (
            "count",
            Box::new(|v: &mut Vec<u8>| v[8] ^= 0x01) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        ("length", Box::new(|v: &mut Vec<u8>| v[9 + 8 + 2] ^= 0x10)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (snapshot, last) = one_block_spanning_a_snapshot(dir);
        poke(dir, 0, |v| hit(v));
        let err = Journal::open_dir(dir, Some(center2()), jc(0), 1_000)
            .err()
            .unwrap_or_else(|| panic!("{what}: refused, nothing skipped"));
        let message = err.to_string();
        assert!(
            message.contains("damaged") && message.contains("--cut-at"),
            "{what}: {message}"
        );
        assert!(!message.contains("accept-loss"), "{what}: {message}");
        // The printed repair cuts there and the server starts from what is intact.
        let key: u64 = message
            .split("--cut-at ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {message}"));
        assert!(key > snapshot, "{what}: cut at {key}, snapshot {snapshot}");
        Journal::<SledStore>::cut_at(dir, key).unwrap();
        let (j, _) = Journal::open_dir(dir, Some(center2()), jc(0), 2_000)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(key <= last + 1, "{what}");
        assert!(j.read(|e| e.interaction_ids().len()) >= 10, "{what}");
    }
}

/// sled opened directly (a store just dropped may still be releasing sled's lock).
fn raw_sled(dir: &Path) -> sled::Db {
    for _ in 0..100 {
        match sled::open(dir.join("sled")) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    sled::open(dir.join("sled")).unwrap()
}
