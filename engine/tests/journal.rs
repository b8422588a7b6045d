//! The journal: encoding of every record kind, replay equals the live state (with and
//! without snapshots), the restart rules, durability modes and group commit.

mod common;

use common::random::*;
use common::*;
use omniroute_engine::journal::{self, *};
use omniroute_engine::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

type MemJournal = Journal<Arc<MemoryStore>>;

fn config(snapshot_every: u64) -> JournalConfig {
    JournalConfig {
        snapshot_every,
        reconnect_grace_ms: 30_000,
        retain_finished_ms: Some(20_000),
        ..JournalConfig::default()
    }
}

fn id(n: u64) -> InteractionId {
    InteractionId(n)
}

/// One of every command and every event.
fn every_record() -> Vec<Record> {
    let center = center(vec![voice_chat_agent("a1", &[("billing", 5)])]);
    let commands = vec![
        Command::Configure {
            config: center.clone(),
        },
        Command::Submit {
            request: {
                let mut r = NewInteraction::new("chat", "cust-1").to_queue("billing");
                r.attributes.insert("lang".into(), "fr".into());
                r.priority = Some(-3);
                r.preferred_agent = Some("a1".into());
                r.preferred_fallback_ms = 5_000;
                r
            },
        },
        Command::Abandon { interaction: id(7) },
        Command::SetPresence {
            agent: "a1".into(),
            presence: Presence::Away {
                reason: "lunch".into(),
            },
        },
        Command::Accept {
            agent: "a1".into(),
            interaction: id(7),
        },
        Command::Reject {
            agent: "a1".into(),
            interaction: id(7),
        },
        Command::Complete {
            agent: "a1".into(),
            interaction: id(7),
            wrap_up_code: Some("resolved".into()),
        },
        Command::Transfer {
            agent: "a1".into(),
            interaction: id(7),
            to: TransferTarget::Agent("a2".into()),
        },
        Command::Timer {
            timer: Timer::OfferTimeout {
                interaction: id(7),
                offer_seq: 2,
            },
        },
        Command::Timer {
            timer: Timer::WrapUpEnd { interaction: id(7) },
        },
        Command::Timer {
            timer: Timer::Relaxation {
                interaction: id(7),
                step: 1,
            },
        },
        Command::Timer {
            timer: Timer::PreferredFallback { interaction: id(7) },
        },
        Command::Restart,
        Command::ReclaimWork { agent: "a1".into() },
        Command::PurgeFinished {
            finished_before_ms: 99,
        },
    ];
    let a: Arc<str> = Arc::from("a1");
    let q: Arc<str> = Arc::from("billing");
    let events = vec![
        Event::Created {
            interaction: id(7),
            queue: q.clone(),
            channel: Arc::from("chat"),
            priority: 4,
            rule: Some(Arc::from("vip")),
        },
        Event::Queued {
            interaction: id(7),
            queue: q.clone(),
            next_relaxation: Some((1, 99)),
            preferred_fallback_ms: Some(5),
        },
        Event::Offered {
            interaction: id(7),
            agent: a.clone(),
            queue: q.clone(),
            channel: Arc::from("voice"),
            offer_seq: 3,
            deadline_ms: 1_000,
            auto_accepted: true,
        },
        Event::Accepted {
            interaction: id(7),
            agent: a.clone(),
        },
        Event::Rejected {
            interaction: id(7),
            agent: a.clone(),
        },
        Event::OfferTimedOut {
            interaction: id(7),
            agent: a.clone(),
        },
        Event::OfferRescinded {
            interaction: id(7),
            agent: a.clone(),
            reason: RescindReason::ServerRestart,
        },
        Event::Completed {
            interaction: id(7),
            agent: a.clone(),
            wrap_up_code: None,
            wrap_up_until_ms: Some(3),
        },
        Event::WrapUpEnded {
            interaction: id(7),
            agent: a.clone(),
        },
        Event::Abandoned {
            interaction: id(7),
            queue: q.clone(),
            previous_state: InteractionState::Offered,
        },
        Event::Transferred {
            interaction: id(7),
            from_agent: None,
            to: TransferTarget::Queue("sales".into()),
        },
        Event::Relaxed {
            interaction: id(7),
            queue: q.clone(),
            step: 0,
        },
        Event::PreferredFallback { interaction: id(7) },
        Event::OfferLimitReached {
            interaction: id(7),
            queue: q,
            offers: 3,
        },
        Event::PresenceChanged {
            agent: a,
            presence: Presence::Available,
        },
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(n, command)| Record {
            seq: n as u64 + 1,
            now_ms: 1_700_000_000_000 + n as u64,
            command,
            events: events.clone(),
        })
        .collect()
}

#[test]
fn every_command_and_event_round_trips() {
    for record in every_record() {
        let bytes = journal::codec::encode_record(&record);
        let back = journal::codec::decode_record(record.seq, &bytes).unwrap();
        assert_eq!(back, record);
        // The checksum covers the key: the same bytes under another key are refused.
        let misfiled = journal::codec::decode_record(record.seq + 1, &bytes).unwrap_err();
        assert!(
            matches!(misfiled, journal::codec::DecodeError::Checksum { .. }),
            "{misfiled}"
        );
    }
}

#[test]
fn every_byte_flip_and_truncation_is_detected() {
    let record = &every_record()[1];
    let bytes = journal::codec::encode_record(record);
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        assert!(
            journal::codec::decode_record(record.seq, &bad).is_err(),
            "flip at byte {at} went unnoticed"
        );
    }
    for len in 0..bytes.len() {
        assert!(journal::codec::decode_record(record.seq, &bytes[..len]).is_err());
    }
}

/// Drives a journal with the random operations of the engine's property tests.
struct Driver {
    journal: Journal<Arc<TestStore>>,
    store: Arc<TestStore>,
    config: CenterConfig,
    now: TimeMs,
    submitted: Vec<InteractionId>,
}

impl Driver {
    fn new(shape: &Shape, snapshot_every: u64, fail_snapshots: bool) -> Driver {
        let store = Arc::new(TestStore::default());
        store
            .fail_snapshots
            .store(fail_snapshots, Ordering::Relaxed);
        let config = build(shape);
        let (journal, report) = Journal::open(
            store.clone(),
            Some(config.clone()),
            self::config(snapshot_every),
            0,
        )
        .unwrap();
        assert!(!report.restarted);
        Driver {
            journal,
            store,
            config,
            now: 0,
            submitted: Vec::new(),
        }
    }

    fn agent_id(&self, n: usize) -> String {
        self.config.agents[n % self.config.agents.len()].id.clone()
    }

    fn work(&self, agent: &str, phase: &str, pick: usize) -> Option<InteractionId> {
        let work: Vec<_> = self
            .journal
            .read(|e| e.agent(agent).unwrap().work)
            .into_iter()
            .filter(|w| w.phase == phase)
            .collect();
        (!work.is_empty()).then(|| work[pick % work.len()].interaction)
    }

    fn apply(&mut self, op: &Op) {
        let command = match op.clone() {
            Op::Advance { ms } => {
                self.now += ms;
                self.journal.fire_due(self.now).unwrap();
                return;
            }
            Op::Presence { agent, kind } => Command::SetPresence {
                agent: self.agent_id(agent),
                presence: match kind {
                    0 => Presence::Offline,
                    1 => Presence::Away {
                        reason: "break".into(),
                    },
                    _ => Presence::Available,
                },
            },
            Op::Submit {
                channel,
                queue,
                priority,
                preferred,
            } => {
                let mut request =
                    NewInteraction::new(CHANNELS[channel], "c").to_queue(QUEUES[queue]);
                if let Some(p) = preferred {
                    request.preferred_agent = Some(self.agent_id(p));
                    request.preferred_fallback_ms = 4_000;
                }
                request.priority = Some(i32::from(priority));
                Command::Submit { request }
            }
            Op::Accept { agent, pick } | Op::Reject { agent, pick } => {
                let agent = self.agent_id(agent);
                let Some(interaction) = self.work(&agent, "offered", pick) else {
                    return;
                };
                if matches!(op, Op::Accept { .. }) {
                    Command::Accept { agent, interaction }
                } else {
                    Command::Reject { agent, interaction }
                }
            }
            Op::Complete { agent, pick, code } => {
                let agent = self.agent_id(agent);
                let Some(interaction) = self.work(&agent, "assigned", pick) else {
                    return;
                };
                Command::Complete {
                    agent,
                    interaction,
                    wrap_up_code: Some(["ok", "ko", "other"][code].into()),
                }
            }
            Op::Abandon { pick } => {
                if self.submitted.is_empty() {
                    return;
                }
                Command::Abandon {
                    interaction: self.submitted[pick % self.submitted.len()],
                }
            }
            Op::TransferQueue { agent, pick, queue } => {
                let agent = self.agent_id(agent);
                let Some(interaction) = self.work(&agent, "assigned", pick) else {
                    return;
                };
                Command::Transfer {
                    agent,
                    interaction,
                    to: TransferTarget::Queue(QUEUES[queue].into()),
                }
            }
            Op::TransferAgent { agent, pick, to } => {
                let agent = self.agent_id(agent);
                let Some(interaction) = self.work(&agent, "assigned", pick) else {
                    return;
                };
                Command::Transfer {
                    agent,
                    interaction,
                    to: TransferTarget::Agent(self.agent_id(to)),
                }
            }
            Op::Reconfigure { variant } => {
                let config = reconfigured(&self.config, variant);
                if self
                    .journal
                    .execute(
                        Command::Configure {
                            config: config.clone(),
                        },
                        self.now,
                    )
                    .is_ok()
                {
                    self.config = config;
                }
                return;
            }
        };
        let before = self.journal.last_seq();
        match self.journal.execute(command, self.now) {
            Ok(ack) => {
                assert_eq!(ack.seq, Some(before + 1), "one record per operation");
                self.submitted.extend(ack.interaction);
            }
            Err(JournalError::Engine(_)) => {
                assert_eq!(self.journal.last_seq(), before, "a refusal logs nothing")
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn queue_order(
    engine: &Engine,
    now: TimeMs,
) -> BTreeMap<&'static str, Vec<(InteractionId, TimeMs)>> {
    QUEUES
        .iter()
        .map(|q| {
            let waiting = engine.queue(q, now).unwrap().waiting;
            (
                *q,
                waiting
                    .iter()
                    .map(|w| (w.interaction, w.enqueued_ms))
                    .collect(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 1_000, ..ProptestConfig::default() })]

    /// replay(log) == live state, with snapshots (and the rebase records they add) at
    /// random spacing, written or failing to be written; restore(export(state)) ==
    /// state; the restart rules hold after reopening.
    #[test]
    fn replay_rebuilds_the_live_state(
        shape in shape_strategy(),
        ops in prop::collection::vec(op_strategy(6), 100..300),
        snapshot_every in prop_oneof![Just(0u64), Just(7u64), Just(50u64)],
        fail_snapshots in any::<bool>(),
    ) {
        let mut d = Driver::new(&shape, snapshot_every, fail_snapshots);
        for op in &ops {
            d.apply(op);
        }
        let live = d.journal.read(Engine::export);
        let last_seq = d.journal.last_seq();
        let live_problems = d.journal.read(|e| e.check_invariants(d.now));
        prop_assert!(live_problems.is_empty(), "live: {:?}", live_problems);
        let before = d.journal.read(|e| {
            e.interaction_ids().into_iter().map(|i| e.interaction(i).unwrap()).collect::<Vec<_>>()
        });
        drop(d.journal); // joins snapshot writers
        let restored = Engine::restore(live.clone()).unwrap();
        prop_assert_eq!(&restored.export(), &live, "restore(export) changed the state");
        let (replayed, report) = journal::replay(&d.store, true).unwrap();
        let replayed = replayed.unwrap();
        prop_assert_eq!(report.last_seq, last_seq);
        prop_assert_eq!(&replayed.export(), &live, "replay differs from the live state");
        let problems = replayed.check_invariants(d.now);
        prop_assert!(problems.is_empty(), "{:?}", problems);
        if fail_snapshots {
            prop_assert_eq!(report.snapshot_seq, None);
        }

        // Restart: agents offline, offers back in their queues at their original
        // place, assigned work kept, enqueue times kept.
        let live_engine = Engine::restore(live.clone()).unwrap();
        let now = d.now + 1;
        let (reopened, report) =
            Journal::open(d.store.clone(), None, config(snapshot_every), now).unwrap();
        prop_assert!(report.restarted);
        reopened.read(|e| -> Result<(), TestCaseError> {
            prop_assert!(e.check_invariants(now).is_empty(), "{:?}", e.check_invariants(now));
            for a in &d.config.agents {
                prop_assert_eq!(e.agent(&a.id).unwrap().presence, Presence::Offline);
            }
            for old in &before {
                // Finished work may be forgotten by a snapshot the restart triggers.
                let Ok(new) = e.interaction(old.id) else {
                    prop_assert!(old.state.is_terminal(), "{} lost", old.id);
                    continue;
                };
                prop_assert_eq!(new.enqueued_ms, old.enqueued_ms);
                match old.state {
                    InteractionState::Offered => {
                        prop_assert_eq!(new.state, InteractionState::Queued, "{}", old.id)
                    }
                    state => {
                        prop_assert_eq!(new.state, state, "{}", old.id);
                        // A finished interaction whose agent a reconfiguration removed
                        // (shown as `#<index>`) loses that reference in a snapshot's
                        // image (documented in image.rs); every other keeps its agent.
                        let removed_agent = state.is_terminal()
                            && old.agent.as_deref().is_some_and(|a| a.starts_with('#'));
                        if !(removed_agent && new.agent.is_none()) {
                            prop_assert_eq!(&new.agent, &old.agent);
                        }
                    }
                }
            }
            // Same order as before, with the offers put back where their keys say.
            let old_order = queue_order(&live_engine, now);
            let new_order = queue_order(e, now);
            for q in QUEUES {
                let kept: Vec<_> = new_order[q]
                    .iter()
                    .filter(|(i, _)| old_order[q].iter().any(|(o, _)| o == i))
                    .copied()
                    .collect();
                prop_assert_eq!(&kept, &old_order[q], "queue {} lost its order", q);
            }
            Ok(())
        })?;
        prop_assert_eq!(report.offers_requeued, before.iter().filter(|i| i.state == InteractionState::Offered).count());
    }
}

fn small_center() -> CenterConfig {
    center(vec![
        voice_chat_agent("a1", &[("billing", 5)]),
        voice_chat_agent("a2", &[("billing", 7)]),
    ])
}

fn submit(j: &MemJournal, channel: &str, now: TimeMs) -> InteractionId {
    j.execute(
        Command::Submit {
            request: NewInteraction::new(channel, "c").to_queue("billing"),
        },
        now,
    )
    .unwrap()
    .interaction
    .unwrap()
}

fn presence(j: &MemJournal, agent: &str, presence: Presence, now: TimeMs) {
    j.execute(
        Command::SetPresence {
            agent: agent.into(),
            presence,
        },
        now,
    )
    .unwrap();
}

/// A fresh journal in which a1 has accepted one interaction on `channel`.
fn assigned_to_a1(store: &Arc<MemoryStore>, channel: &str) -> (MemJournal, InteractionId) {
    let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
    presence(&j, "a1", Presence::Available, 1);
    let assigned = submit(&j, channel, 10);
    j.execute(
        Command::Accept {
            agent: "a1".into(),
            interaction: assigned,
        },
        11,
    )
    .unwrap();
    (j, assigned)
}

#[test]
fn restart_requeues_offers_in_place_and_reclaims_work_after_the_grace_period() {
    let store = Arc::new(MemoryStore::new());
    let (j, assigned) = assigned_to_a1(&store, "voice");
    let waiting_old = submit(&j, "voice", 20); // a1 is full (voice blocks): waits
    presence(&j, "a2", Presence::Available, 30); // a2 takes it: offered
    let waiting_new = submit(&j, "voice", 40); // waits
    assert_eq!(
        j.read(|e| e.interaction(waiting_old).unwrap().state),
        InteractionState::Offered
    );
    drop(j);

    let (j, report) = Journal::open(store.clone(), None, config(0), 1_000).unwrap();
    assert!(report.restarted);
    assert_eq!(report.offers_requeued, 1);
    assert_eq!(report.agents_in_grace, vec!["a1".to_string()]);
    j.read(|e| {
        let q = e.queue("billing", 1_000).unwrap();
        let order: Vec<_> = q
            .waiting
            .iter()
            .map(|w| (w.interaction, w.enqueued_ms))
            .collect();
        assert_eq!(order, vec![(waiting_old, 20), (waiting_new, 40)]);
        assert_eq!(
            e.interaction(assigned).unwrap().state,
            InteractionState::Assigned
        );
        assert_eq!(e.agent("a1").unwrap().presence, Presence::Offline);
    });
    // Grace ends at 1_000 + 30_000; a1 never came back: its work goes back to the queue
    // keeping its age (it was enqueued first, so it leads).
    assert_eq!(j.next_due(), Some(31_000));
    assert!(j.fire_due(30_999).unwrap().is_empty());
    let acks = j.fire_due(31_000).unwrap();
    assert_eq!(acks.len(), 1);
    j.read(|e| {
        let q = e.queue("billing", 31_000).unwrap();
        let order: Vec<_> = q.waiting.iter().map(|w| w.interaction).collect();
        assert_eq!(order, vec![assigned, waiting_old, waiting_new]);
        assert!(e.agent("a1").unwrap().work.is_empty());
    });
}

#[test]
fn an_agent_who_reconnects_within_the_grace_period_keeps_its_work() {
    let store = Arc::new(MemoryStore::new());
    let (j, assigned) = assigned_to_a1(&store, "chat");
    drop(j);
    let (j, report) = Journal::open(store, None, config(0), 1_000).unwrap();
    assert_eq!(report.agents_in_grace, vec!["a1".to_string()]);
    presence(&j, "a1", Presence::Available, 2_000);
    assert!(j.grace_periods().is_empty());
    assert!(j.fire_due(100_000).unwrap().is_empty());
    j.read(|e| {
        let s = e.interaction(assigned).unwrap();
        assert_eq!(s.state, InteractionState::Assigned);
        assert_eq!(s.agent.as_deref(), Some("a1"));
    });
}

#[test]
fn sync_mode_loses_nothing_acknowledged_and_batched_mode_may() {
    for (durability, survives) in [
        (Durability::Sync, true),
        (
            Durability::Batched {
                flush_every_ms: 60_000,
            },
            false,
        ),
    ] {
        let store = Arc::new(MemoryStore::new());
        let jc = JournalConfig {
            durability,
            ..config(0)
        };
        let (j, _) = Journal::open(store.clone(), Some(small_center()), jc.clone(), 0).unwrap();
        let acked = submit(&j, "chat", 5);
        store.crash(); // power cut before the batched flusher's next round
        drop(j);
        let (j, _) = Journal::open(store.clone(), Some(small_center()), jc, 10).unwrap();
        let present = j.read(|e| e.interaction(acked).is_ok());
        assert_eq!(present, survives, "{durability:?}");
    }
}

#[test]
fn batched_mode_flushes_within_its_interval() {
    let store = Arc::new(MemoryStore::new());
    let jc = JournalConfig {
        durability: Durability::Batched { flush_every_ms: 5 },
        ..config(0)
    };
    let (j, _) = Journal::open(store.clone(), Some(small_center()), jc.clone(), 0).unwrap();
    let acked = submit(&j, "chat", 5);
    // The flusher runs every 5 ms; give it far more than that, then cut the power.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.mark().unwrap() < Some(2) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    store.crash();
    drop(j);
    let (j, _) = Journal::open(store, None, jc, 10).unwrap();
    assert!(j.read(|e| e.interaction(acked).is_ok()));
}

/// A memory store that counts appends and syncs, and can be told to sync slowly, to
/// fail its syncs, or to fail writing snapshots.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    syncs: AtomicU64,
    appends: AtomicU64,
    slow_sync_ms: AtomicU64,
    fail_sync: AtomicBool,
    fail_snapshots: AtomicBool,
}

impl LogStore for TestStore {
    fn append(&self, key: u64, value: &[u8]) -> std::io::Result<()> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append(key, value)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let ms = self.slow_sync_ms.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if self.fail_sync.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("fsync failed (test)"));
        }
        self.inner.sync()
    }
    fn read_from(
        &self,
        from: u64,
    ) -> Box<dyn Iterator<Item = std::io::Result<journal::RawEntry>> + '_> {
        self.inner.read_from(from)
    }
    fn remove_from(&self, key: u64) -> std::io::Result<u64> {
        self.inner.remove_from(key)
    }
    fn remove_through(&self, key: u64) -> std::io::Result<u64> {
        self.inner.remove_through(key)
    }
    fn put_snapshot(&self, seq: u64, value: &[u8]) -> std::io::Result<()> {
        if self.fail_snapshots.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("disk full (test)"));
        }
        self.inner.put_snapshot(seq, value)
    }
    fn snapshots(&self) -> std::io::Result<Vec<journal::RawEntry>> {
        self.inner.snapshots()
    }
    fn remove_snapshot(&self, seq: u64) -> std::io::Result<()> {
        self.inner.remove_snapshot(seq)
    }
    fn disk_bytes(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn mark(&self) -> std::io::Result<Option<u64>> {
        self.inner.mark()
    }
    fn set_mark(&self, key: u64) -> std::io::Result<()> {
        self.inner.set_mark(key)
    }
}

/// `threads` writers each submitting `each` emails to `billing` at once; every ack.
fn submits_from_threads<S: LogStore>(j: &Journal<S>, threads: usize, each: u64) -> Vec<Ack> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..each)
                        .map(|n| {
                            j.execute(
                                Command::Submit {
                                    request: NewInteraction::new("email", &format!("c{t}-{n}"))
                                        .to_queue("billing"),
                                },
                                n,
                            )
                            .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let store = Arc::new(TestStore::default());
    store.slow_sync_ms.store(1, Ordering::Relaxed);
    let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
    let syncs_before = store.syncs.load(Ordering::Relaxed);
    let appends_before = store.appends.load(Ordering::Relaxed);
    let acks = submits_from_threads(&j, 8, 50);
    assert!(acks.iter().all(|a| a.interaction.is_some()));
    let syncs = store.syncs.load(Ordering::Relaxed) - syncs_before;
    let appends = store.appends.load(Ordering::Relaxed) - appends_before;
    assert_eq!(appends, 400);
    // Each fsync takes 1 ms while 8 writers keep appending: they must share.
    assert!(syncs < appends / 2, "{syncs} fsyncs for {appends} appends");
    let (replayed, _) = journal::replay(&store.inner, true).unwrap();
    assert_eq!(replayed.unwrap().interaction_ids().len(), 400);
}

#[test]
fn a_failed_fsync_fails_every_waiting_writer_and_hangs_none() {
    for _ in 0..20 {
        let store = Arc::new(TestStore::default());
        let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
        store.slow_sync_ms.store(1, Ordering::Relaxed);
        let done = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..16 {
                let (j, store, done) = (&j, &store, &done);
                s.spawn(move || {
                    for n in 0..20u64 {
                        if t == 0 && n == 5 {
                            store.fail_sync.store(true, Ordering::Relaxed);
                        }
                        let result = j.execute(
                            Command::Submit {
                                request: NewInteraction::new("email", "c").to_queue("billing"),
                            },
                            n,
                        );
                        if let Err(e) = result {
                            assert!(matches!(e, JournalError::Failed(_)), "{e}");
                            break;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
            // A writer that never returns fails the test by hanging it: the scope joins
            // every thread.
        });
        assert_eq!(done.load(Ordering::Relaxed), 16);
        assert!(matches!(
            j.execute(Command::Restart, 99).unwrap_err(),
            JournalError::Failed(_)
        ));
    }
}

#[test]
fn reclaiming_into_a_full_queue_moves_what_fits_logs_it_and_retries_the_rest() {
    let mut center = small_center();
    center
        .queues
        .iter_mut()
        .find(|q| q.id == "billing")
        .unwrap()
        .max_waiting = 1;
    let store = Arc::new(MemoryStore::new());
    let (j, _) = Journal::open(store.clone(), Some(center), config(0), 0).unwrap();
    presence(&j, "a1", Presence::Available, 1);
    let first = submit(&j, "chat", 10);
    let second = submit(&j, "chat", 11);
    for id in [first, second] {
        j.execute(
            Command::Accept {
                agent: "a1".into(),
                interaction: id,
            },
            12,
        )
        .unwrap();
    }
    drop(j);
    let (j, _) = Journal::open(store.clone(), None, config(0), 1_000).unwrap();
    let acks = j.fire_due(31_000).unwrap();
    assert_eq!(acks.len(), 1, "one reclaim record");
    let state = |id| j.read(|e| e.interaction(id).unwrap().state);
    assert_eq!(state(first), InteractionState::Queued);
    assert_eq!(
        state(second),
        InteractionState::Assigned,
        "the queue is full"
    );
    assert_eq!(j.grace_periods(), vec![("a1".to_string(), 41_000)]);
    // What was moved is in the log.
    let live = j.read(Engine::export);
    let (replayed, _) = journal::replay(&store, true).unwrap();
    assert_eq!(replayed.unwrap().export(), live);
    // Room again: the retry moves the rest.
    j.execute(Command::Abandon { interaction: first }, 35_000)
        .unwrap();
    assert_eq!(j.fire_due(41_000).unwrap().len(), 1);
    assert_eq!(state(second), InteractionState::Queued);
    assert!(j.grace_periods().is_empty());
}

#[test]
fn a_log_that_lost_acknowledged_records_is_refused() {
    let store = Arc::new(MemoryStore::new());
    let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
    for n in 0..5 {
        submit(&j, "email", n);
    }
    drop(j);
    store.lose_from(4);
    let err = Journal::open(store.clone(), None, config(0), 10)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("the log ends at record 3 but records up to 6 were acknowledged"),
        "{err}"
    );
}

#[test]
fn a_record_from_another_format_version_is_refused_not_cut() {
    let store = Arc::new(MemoryStore::new());
    let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
    for n in 0..3 {
        submit(&j, "email", n);
    }
    drop(j);
    // Record 4 (the last) rewritten as format version 2 with a checksum that holds:
    // intact bytes this build cannot read, not damage.
    let mut bytes = store.get_raw(4).unwrap();
    bytes[0] = 2;
    let mut h = crc32fast::Hasher::new();
    h.update(&[2]);
    h.update(&4u64.to_be_bytes());
    h.update(&bytes[5..]);
    bytes[1..5].copy_from_slice(&h.finalize().to_be_bytes());
    store.put_raw(4u64.to_be_bytes().to_vec(), bytes);
    let err = Journal::open(store.clone(), None, config(0), 10)
        .err()
        .expect("refused");
    assert!(
        matches!(err, JournalError::Unreadable { key: 4, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown format version 2"),
        "{err}"
    );
    assert_eq!(store.len(), 4, "nothing was cut");
}

#[test]
fn observers_see_every_record_in_log_order_once_durable() {
    let store = Arc::new(TestStore::default());
    let (j, _) = Journal::open(store.clone(), Some(small_center()), config(0), 0).unwrap();
    store.slow_sync_ms.store(1, Ordering::Relaxed);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<(u64, usize)>::new()));
    {
        let (seen, store) = (seen.clone(), store.clone());
        j.observe(move |p: &Published| {
            // Durable already: the store's high-water mark covers it.
            assert!(
                store.mark().unwrap() >= Some(p.seq),
                "record {} not durable yet",
                p.seq
            );
            seen.lock().push((p.seq, p.events.len()));
        });
    }
    let acked = submits_from_threads(&j, 6, 30);
    let mut acked: Vec<(u64, usize)> = acked
        .iter()
        .map(|a| (a.seq.unwrap(), a.events.len()))
        .collect();
    acked.sort_unstable();
    let seen = seen.lock().clone();
    assert_eq!(seen, acked, "every record once, in log order");
}

/// A state image shares each interaction's request and history with the engine it
/// came from and with engines restored from it: what either engine does afterwards
/// (the snapshot writer encodes the image while the journal runs on) never shows in it.
#[test]
fn an_image_keeps_its_state_while_the_engines_sharing_it_run_on() {
    let store = Arc::new(MemoryStore::new());
    let (j, id) = assigned_to_a1(&store, "chat");
    let image = j.read(Engine::export);
    let restored = Engine::restore_from(&image).unwrap();
    let message = |text: &str| Message {
        from: Sender::Agent,
        from_id: Some("a1".into()),
        channel: "chat".into(),
        text: text.into(),
        sent_ms: 12,
    };
    let mut out = Vec::new();
    restored
        .post_message(id, message("from the restored engine"), 12, &mut out)
        .unwrap();
    j.execute(
        Command::Post {
            interaction: id,
            message: message("from the journal's engine"),
        },
        12,
    )
    .unwrap();
    let held = |e: &Engine| e.interaction(id).unwrap().history.len();
    let in_image = image
        .interactions
        .iter()
        .find(|i| i.id == id)
        .unwrap()
        .history
        .len();
    assert_eq!(held(&restored), in_image + 1);
    assert_eq!(j.read(held), in_image + 1);
    assert_eq!(
        Engine::restore_from(&image).unwrap().export(),
        image,
        "the image is as it was taken"
    );
}
