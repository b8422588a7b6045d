//! The durable log, measured on this machine's disk (sled in a temporary directory):
//!
//! * durable appends per second and append→durable-ack latency (p50/p99/max) with 1, 8
//!   and 64 concurrent writers, in `sync` mode (fsync before the ack, group commit) and
//!   in `batched` mode;
//! * recovery time for logs of 100k and 1M records (replayed from the log alone, every
//!   record's events verified), and bytes on disk per record;
//! * disk use over a long run with snapshots every 100k records;
//! * forgetting old finished work (`purge_finished_before`, which each snapshot runs
//!   under the sequencer) with 100k and 1M finished interactions held.
//!
//! `cargo bench --bench journal` (all), or name parts: `cargo bench --bench journal --
//! codec append recovery snapshot disk purge`. `OMNIROUTE_BENCH_QUICK=1` shrinks every size tenfold.
//!
//! Each operation is a real engine operation with its record: a submit into a queue
//! whose agents are away (the interaction waits: `created` + `queued` events), then an
//! abandon of it (`abandoned` event), alternating.

use omniroute_engine::journal::{Command, Durability, Journal, JournalConfig, LogStore, SledStore};
use omniroute_engine::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn center() -> CenterConfig {
    let mut queue = QueueDef::new("q", &[("s", 1)]);
    queue.max_waiting = u32::MAX;
    CenterConfig {
        channels: ChannelDef::builtin(),
        skills: vec![SkillDef {
            name: "s".into(),
            is_language: false,
        }],
        agents: (0..8)
            .map(|n| AgentDef {
                id: format!("a{n}"),
                name: format!("a{n}"),
                skills: vec![SkillLevel {
                    skill: "s".into(),
                    proficiency: 5,
                }],
                capacity: CapacityProfile::simple(10, &["voice", "chat", "email"]),
            })
            .collect(),
        queues: vec![queue],
        routing: RoutingConfig {
            rules: vec![],
            default_queue: Some("q".into()),
        },
        settings: Settings::default(),
    }
}

fn quick() -> bool {
    std::env::var_os("OMNIROUTE_BENCH_QUICK").is_some()
}

fn scaled(n: u64) -> u64 {
    if quick() { n / 10 } else { n }
}

fn journal_config(durability: Durability, snapshot_every: u64) -> JournalConfig {
    JournalConfig {
        durability,
        snapshot_every,
        ..JournalConfig::default()
    }
}

/// One writer's operations: submit, then abandon what it submitted. Returns each
/// operation's latency (call → durable ack) and the number of events logged.
fn writer(
    journal: &Journal<SledStore>,
    ops: u64,
    now: &dyn Fn() -> TimeMs,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(ops as usize);
    let mut events = 0;
    let mut pending = None;
    for n in 0..ops {
        let command = match pending.take() {
            Some(interaction) => Command::Abandon { interaction },
            None => Command::Submit {
                request: NewInteraction::new("chat", "c").to_queue("q"),
            },
        };
        let started = Instant::now();
        let ack = journal.execute(command, now()).expect("operation");
        latencies.push(started.elapsed());
        events += ack.events.len();
        if n % 2 == 0 {
            pending = ack.interaction;
        }
    }
    (latencies, events)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn append(durability: Durability, label: &str) {
    for writers in [1usize, 8, 64] {
        let tmp = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open_dir(tmp.path(), Some(center()), journal_config(durability, 0), 0)
                .unwrap();
        let total = scaled(match durability {
            Durability::Sync => 40_000,
            Durability::Batched { .. } => 200_000,
        });
        let per_writer = (total / writers as u64).max(2) & !1;
        let clock = Instant::now();
        let now = || clock.elapsed().as_millis() as TimeMs;
        let started = Instant::now();
        let mut events = 0;
        let mut latencies: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|_| s.spawn(|| writer(&journal, per_writer, &now)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    let (latencies, n) = h.join().unwrap();
                    events += n;
                    latencies
                })
                .collect()
        });
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let ops = latencies.len() as f64;
        println!(
            "append {label:<12} writers={writers:<3} ops={:<7} {:>7.0} records/s {:>7.0} events/s  p50={:>8.1?} p99={:>8.1?} max={:>8.1?}",
            latencies.len(),
            ops / elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().unwrap(),
        );
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Writes `records` records quickly (batched mode, 4 writers), then measures a full
/// recovery from the log alone.
fn recovery(records: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let batched = Durability::Batched {
            flush_every_ms: 100,
        };
        let (journal, _) =
            Journal::open_dir(dir, Some(center()), journal_config(batched, 0), 0).unwrap();
        let now = || 0;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| writer(&journal, (records / 4) & !1, &now));
            }
        });
        journal.store().sync().unwrap();
    }
    let disk = dir_bytes(dir);
    {
        // Where recovery's time goes: reading the store, decoding and checking records.
        let store = SledStore::open(dir).unwrap();
        let started = Instant::now();
        let mut bytes = 0usize;
        for entry in store.read_from(0) {
            bytes += entry.unwrap().1.len();
        }
        let read = started.elapsed();
        let started = Instant::now();
        let mut n = 0u64;
        for entry in store.read_from(0) {
            let (k, v) = entry.unwrap();
            let key = omniroute_engine::journal::codec::key(&k).unwrap();
            std::hint::black_box(omniroute_engine::journal::codec::decode_record(key, &v).unwrap());
            n += 1;
        }
        println!(
            "recovery     records={n:<8} read {read:.2?} ({bytes} bytes); read+decode {:.2?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let (journal, report) =
        Journal::open_dir(dir, None, journal_config(Durability::Sync, 0), 1).unwrap();
    let elapsed = started.elapsed();
    let live = journal.read(|e| e.interaction_ids().len());
    println!(
        "recovery     records={:<8} {:>7.2?}  ({:.0} records/s, verified)  disk={:.1} MB  {:.0} bytes/record  interactions={live}",
        report.replayed,
        elapsed,
        report.replayed as f64 / elapsed.as_secs_f64(),
        disk as f64 / 1e6,
        disk as f64 / report.replayed as f64,
    );
}

/// A long run with snapshots every 100k records: disk use sampled as it goes.
fn disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let batched = Durability::Batched {
        flush_every_ms: 100,
    };
    let snapshot_every = scaled(100_000);
    let mut config = journal_config(batched, snapshot_every);
    config.retain_finished_ms = Some(0);
    let (journal, _) = Journal::open_dir(dir, Some(center()), config, 0).unwrap();
    let total = scaled(2_000_000);
    let step = total / 10;
    let mut samples = Vec::new();
    let mut t = 0;
    for _ in 0..10 {
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let now = || t;
                    writer(&journal, (step / 2) & !1, &now)
                });
            }
        });
        t += 1_000;
        journal.store().sync().unwrap();
        samples.push((journal.last_seq(), dir_bytes(dir)));
    }
    let line: Vec<String> = samples
        .iter()
        .map(|(seq, bytes)| format!("{}k:{:.1}MB", seq / 1_000, *bytes as f64 / 1e6))
        .collect();
    println!(
        "disk         snapshot every {snapshot_every} records, finished work purged at each: {}",
        line.join("  ")
    );
}

/// Encoding and decoding one typical record (a submit with its `created` and `offered`
/// events), framing and checksum included.
fn codec() {
    use omniroute_engine::journal::{Record, codec};
    let engine = Engine::new(center()).unwrap();
    let mut events = Vec::new();
    engine
        .set_presence("a0", Presence::Available, 0, &mut events)
        .unwrap();
    events.clear();
    let request = NewInteraction::new("chat", "customer-42").to_queue("q");
    engine.submit(request.clone(), 1, &mut events).unwrap();
    let record = Record {
        seq: 123_456,
        now_ms: 1_764_000_000_000,
        command: Command::Submit { request },
        events,
    };
    let n = 200_000;
    let started = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..n {
        bytes = std::hint::black_box(codec::encode_record(std::hint::black_box(&record)));
    }
    let encode = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(codec::decode_record(123_456, std::hint::black_box(&bytes)).unwrap());
    }
    let decode = started.elapsed() / n;
    println!(
        "codec        submit record with 2 events: {} bytes, encode {encode:.2?}, decode+verify {decode:.2?}",
        bytes.len()
    );
}

/// A snapshot with `waiting` interactions in queue: how long `snapshot_now` takes (the
/// rebase under the sequencer, then the encoding and the write), how long a read
/// issued 1 ms in waits for the sequencer, and how long one operation issued meanwhile
/// waits (to its acknowledgement: its batched flush included).
fn snapshot(waiting: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let batched = Durability::Batched {
        flush_every_ms: 100,
    };
    let (journal, _) =
        Journal::open_dir(tmp.path(), Some(center()), journal_config(batched, 0), 0).unwrap();
    for _ in 0..waiting {
        journal
            .execute(
                Command::Submit {
                    request: NewInteraction::new("chat", "c").to_queue("q"),
                },
                1,
            )
            .unwrap();
    }
    let (export, restore) = journal.read(|e| {
        let started = Instant::now();
        let image = e.export();
        let export = started.elapsed();
        let started = Instant::now();
        let restored = Engine::restore(image).unwrap();
        let restore = started.elapsed();
        drop(restored);
        (export, restore)
    });
    println!("snapshot     waiting={waiting:<7} export {export:.1?}, restore {restore:.1?}");
    let (total, blocked, stalled) = std::thread::scope(|s| {
        let snap = s.spawn(|| {
            let started = Instant::now();
            journal.snapshot_now(2).unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(1));
        // A read needs the sequencer only: how long the snapshot holds it.
        let reader = s.spawn(|| {
            let started = Instant::now();
            journal.read(|_| ());
            started.elapsed()
        });
        let started = Instant::now();
        journal
            .execute(
                Command::SetPresence {
                    agent: "a0".into(),
                    presence: Presence::Away { reason: "x".into() },
                },
                2,
            )
            .unwrap();
        let blocked = started.elapsed();
        (snap.join().unwrap(), blocked, reader.join().unwrap())
    });
    let bytes: u64 = std::fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "snapshot     waiting={waiting:<7} snapshot_now {total:>8.1?}  sequencer held {stalled:>8.1?}  an operation issued meanwhile waited {blocked:>8.1?} (with its flush)  file {:.1} MB",
        bytes as f64 / 1e6
    );
}

/// How long forgetting old finished work takes with `finished` finished interactions
/// held (one a millisecond): when none is old enough — the usual case at a snapshot —
/// and when the oldest 1 % is. The engine alone: the time is what the sequencer is held.
fn purge(finished: u64) {
    let engine = Engine::new(center()).unwrap();
    let mut events = Vec::new();
    for n in 0..finished {
        events.clear();
        let id = engine
            .submit(
                NewInteraction::new("chat", "c").to_queue("q"),
                n,
                &mut events,
            )
            .unwrap();
        engine.abandon(id, n, &mut events).unwrap();
    }
    let time = |cutoff: u64| {
        let started = Instant::now();
        let purged = engine.purge_finished_before(cutoff);
        (started.elapsed(), purged)
    };
    let (none, none_purged) = time(0);
    let (some, some_purged) = time(finished / 100);
    assert_eq!((none_purged, some_purged), (0, (finished / 100) as usize));
    println!(
        "purge        finished={finished:<8} nothing due {none:>9.1?}   oldest 1 % ({some_purged}) {some:>9.1?}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    println!(
        "omniroute journal bench — sled 0.34 on {}, {} cores",
        std::env::temp_dir().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if want("codec") {
        codec();
    }
    if want("append") {
        append(Durability::Sync, "sync");
        append(Durability::Batched { flush_every_ms: 10 }, "batched:10ms");
    }
    if want("recovery") {
        recovery(scaled(100_000));
        recovery(scaled(1_000_000));
    }
    if want("snapshot") {
        snapshot(scaled(10_000));
        snapshot(scaled(100_000));
    }
    if want("disk") {
        disk();
    }
    if want("purge") {
        purge(scaled(100_000));
        purge(scaled(1_000_000));
    }
}
