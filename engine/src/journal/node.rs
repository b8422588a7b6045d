//! [`Journal`]: the engine made durable.

use super::codec::{self, DecodeError};
use super::store::LogStore;
use super::{Command, Record, Snapshot};
use crate::InteractionId;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::events::{Event, RescindReason, Scheduler};
use crate::model::{CenterConfig, Presence, TimeMs};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// When an acknowledged record is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync'd before the acknowledgement; concurrent writers share one fsync (group
    /// commit). Nothing acknowledged is lost, even on power loss.
    Sync,
    /// Acknowledged once appended; the store flushes and fsyncs in the background at
    /// least every `flush_every_ms`. A process crash loses nothing (the OS holds the
    /// writes); a power loss loses at most the last `flush_every_ms` of acknowledged
    /// records.
    Batched {
        /// Flush interval.
        flush_every_ms: u64,
    },
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "sync" => Ok(Durability::Sync),
            None if s == "batched" => Ok(Durability::Batched { flush_every_ms: 10 }),
            Some(("batched", ms)) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(|flush_every_ms| Durability::Batched { flush_every_ms })
                .ok_or_else(|| format!("`{ms}` in `{s}` is not a positive number of milliseconds")),
            _ => Err(format!(
                "unknown durability mode `{s}` (expected `sync`, `batched` or `batched:<ms>`)"
            )),
        }
    }
}

/// How a [`Journal`] runs.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Durability mode (default `sync`).
    pub durability: Durability,
    /// Records between snapshots; 0 never snapshots (default 100,000).
    pub snapshot_every: u64,
    /// After a restart, how long agents' assigned work waits for them to reconnect
    /// before it goes back to its queue (default 120,000 ms).
    pub reconnect_grace_ms: u64,
    /// Check during recovery that every replayed operation produces exactly the events
    /// its record holds (default on).
    pub verify_replay: bool,
    /// Finished interactions (completed, abandoned) stay queryable this long after they
    /// finish; each snapshot first forgets older ones (a logged `purge_finished`
    /// record), so memory and snapshots stay bounded. `None` keeps them forever
    /// (default 24 hours).
    pub retain_finished_ms: Option<u64>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            durability: Durability::Sync,
            snapshot_every: 100_000,
            reconnect_grace_ms: 120_000,
            verify_replay: true,
            retain_finished_ms: Some(24 * 3_600_000),
        }
    }
}

/// Why the journal refused something.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The engine refused the operation; nothing was logged.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another omniroute process ({holder}); stop it first, or choose another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A record before the end of the log is damaged: refusing to start.
    #[error(
        "log record {key} is damaged ({reason}) and {good_after} intact record(s) follow it, so this is not a torn tail; refusing to start rather than skip acknowledged work. Restore the data directory from a backup, or cut the log at the damaged record — losing it and the {good_after} record(s) after it — with: {repair}"
    )]
    Corrupt {
        /// Key of the first damaged record.
        key: u64,
        /// What is wrong with it.
        reason: String,
        /// Intact records after it.
        good_after: u64,
        /// The command that cuts the log there.
        repair: String,
    },
    /// Replaying a record did not do what the record says it did.
    #[error(
        "replay of log record {key} ({command}) diverged from what was acknowledged: {detail}; refusing to start (this build may not match the one that wrote the log)"
    )]
    Diverged {
        /// Record key.
        key: u64,
        /// Command name.
        command: &'static str,
        /// What differed.
        detail: String,
    },
    /// Nothing stored and no configuration to start from.
    #[error("the data directory holds no state and no configuration was given to start from")]
    Empty,
    /// An earlier write failed: the in-memory state may be ahead of the disk, so the
    /// journal takes no more work (restart to recover from what is durable).
    #[error("the journal stopped taking work after a write failure: {0}")]
    Failed(String),
}

/// What a client is told once its operation is durable.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    /// The record's key; `None` when the operation changed nothing and was not logged
    /// (a stale timer).
    pub seq: Option<u64>,
    /// The interaction a submit created.
    pub interaction: Option<InteractionId>,
    /// What happened, in order.
    pub events: Vec<Event>,
}

/// A damaged tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailCut {
    /// Key of the first damaged record.
    pub key: u64,
    /// What was wrong.
    pub reason: String,
    /// Records removed.
    pub removed: u64,
}

/// What [`Journal::open`] found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The snapshot recovery started from.
    pub snapshot_seq: Option<u64>,
    /// Records replayed after it.
    pub replayed: u64,
    /// A damaged tail that was cut off.
    pub tail_cut: Option<TailCut>,
    /// Whether there was state to recover (the restart rules were applied).
    pub restarted: bool,
    /// Offers outstanding at the crash, put back in their queues.
    pub offers_requeued: usize,
    /// Agents holding assigned work, whose grace period started.
    pub agents_in_grace: Vec<String>,
    /// The last record's key after opening.
    pub last_seq: u64,
}

/// An exclusive lock on a data directory (`<dir>/LOCK`), held while the value lives.
/// The lock file records the holder's process id.
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (creating it), or fails with [`JournalError::Locked`].
    pub fn acquire(dir: &Path) -> Result<DataDirLock, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create data directory {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => format!("lock file {}", path.display()),
                    pid => format!("pid {pid}, lock file {}", path.display()),
                };
                return Err(JournalError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot lock {}: {e}", path.display()),
                )
                .into());
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct Inner {
    engine: Engine,
    next_seq: u64,
    scheduler: Scheduler,
    /// Agents in their reconnect grace period, and when it ends.
    grace: BTreeMap<String, TimeMs>,
    since_snapshot: u64,
}

#[derive(Default)]
struct Commit {
    durable: u64,
    flushing: bool,
    /// Writers waiting for a flush: the record they wait for, and whom to wake.
    waiters: Vec<(u64, std::thread::Thread)>,
}

struct SnapshotState {
    newest: u64,
}

/// The engine made durable (see the module docs). All methods take `&self` and may be
/// called from many threads; operations are sequenced (one at a time through the
/// engine, each appended in that order) and wait for durability outside the sequencer,
/// so concurrent writers share fsyncs.
pub struct Journal<S: LogStore> {
    inner: Mutex<Inner>,
    store: Arc<S>,
    commit: Mutex<Commit>,
    appended: AtomicU64,
    failure: Mutex<Option<String>>,
    config: JournalConfig,
    snapshots: Mutex<SnapshotState>,
    repair_hint: String,
    _lock: Option<DataDirLock>,
}

/// A snapshot taken under the sequencer, to be written outside it.
struct PendingSnapshot(Snapshot);

impl<S: LogStore> Journal<S> {
    /// Recovers from `store` (newest intact snapshot, then every record after it) and
    /// applies the restart rules, or starts from `config` when the store is empty. A
    /// `config` different from the recovered one is applied as a reconfiguration.
    /// `now_ms` is the time of the restart.
    pub fn open(
        store: S,
        config: Option<CenterConfig>,
        journal_config: JournalConfig,
        now_ms: TimeMs,
    ) -> Result<(Journal<S>, RecoveryReport), JournalError> {
        Self::open_inner(store, config, journal_config, now_ms, None, String::new())
    }

    fn open_inner(
        store: S,
        config: Option<CenterConfig>,
        journal_config: JournalConfig,
        now_ms: TimeMs,
        lock: Option<DataDirLock>,
        repair_hint: String,
    ) -> Result<(Journal<S>, RecoveryReport), JournalError> {
        let mut report = RecoveryReport::default();
        let (engine, last) = recover(&store, &journal_config, &repair_hint, &mut report)?;
        let had_state = engine.is_some();
        let (engine, first) = match (engine, &config) {
            (Some(engine), _) => (engine, None),
            (None, Some(config)) => (Engine::new(config.clone())?, Some(config.clone())),
            (None, None) => return Err(JournalError::Empty),
        };
        let journal = Journal {
            inner: Mutex::new(Inner {
                engine,
                next_seq: last + 1,
                scheduler: Scheduler::new(),
                grace: BTreeMap::new(),
                since_snapshot: 0,
            }),
            store: Arc::new(store),
            commit: Mutex::new(Commit {
                durable: last,
                flushing: false,
                waiters: Vec::new(),
            }),
            appended: AtomicU64::new(last),
            failure: Mutex::new(None),
            config: journal_config,
            snapshots: Mutex::new(SnapshotState {
                newest: report.snapshot_seq.unwrap_or(0),
            }),
            repair_hint,
            _lock: lock,
        };
        if let Some(config) = first {
            // The log's first record: the configuration the engine was built from.
            let mut inner = journal.inner.lock();
            journal.append(
                &mut inner,
                Command::Configure { config },
                now_ms,
                Vec::new(),
            )?;
        } else if let Some(config) = config {
            let current = journal.inner.lock().engine.config();
            if config != current {
                journal.execute(Command::Configure { config }, now_ms)?;
            }
        }
        if had_state {
            report.restarted = true;
            let ack = journal.execute(Command::Restart, now_ms)?;
            report.offers_requeued = ack
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::OfferRescinded {
                            reason: RescindReason::ServerRestart,
                            ..
                        }
                    )
                })
                .count();
            let mut inner = journal.inner.lock();
            let agents: Vec<String> = inner
                .engine
                .config()
                .agents
                .into_iter()
                .map(|a| a.id)
                .collect();
            for agent in agents {
                let holds = inner
                    .engine
                    .agent(&agent)
                    .is_ok_and(|a| a.work.iter().any(|w| w.phase == "assigned"));
                if holds {
                    let until = now_ms.saturating_add(journal.config.reconnect_grace_ms);
                    inner.grace.insert(agent.clone(), until);
                    report.agents_in_grace.push(agent);
                }
            }
        }
        {
            let mut inner = journal.inner.lock();
            for (due, timer) in inner.engine.pending_timers() {
                inner.scheduler.arm(due, timer);
            }
            report.last_seq = inner.next_seq - 1;
        }
        journal.wait_durable(report.last_seq)?;
        Ok((journal, report))
    }

    /// Runs one operation; returns once its record is durable (see [`Durability`]).
    /// An operation the engine refuses returns its error and logs nothing.
    pub fn execute(&self, command: Command, now_ms: TimeMs) -> Result<Ack, JournalError> {
        let (ack, snapshot) = {
            let mut inner = self.inner.lock();
            self.check_failed()?;
            let mut events = Vec::new();
            if !command.run(&inner.engine, now_ms, &mut events)? {
                return Ok(Ack {
                    seq: None,
                    interaction: None,
                    events,
                });
            }
            self.append(&mut inner, command, now_ms, events)?
        };
        self.finish(ack, snapshot)
    }

    /// Fires every timer due at `now_ms` (offer timeouts, wrap-up ends, relaxation
    /// steps, preferred fallbacks, reconnect grace periods), each as a logged operation.
    pub fn fire_due(&self, now_ms: TimeMs) -> Result<Vec<Ack>, JournalError> {
        let mut acks = Vec::new();
        let mut snapshots = Vec::new();
        {
            let mut inner = self.inner.lock();
            self.check_failed()?;
            loop {
                let grace_due = inner
                    .grace
                    .iter()
                    .find(|(_, until)| **until <= now_ms)
                    .map(|(agent, _)| agent.clone());
                let command = if let Some(agent) = grace_due {
                    inner.grace.remove(&agent);
                    Command::ReclaimWork { agent }
                } else if let Some((_, timer)) = inner.scheduler.pop_due(now_ms) {
                    Command::Timer { timer }
                } else {
                    break;
                };
                let mut events = Vec::new();
                let changed = match command.run(&inner.engine, now_ms, &mut events) {
                    Ok(changed) => changed,
                    // Reclaiming into a full queue: the work stays with its agent.
                    Err(e) => {
                        tracing::warn!(error = %e, "reconnect grace ended");
                        false
                    }
                };
                if changed {
                    let (ack, snapshot) = self.append(&mut inner, command, now_ms, events)?;
                    acks.push(ack);
                    snapshots.extend(snapshot);
                }
            }
        }
        if let Some(seq) = acks.last().and_then(|a| a.seq) {
            self.wait_durable(seq)?;
        }
        for s in snapshots {
            self.write_snapshot(s);
        }
        Ok(acks)
    }

    /// When the next timer (or reconnect grace period) is due.
    pub fn next_due(&self) -> Option<TimeMs> {
        let inner = self.inner.lock();
        let grace = inner.grace.values().min().copied();
        match (inner.scheduler.next_due(), grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads the engine (snapshots, explanations, invariant checks) while no operation
    /// runs.
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.inner.lock().engine)
    }

    /// The last record appended.
    pub fn last_seq(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Agents in their reconnect grace period, with its end.
    pub fn grace_periods(&self) -> Vec<(String, TimeMs)> {
        let inner = self.inner.lock();
        inner.grace.iter().map(|(a, t)| (a.clone(), *t)).collect()
    }

    /// Takes a snapshot now and truncates the log behind it. Returns its sequence
    /// number.
    pub fn snapshot_now(&self, now_ms: TimeMs) -> Result<u64, JournalError> {
        let snapshot = {
            let mut inner = self.inner.lock();
            self.check_failed()?;
            let seq = inner.next_seq - 1;
            inner.since_snapshot = 0;
            self.rebase(&mut inner, seq, now_ms)
        };
        let seq = snapshot.as_ref().map_or(0, |s| s.0.seq);
        self.wait_durable(seq)?;
        if let Some(s) = snapshot {
            self.write_snapshot(s);
        }
        Ok(seq)
    }

    fn check_failed(&self) -> Result<(), JournalError> {
        match &*self.failure.lock() {
            Some(why) => Err(JournalError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, why: String) -> JournalError {
        tracing::error!(%why, "journal write failed; taking no more work");
        self.failure.lock().get_or_insert(why.clone());
        JournalError::Failed(why)
    }

    /// Appends the record of an operation that already ran (under the sequencer).
    fn append(
        &self,
        inner: &mut Inner,
        command: Command,
        now_ms: TimeMs,
        events: Vec<Event>,
    ) -> Result<(Ack, Option<PendingSnapshot>), JournalError> {
        let seq = inner.next_seq;
        let record = Record {
            seq,
            now_ms,
            command,
            events,
        };
        let bytes = codec::encode_record(&record);
        if let Err(e) = self.store.append(seq, &bytes) {
            return Err(self.fail(format!("appending record {seq}: {e}")));
        }
        inner.next_seq += 1;
        self.appended.store(seq, Ordering::Release);
        let Record {
            command, events, ..
        } = record;
        inner.scheduler.arm_from(&events);
        if let Command::SetPresence { agent, presence } = &command
            && *presence != Presence::Offline
        {
            inner.grace.remove(agent);
        }
        let interaction = match (&command, events.first()) {
            (Command::Submit { .. }, Some(Event::Created { interaction, .. })) => {
                Some(*interaction)
            }
            _ => None,
        };
        inner.since_snapshot += 1;
        let snapshot = if self.config.snapshot_every > 0
            && inner.since_snapshot >= self.config.snapshot_every
        {
            inner.since_snapshot = 0;
            let mut last = seq;
            if let Some(retain) = self.config.retain_finished_ms {
                let purge = Command::PurgeFinished {
                    finished_before_ms: now_ms.saturating_sub(retain),
                };
                let mut none = Vec::new();
                if purge.run(&inner.engine, now_ms, &mut none)? {
                    let (ack, _) = self.append(inner, purge, now_ms, none)?;
                    last = ack.seq.unwrap_or(last);
                }
            }
            self.rebase(inner, last, now_ms)
        } else {
            None
        };
        Ok((
            Ack {
                seq: Some(seq),
                interaction,
                events,
            },
            snapshot,
        ))
    }

    /// Snapshots the engine after record `seq` and continues from the snapshot's own
    /// restore, so that what recovery rebuilds from the snapshot and what runs live
    /// are the same engine, decision for decision.
    fn rebase(&self, inner: &mut Inner, seq: u64, now_ms: TimeMs) -> Option<PendingSnapshot> {
        let image = inner.engine.export();
        match Engine::restore(image.clone()) {
            Ok(engine) => {
                inner.engine = engine;
                Some(PendingSnapshot(Snapshot {
                    seq,
                    taken_ms: now_ms,
                    image,
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, seq, "snapshot skipped: the state image does not restore");
                None
            }
        }
    }

    fn finish(&self, ack: Ack, snapshot: Option<PendingSnapshot>) -> Result<Ack, JournalError> {
        if let Some(seq) = ack.seq {
            self.wait_durable(seq)?;
        }
        if let Some(s) = snapshot {
            self.write_snapshot(s);
        }
        Ok(ack)
    }

    /// Waits until record `seq` is durable. In `sync` mode the first waiter flushes
    /// everything appended so far while later ones wait for it (group commit). After a
    /// flush the leader wakes exactly the waiters it made durable, plus one of the others
    /// to lead the next flush: on two cores, waking everyone costs more than the fsync.
    fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        if let Durability::Batched { .. } = self.config.durability {
            return Ok(());
        }
        let mut registered = false;
        loop {
            let mut c = self.commit.lock();
            self.check_failed()?;
            if c.durable >= seq {
                return Ok(());
            }
            if c.flushing {
                if !registered {
                    c.waiters.push((seq, std::thread::current()));
                    registered = true;
                }
                drop(c);
                // Spurious returns are fine: the loop checks again.
                std::thread::park();
                continue;
            }
            c.flushing = true;
            drop(c);
            // Let writers that are runnable append before the flush starts, so it covers
            // them too (PostgreSQL's commit_delay, at its smallest).
            std::thread::yield_now();
            let target = self.appended.load(Ordering::Acquire);
            let result = self.store.sync();
            let mut c = self.commit.lock();
            c.flushing = false;
            if let Err(e) = result {
                for (_, waiter) in c.waiters.drain(..) {
                    waiter.unpark();
                }
                drop(c);
                return Err(self.fail(format!("flushing the log: {e}")));
            }
            c.durable = c.durable.max(target);
            let durable = c.durable;
            let mut next_leader = None;
            c.waiters.retain(|(waiting_for, waiter)| {
                if *waiting_for <= durable {
                    waiter.unpark();
                    false
                } else {
                    if next_leader.is_none() {
                        next_leader = Some(waiter.clone());
                    }
                    true
                }
            });
            if let Some(leader) = next_leader {
                leader.unpark();
            }
        }
    }

    /// Writes a snapshot, makes it durable, then truncates the log and older snapshots
    /// behind it. A failure here loses nothing (the log still holds every record): it is
    /// reported and the next snapshot tries again.
    fn write_snapshot(&self, PendingSnapshot(snapshot): PendingSnapshot) {
        let mut state = self.snapshots.lock();
        if snapshot.seq <= state.newest {
            return;
        }
        let seq = snapshot.seq;
        let bytes = codec::encode_snapshot(&snapshot);
        drop(snapshot);
        let result = (|| -> io::Result<()> {
            self.store.put_snapshot(seq, &bytes)?;
            self.store.sync()?;
            for (raw, _) in self.store.snapshots()? {
                match codec::key(&raw) {
                    Ok(older) if older < seq => self.store.remove_snapshot(older)?,
                    _ => {}
                }
            }
            self.store.remove_through(seq)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                state.newest = seq;
                tracing::info!(seq, bytes = bytes.len(), "snapshot written, log truncated");
            }
            Err(e) => {
                tracing::error!(error = %e, seq, "snapshot failed; the log keeps every record")
            }
        }
    }

    /// The repair command to print for a damaged log.
    pub fn repair_hint(&self) -> &str {
        &self.repair_hint
    }
}

#[cfg(feature = "sled")]
impl Journal<super::SledStore> {
    /// Locks `dir`, opens its sled store and recovers (see [`Journal::open`]).
    pub fn open_dir(
        dir: &Path,
        config: Option<CenterConfig>,
        journal_config: JournalConfig,
        now_ms: TimeMs,
    ) -> Result<(Self, RecoveryReport), JournalError> {
        let lock = DataDirLock::acquire(dir)?;
        let flush = match journal_config.durability {
            Durability::Sync => None,
            Durability::Batched { flush_every_ms } => Some(flush_every_ms),
        };
        let store = super::SledStore::open(dir, flush)?;
        let hint = format!(
            "omniroute repair --data-dir {} --cut-at <key>",
            dir.display()
        );
        Self::open_inner(store, config, journal_config, now_ms, Some(lock), hint)
    }

    /// Cuts the log in `dir` at `key`: removes that record and every one after it
    /// (the documented repair for a damaged record in the middle of the log). Returns
    /// how many records were removed.
    pub fn cut_at(dir: &Path, key: u64) -> Result<u64, JournalError> {
        let _lock = DataDirLock::acquire(dir)?;
        let store = super::SledStore::open(dir, None)?;
        let removed = store.remove_from(key)?;
        store.sync()?;
        Ok(removed)
    }
}

/// Rebuilds the engine from `store` exactly as the last durable record left it, without
/// applying the restart rules or logging anything: the newest intact snapshot, then every
/// record after it. A damaged tail is cut off (the store is changed); damage before the
/// end is refused. `None` when the store is empty.
pub fn replay<S: LogStore>(
    store: &S,
    verify: bool,
) -> Result<(Option<Engine>, RecoveryReport), JournalError> {
    let config = JournalConfig {
        verify_replay: verify,
        ..JournalConfig::default()
    };
    let mut report = RecoveryReport::default();
    let (engine, last) = recover(store, &config, "", &mut report)?;
    report.last_seq = last;
    Ok((engine, report))
}

/// Rebuilds the engine from the newest intact snapshot and the records after it. Cuts a
/// damaged tail; refuses damage before the end.
fn recover<S: LogStore>(
    store: &S,
    config: &JournalConfig,
    repair_hint: &str,
    report: &mut RecoveryReport,
) -> Result<(Option<Engine>, u64), JournalError> {
    let mut engine = None;
    let mut last = 0;
    for (raw, bytes) in store.snapshots()? {
        let decoded = codec::key(&raw).and_then(|key| codec::decode_snapshot(key, &bytes));
        match decoded {
            Ok(snapshot) => match Engine::restore(snapshot.image) {
                Ok(e) => {
                    engine = Some(e);
                    last = snapshot.seq;
                    report.snapshot_seq = Some(snapshot.seq);
                    break;
                }
                Err(e) => {
                    tracing::warn!(key = ?raw, error = %e, "snapshot does not restore; trying an older one");
                }
            },
            Err(e) => {
                tracing::warn!(key = ?raw, error = %e, "snapshot is damaged; trying an older one");
            }
        }
    }
    let mut damaged: Option<(u64, String)> = None;
    let mut good_after = 0u64;
    let mut out = Vec::new();
    for entry in store.read_from(last + 1) {
        let (raw, bytes) = entry?;
        let expected = last + 1;
        let decoded =
            codec::key(&raw).and_then(|key| codec::decode_record(key, &bytes).map(|r| (key, r)));
        if damaged.is_some() {
            if decoded.is_ok() {
                good_after += 1;
            }
            continue;
        }
        let (key, record) = match decoded {
            Ok((key, record)) if key == expected => (key, record),
            Ok((key, _)) => {
                damaged = Some((
                    expected,
                    format!("missing: the next record stored is {key}"),
                ));
                good_after += 1;
                continue;
            }
            Err(e) => {
                let key = codec::key(&raw).unwrap_or(expected);
                damaged = Some((key, describe(&e)));
                continue;
            }
        };
        out.clear();
        match &engine {
            None => match record.command.build() {
                Some(built) => {
                    engine = Some(built.map_err(|e| diverged(key, &record, e.to_string()))?)
                }
                None => {
                    return Err(diverged(
                        key,
                        &record,
                        "the first record of a log must be `configure`".to_string(),
                    ));
                }
            },
            Some(e) => match record.command.run(e, record.now_ms, &mut out) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(diverged(key, &record, "it changed nothing".to_string()));
                }
                Err(err) => {
                    return Err(diverged(
                        key,
                        &record,
                        format!("the engine refused it: {err}"),
                    ));
                }
            },
        }
        if config.verify_replay && out != record.events {
            return Err(diverged(
                key,
                &record,
                format!(
                    "replay produced {:?}, the record holds {:?}",
                    out, record.events
                ),
            ));
        }
        last = key;
        report.replayed += 1;
    }
    if let Some((key, reason)) = damaged {
        if good_after > 0 {
            return Err(JournalError::Corrupt {
                key,
                reason,
                good_after,
                repair: repair_hint.replace("<key>", &key.to_string()),
            });
        }
        let removed = store.remove_from(key)?;
        store.sync()?;
        tracing::warn!(
            key,
            %reason,
            removed,
            "the log's tail is damaged (a crash mid-write?): cut back to record {}",
            key - 1
        );
        report.tail_cut = Some(TailCut {
            key,
            reason,
            removed,
        });
    }
    Ok((engine, last))
}

fn describe(e: &DecodeError) -> String {
    e.to_string()
}

fn diverged(key: u64, record: &Record, detail: String) -> JournalError {
    JournalError::Diverged {
        key,
        command: record.command.name(),
        detail,
    }
}
