//! [`Journal`]: the engine made durable.

use super::codec;
use super::store::LogStore;
use super::{Command, Record, Snapshot, config_changes};
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
    /// Acknowledged once appended; the journal's flusher thread fsyncs at least every
    /// `flush_every_ms`. A crash — of the process (sled buffers writes in memory) or of
    /// the machine — loses at most the acknowledgements of the last `flush_every_ms`.
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
    /// The caller owns the engine's timers (the actor runtime arms them from events
    /// and from `Engine::pending_timers()` at start, and fires them as
    /// [`Command::Timer`]); the journal keeps no timer queue of its own and
    /// [`Journal::fire_due`] fires only reconnect grace periods (default off).
    pub external_timers: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            durability: Durability::Sync,
            snapshot_every: 100_000,
            reconnect_grace_ms: 120_000,
            verify_replay: true,
            retain_finished_ms: Some(24 * 3_600_000),
            external_timers: false,
        }
    }
}

impl JournalConfig {
    /// For a run that is never recovered — the simulator on virtual time, over a
    /// [`crate::journal::DiscardStore`]: `batched` (writers never wait for a flush), no
    /// snapshots, timers fired by the actor runtime.
    pub fn simulated() -> Self {
        JournalConfig {
            durability: Durability::Batched {
                flush_every_ms: 100,
            },
            snapshot_every: 0,
            external_timers: true,
            ..JournalConfig::default()
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
    /// A record with an intact checksum that this build cannot read.
    #[error(
        "log record {key} is intact but this build cannot read it ({reason}); refusing to start rather than cut intact records. Was it written by another build of omniroute? Run the build that wrote it"
    )]
    Unreadable {
        /// Record key.
        key: u64,
        /// What this build could not read.
        reason: String,
    },
    /// The state cannot be rebuilt from what is stored.
    #[error("cannot recover: {0}")]
    Unrecoverable(String),
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

/// One durable record's events, as observers see them (see [`Journal::observe`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The record's key.
    pub seq: u64,
    /// When the operation ran.
    pub at_ms: TimeMs,
    /// The operation's name (`submit`, `accept`, `timer`, …).
    pub command: &'static str,
    /// Its events, in order.
    pub events: Vec<Event>,
    /// For a `submit`, the request (customer, attributes) the events do not repeat.
    pub request: Option<Arc<crate::model::NewInteraction>>,
}

/// What observers are given.
pub type Observer = Arc<dyn Fn(&Published) + Send + Sync>;

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

/// What the background threads (snapshot writer, batched flusher) share with the
/// journal.
struct Shared<S: LogStore> {
    inner: Mutex<Inner>,
    store: S,
    commit: Mutex<Commit>,
    appended: AtomicU64,
    /// Writers between entering `execute` and appending their record.
    entering: std::sync::atomic::AtomicUsize,
    failure: Mutex<Option<String>>,
    config: JournalConfig,
    /// Serialises snapshot writes; the newest snapshot written.
    snapshots: Mutex<u64>,
    /// The observer, if any, and records waiting to be durable before it sees them
    /// (filled under the sequencer, so in log order).
    observer: Mutex<Option<Observer>>,
    observed: std::sync::atomic::AtomicBool,
    outbox: Mutex<std::collections::VecDeque<Published>>,
    /// Held while the outbox is delivered, so deliveries stay in order.
    delivering: Mutex<()>,
}

/// The engine made durable (see the module docs). All methods take `&self` and may be
/// called from many threads; operations are sequenced (one at a time through the
/// engine, each appended in that order) and wait for durability outside the sequencer,
/// so concurrent writers share fsyncs.
pub struct Journal<S: LogStore> {
    shared: Arc<Shared<S>>,
    /// Snapshot writes in flight (joined before the journal closes).
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The `batched` mode's flusher and its stop flag.
    flusher: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
    _lock: Option<DataDirLock>,
}

/// A snapshot taken under the sequencer, to be written outside it.
struct PendingSnapshot {
    seq: u64,
    /// The snapshot, encoded by the writer off the sequencer. Its image shares each
    /// interaction's request and history with the engine (copy on write), so keeping
    /// it costs no copy of them.
    snapshot: Snapshot,
    /// The engine the rebase replaced (freeing it is left to the writer too).
    retired: Engine,
}

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
        let batched = match journal_config.durability {
            Durability::Batched { flush_every_ms } => Some(flush_every_ms),
            Durability::Sync => None,
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                engine,
                next_seq: last + 1,
                scheduler: Scheduler::new(),
                grace: BTreeMap::new(),
                // Counting from the snapshot recovery started at, so a server restarted
                // more often than every interval still snapshots.
                since_snapshot: report.replayed,
            }),
            store,
            commit: Mutex::new(Commit {
                durable: last,
                flushing: false,
                waiters: Vec::new(),
            }),
            appended: AtomicU64::new(last),
            entering: std::sync::atomic::AtomicUsize::new(0),
            failure: Mutex::new(None),
            config: journal_config,
            snapshots: Mutex::new(report.snapshot_seq.unwrap_or(0)),
            observer: Mutex::new(None),
            observed: std::sync::atomic::AtomicBool::new(false),
            outbox: Mutex::new(Default::default()),
            delivering: Mutex::new(()),
        });
        let flusher = batched.map(|every| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (flag, shared) = (stop.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name("omniroute-flusher".into())
                .spawn(move || {
                    background_priority();
                    while !flag.load(Ordering::Acquire) {
                        std::thread::park_timeout(std::time::Duration::from_millis(every));
                        if shared.flush().is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn the flusher thread");
            (stop, handle)
        });
        let journal = Journal {
            shared,
            writers: Mutex::new(Vec::new()),
            flusher,
            _lock: lock,
        };
        let sh = &journal.shared;
        if let Some(config) = first {
            // The log's first record: the configuration the engine was built from.
            let mut inner = sh.inner.lock();
            let events = vec![Event::Configured {
                changes: config_changes(&CenterConfig::default(), &config),
            }];
            sh.append(&mut inner, Command::Configure { config }, now_ms, events)?;
        } else if let Some(config) = config {
            let current = sh.inner.lock().engine.config();
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
            let mut inner = sh.inner.lock();
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
                    let until = now_ms.saturating_add(sh.config.reconnect_grace_ms);
                    inner.grace.insert(agent.clone(), until);
                    report.agents_in_grace.push(agent);
                }
            }
        }
        {
            let mut inner = sh.inner.lock();
            if !sh.config.external_timers {
                for (due, timer) in inner.engine.pending_timers() {
                    inner.scheduler.arm(due, timer);
                }
            }
            report.last_seq = inner.next_seq - 1;
        }
        // Whatever the mode, recovery's own records are durable before anyone is served.
        sh.flush()?;
        Ok((journal, report))
    }

    /// Runs one operation; returns once its record is durable (see [`Durability`]).
    /// An operation the engine refuses returns its error and logs nothing.
    pub fn execute(&self, command: Command, now_ms: TimeMs) -> Result<Ack, JournalError> {
        let sh = &self.shared;
        let entering = Entering::new(&sh.entering);
        let (ack, snapshot) = {
            let mut inner = sh.inner.lock();
            sh.check_failed()?;
            let mut events = Vec::new();
            if !command.run(&inner.engine, now_ms, &mut events)? {
                return Ok(Ack {
                    seq: None,
                    interaction: None,
                    events,
                });
            }
            let appended = sh.append(&mut inner, command, now_ms, events)?;
            drop(entering);
            appended
        };
        if let Some(seq) = ack.seq {
            sh.wait_durable(seq)?;
        }
        self.spawn_snapshot(snapshot);
        Ok(ack)
    }

    /// Fires every timer due at `now_ms` (offer timeouts, wrap-up ends, relaxation
    /// steps, preferred fallbacks, reconnect grace periods), each as a logged operation.
    pub fn fire_due(&self, now_ms: TimeMs) -> Result<Vec<Ack>, JournalError> {
        let sh = &self.shared;
        let mut acks = Vec::new();
        let mut snapshots = Vec::new();
        {
            let mut inner = sh.inner.lock();
            sh.check_failed()?;
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
                let changed = command.run(&inner.engine, now_ms, &mut events)?;
                if let Command::ReclaimWork { agent } = &command {
                    // Work a full queue could not take back stays with the agent: try
                    // again in a while rather than leave it there for good.
                    let kept = inner.engine.agent(agent).is_ok_and(|a| {
                        a.presence == Presence::Offline
                            && a.work.iter().any(|w| w.phase == "assigned")
                    });
                    if kept {
                        let retry = now_ms.saturating_add(RECLAIM_RETRY_MS);
                        tracing::warn!(%agent, retry_at_ms = retry, "reconnect grace ended but its queue is full: the agent keeps its work for now");
                        inner.grace.insert(agent.clone(), retry);
                    }
                }
                if changed {
                    let (ack, snapshot) = sh.append(&mut inner, command, now_ms, events)?;
                    acks.push(ack);
                    snapshots.extend(snapshot);
                }
            }
        }
        if let Some(seq) = acks.last().and_then(|a| a.seq) {
            sh.wait_durable(seq)?;
        }
        for s in snapshots {
            self.spawn_snapshot(Some(s));
        }
        Ok(acks)
    }

    /// When the next timer (or reconnect grace period) is due.
    pub fn next_due(&self) -> Option<TimeMs> {
        let inner = self.shared.inner.lock();
        let grace = inner.grace.values().min().copied();
        match (inner.scheduler.next_due(), grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads the engine (snapshots, explanations, invariant checks) while no operation
    /// runs.
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.shared.inner.lock().engine)
    }

    /// Whether the caller owns the timers ([`JournalConfig::external_timers`]).
    pub fn external_timers(&self) -> bool {
        self.shared.config.external_timers
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.shared.config.durability
    }

    /// The last record appended.
    pub fn last_seq(&self) -> u64 {
        self.shared.appended.load(Ordering::Acquire)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Agents in their reconnect grace period, with its end.
    pub fn grace_periods(&self) -> Vec<(String, TimeMs)> {
        let inner = self.shared.inner.lock();
        inner.grace.iter().map(|(a, t)| (a.clone(), *t)).collect()
    }

    /// Takes a snapshot now (a logged `rebase`), waits until it is written, and
    /// truncates the log behind the previous one. Returns its sequence number.
    pub fn snapshot_now(&self, now_ms: TimeMs) -> Result<u64, JournalError> {
        let sh = &self.shared;
        let snapshot = {
            let mut inner = sh.inner.lock();
            sh.check_failed()?;
            inner.since_snapshot = 0;
            sh.take_snapshot(&mut inner, now_ms)?
        };
        let seq = snapshot.seq;
        sh.wait_durable(seq)?;
        sh.write_snapshot(snapshot)?;
        Ok(seq)
    }

    /// Writes a snapshot on a background thread: the operation that triggered it is
    /// acknowledged without waiting for it.
    fn spawn_snapshot(&self, snapshot: Option<PendingSnapshot>) {
        let Some(snapshot) = snapshot else { return };
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("omniroute-snapshot".into())
            .spawn(move || {
                background_priority();
                if let Err(e) = shared.write_snapshot(snapshot) {
                    tracing::error!(error = %e, "snapshot not written; the log keeps every record and the next snapshot tries again");
                }
            })
            .expect("spawn a snapshot writer");
        let mut writers = self.writers.lock();
        writers.retain(|w| !w.is_finished());
        writers.push(handle);
    }

    /// Calls `observer` with every record's events from now on, in log order, once each
    /// record is durable (in `batched` mode: once the flusher has flushed it), from
    /// whichever thread made it durable. Keep it short and non-blocking (hand the events
    /// to a channel). Replaces any earlier observer.
    pub fn observe(&self, observer: impl Fn(&Published) + Send + Sync + 'static) {
        *self.shared.observer.lock() = Some(Arc::new(observer));
        self.shared.observed.store(true, Ordering::Release);
    }

    /// The last record known durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.commit.lock().durable
    }
}

impl<S: LogStore> Drop for Journal<S> {
    fn drop(&mut self) {
        for writer in self.writers.get_mut().drain(..) {
            let _ = writer.join();
        }
        if let Some((stop, handle)) = self.flusher.take() {
            stop.store(true, Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
            let _ = self.shared.flush();
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10) on Linux, where nice is per
/// thread: the batched flusher and the snapshot writer then yield the CPU to request
/// handling instead of preempting it (on two cores a preempted lock holder stalls every
/// request for a scheduler slice; measured in docs/BENCHMARKS.md). Under a saturated CPU
/// the flush interval stretches accordingly.
fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and who = 0 changes only the calling
    // thread's nice value (Linux); it reads and writes no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// At most this many yields of a group-commit leader waiting for writers on their way.
const COMMIT_DELAY_ROUNDS: usize = 8;

/// Counts a writer on its way to the sequencer until dropped.
struct Entering<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Entering<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Entering(count)
    }
}

impl Drop for Entering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long an agent's work waits before the journal tries again to put it back in a
/// full queue after its grace period.
const RECLAIM_RETRY_MS: u64 = 10_000;

impl<S: LogStore> Shared<S> {
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
        let record = Record {
            seq: inner.next_seq,
            now_ms,
            command,
            events,
        };
        let seq = self.write_record(inner, &record)?;
        let Record {
            command, events, ..
        } = record;
        if !self.config.external_timers {
            inner.scheduler.arm_from(&events);
        }
        if self.observed.load(Ordering::Acquire) && !events.is_empty() {
            self.outbox.lock().push_back(Published {
                seq,
                at_ms: now_ms,
                command: command.name(),
                events: events.clone(),
                // The engine's own copy, shared (its first messages are events).
                request: match (&command, events.first()) {
                    (Command::Submit { .. }, Some(Event::Created { interaction, .. })) => {
                        inner.engine.request_of(*interaction)
                    }
                    _ => None,
                },
            });
        }
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
            Some(self.take_snapshot(inner, now_ms)?)
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

    /// Under the sequencer: forgets old finished work (a logged `purge_finished`), then
    /// appends a `rebase` record and continues from the state image's own restore. The
    /// image is the snapshot of the state after the `rebase` record. Replaying the log
    /// performs the same rebase at the same place, so a recovery from this snapshot,
    /// from an older one or from the log alone rebuilds the same engine, decision for
    /// decision, whether or not the snapshot is ever written.
    fn take_snapshot(
        &self,
        inner: &mut Inner,
        now_ms: TimeMs,
    ) -> Result<PendingSnapshot, JournalError> {
        if let Some(retain) = self.config.retain_finished_ms {
            let purge = Command::PurgeFinished {
                finished_before_ms: now_ms.saturating_sub(retain),
            };
            let mut none = Vec::new();
            if purge.run(&inner.engine, now_ms, &mut none)? {
                self.append_plain(inner, purge, now_ms)?;
            }
        }
        let started = std::time::Instant::now();
        let snapshot = Snapshot {
            seq: inner.next_seq,
            taken_ms: now_ms,
            image: inner.engine.export(),
        };
        let exported = started.elapsed();
        let interactions = snapshot.image.interactions.len();
        let engine = Engine::restore_from(&snapshot.image).map_err(|e| {
            self.fail(format!(
                "the engine's state image does not restore ({e}); refusing to continue"
            ))
        })?;
        let seq = self.append_plain(inner, Command::Rebase, now_ms)?;
        debug_assert_eq!(seq, snapshot.seq);
        // The old engine is dropped by the snapshot's writer, off the sequencer.
        let retired = std::mem::replace(&mut inner.engine, engine);
        // Operations wait for this (it runs under the sequencer): worth seeing.
        tracing::info!(
            seq,
            interactions,
            export_ms = exported.as_millis() as u64,
            restore_ms = (started.elapsed() - exported).as_millis() as u64,
            "snapshot taken"
        );
        Ok(PendingSnapshot {
            seq,
            snapshot,
            retired,
        })
    }

    /// Appends a record with no events and no further bookkeeping.
    fn append_plain(
        &self,
        inner: &mut Inner,
        command: Command,
        now_ms: TimeMs,
    ) -> Result<u64, JournalError> {
        let record = Record {
            seq: inner.next_seq,
            now_ms,
            command,
            events: Vec::new(),
        };
        self.write_record(inner, &record)
    }

    /// Encodes and appends the next record (under the sequencer); a store failure
    /// stops the journal.
    fn write_record(&self, inner: &mut Inner, record: &Record) -> Result<u64, JournalError> {
        let seq = record.seq;
        debug_assert_eq!(seq, inner.next_seq);
        if let Err(e) = self.store.append(seq, &codec::encode_record(record)) {
            return Err(self.fail(format!("appending record {seq}: {e}")));
        }
        inner.next_seq += 1;
        self.appended.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Makes everything appended so far durable (the batched flusher, shutdown).
    fn flush(&self) -> Result<(), JournalError> {
        let target = self.appended.load(Ordering::Acquire);
        let mut c = self.commit.lock();
        if c.durable >= target {
            return Ok(());
        }
        // One flush at a time: wait out a group-commit leader's.
        while c.flushing {
            drop(c);
            std::thread::yield_now();
            c = self.commit.lock();
        }
        c.flushing = true;
        drop(c);
        let result = self.store.sync();
        let mut c = self.commit.lock();
        c.flushing = false;
        match result {
            Ok(()) => {
                c.durable = c.durable.max(target);
                self.wake(&mut c);
                drop(c);
                self.deliver();
                Ok(())
            }
            Err(e) => {
                let err = self.fail(format!("flushing the log: {e}"));
                for (_, waiter) in c.waiters.drain(..) {
                    waiter.unpark();
                }
                Err(err)
            }
        }
    }

    /// Wakes the waiters the last flush made durable, and one other to lead the next.
    fn wake(&self, c: &mut Commit) {
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

    /// Waits until record `seq` is durable. In `sync` mode the first waiter flushes
    /// everything appended so far while later ones wait for it (group commit). After a
    /// flush the leader wakes exactly the waiters it made durable, plus one of the others
    /// to lead the next flush: on two cores, waking everyone costs more than the fsync.
    /// In `batched` mode it returns at once (the flusher thread makes records durable).
    fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        if let Durability::Batched { .. } = self.config.durability {
            self.check_failed()?;
            self.deliver();
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
            // Let writers that are on their way to the sequencer append before the flush
            // starts, so it covers them too (PostgreSQL's commit_delay and
            // commit_siblings): yield while any is, for at most a few rounds.
            std::thread::yield_now();
            for _ in 0..COMMIT_DELAY_ROUNDS {
                if self.entering.load(Ordering::Acquire) == 0 {
                    break;
                }
                std::thread::yield_now();
            }
            let target = self.appended.load(Ordering::Acquire);
            let result = self.store.sync();
            let mut c = self.commit.lock();
            c.flushing = false;
            if let Err(e) = result {
                // Record the failure before waking anyone, so every waiter sees it.
                let err = self.fail(format!("flushing the log: {e}"));
                for (_, waiter) in c.waiters.drain(..) {
                    waiter.unpark();
                }
                return Err(err);
            }
            c.durable = c.durable.max(target);
            self.wake(&mut c);
            drop(c);
            self.deliver();
        }
    }

    /// Hands observers the records that are durable now, in log order.
    fn deliver(&self) {
        if !self.observed.load(Ordering::Acquire) {
            return;
        }
        let _order = self.delivering.lock();
        let Some(observer) = self.observer.lock().clone() else {
            return;
        };
        // `batched` acknowledges writers at append, so observers see records then too
        // (their pushes may not wait for the flusher); `sync` only once durable.
        let upto = match self.config.durability {
            Durability::Batched { .. } => self.appended.load(Ordering::Acquire),
            Durability::Sync => self.commit.lock().durable,
        };
        loop {
            let next = {
                let mut outbox = self.outbox.lock();
                match outbox.front() {
                    Some(p) if p.seq <= upto => outbox.pop_front(),
                    _ => None,
                }
            };
            match next {
                Some(published) => observer(&published),
                None => break,
            }
        }
    }

    /// Writes a snapshot and makes it durable, then removes snapshots older than the
    /// previous one and the log records the previous one covers. Keeping one snapshot
    /// back means a damaged newest snapshot still recovers (from the previous one and
    /// the records after it). A failure loses nothing: the log still holds every record
    /// since the previous snapshot, and the next snapshot tries again.
    fn write_snapshot(
        &self,
        PendingSnapshot {
            seq,
            snapshot,
            retired,
        }: PendingSnapshot,
    ) -> Result<(), JournalError> {
        drop(retired);
        let mut newest = self.snapshots.lock();
        if seq <= *newest {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let bytes = codec::encode_snapshot(&snapshot);
        drop(snapshot);
        let encode_ms = started.elapsed().as_millis() as u64;
        // The snapshot stands for the log up to its `rebase` record: that record must be
        // durable first (in batched mode it may not be yet), so no snapshot ever sits
        // ahead of a gap in the log.
        self.flush()?;
        self.store.put_snapshot(seq, &bytes)?;
        // Keep the new snapshot and the previous good one (written by this journal, or
        // the one recovery used); remove every other, and the log the previous covers.
        let previous = *newest;
        for (raw, _) in self.store.snapshots()? {
            if let Ok(older) = codec::key(&raw)
                && older != seq
                && older != previous
            {
                self.store.remove_snapshot(older)?;
            }
        }
        if previous > 0 {
            self.store.remove_through(previous)?;
        }
        *newest = seq;
        tracing::info!(seq, bytes = bytes.len(), encode_ms, "snapshot written");
        Ok(())
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
        let store = super::SledStore::open(dir)?;
        let hint = format!("omniroute repair --data-dir {}", dir.display());
        Self::open_inner(store, config, journal_config, now_ms, Some(lock), hint)
    }

    /// Cuts the log in `dir` at `key`: removes that record and every one after it
    /// (the documented repair for a damaged record in the middle of the log). Returns
    /// how many records were removed.
    pub fn cut_at(dir: &Path, key: u64) -> Result<u64, JournalError> {
        let _lock = DataDirLock::acquire(dir)?;
        let store = super::SledStore::open(dir)?;
        let removed = store.remove_from(key)?;
        store.sync()?;
        store.set_mark(key.saturating_sub(1))?;
        Ok(removed)
    }

    /// Accepts that acknowledged records past the end of the log are lost (the store's
    /// files were damaged): lowers the acknowledged high-water mark to the last record
    /// present. Returns (the old mark, the new one).
    pub fn accept_loss(dir: &Path) -> Result<(u64, u64), JournalError> {
        let _lock = DataDirLock::acquire(dir)?;
        let store = super::SledStore::open(dir)?;
        // A damaged mark is what this repair is for: read it as nothing.
        let old = store.mark().ok().flatten().unwrap_or(0);
        let mut last = 0;
        for entry in store.read_from(0) {
            let (raw, _) = entry?;
            if let Ok(key) = codec::key(&raw) {
                last = key;
            }
        }
        for (raw, _) in store.snapshots()? {
            if let Ok(key) = codec::key(&raw) {
                last = last.max(key);
            }
        }
        store.set_mark(last)?;
        Ok((old, last))
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
    let (engine, last) = recover(store, &config, "omniroute repair", &mut report)?;
    report.last_seq = last;
    Ok((engine, report))
}

/// Rebuilds the engine from the newest intact snapshot and the records after it. Cuts a
/// damaged tail; refuses damage before the end, records this build cannot read, and a
/// log shorter than what was acknowledged.
fn recover<S: LogStore>(
    store: &S,
    config: &JournalConfig,
    repair_hint: &str,
    report: &mut RecoveryReport,
) -> Result<(Option<Engine>, u64), JournalError> {
    let mut engine = None;
    let mut last = 0;
    let snapshots = store.snapshots()?;
    let mut damaged_snapshots = Vec::new();
    for (raw, bytes) in &snapshots {
        let name = codec::key(raw).map_or_else(|_| format!("{raw:?}"), |k| k.to_string());
        let decoded = codec::key(raw).and_then(|key| codec::decode_snapshot(key, bytes));
        match decoded {
            Ok(snapshot) => match Engine::restore(snapshot.image) {
                Ok(e) => {
                    engine = Some(e);
                    last = snapshot.seq;
                    report.snapshot_seq = Some(snapshot.seq);
                    break;
                }
                Err(e) => damaged_snapshots.push(format!("snapshot {name}: {e}")),
            },
            Err(e) => damaged_snapshots.push(format!("snapshot {name}: {e}")),
        }
    }
    for what in &damaged_snapshots {
        tracing::warn!(%what, "snapshot unusable; trying an older one, or the log from its start");
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
            Ok((key, _)) if engine.is_none() && expected == 1 => {
                let snapshots = if damaged_snapshots.is_empty() {
                    "no snapshot covers the records before it".to_string()
                } else {
                    format!(
                        "no usable snapshot covers the records before it ({})",
                        damaged_snapshots.join("; ")
                    )
                };
                return Err(JournalError::Unrecoverable(format!(
                    "the log starts at record {key} and {snapshots}. Restore the data directory from a backup"
                )));
            }
            Ok((key, _)) => {
                damaged = Some((
                    expected,
                    format!("missing: the next record stored is {key}"),
                ));
                good_after += 1;
                continue;
            }
            Err(e) if !e.is_damage() => {
                let key = codec::key(&raw).unwrap_or(expected);
                return Err(JournalError::Unreadable {
                    key,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                let key = codec::key(&raw).unwrap_or(expected);
                damaged = Some((key, e.to_string()));
                continue;
            }
        };
        out.clear();
        engine = Some(replay_one(engine, key, &record, &mut out)?);
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
    if engine.is_none() && !snapshots.is_empty() {
        return Err(JournalError::Unrecoverable(format!(
            "no snapshot is usable ({}) and the log behind them is gone. Restore the data directory from a backup",
            damaged_snapshots.join("; ")
        )));
    }
    let mark = store.mark()?.unwrap_or(0);
    if let Some((key, reason)) = damaged {
        if good_after > 0 {
            return Err(JournalError::Corrupt {
                key,
                reason,
                good_after,
                repair: format!("{repair_hint} --cut-at {key}"),
            });
        }
        let removed = store.remove_from(key)?;
        store.sync()?;
        if mark >= key {
            tracing::error!(
                key,
                %reason,
                acknowledged_through = mark,
                "acknowledged records {key}..={mark} are damaged and lost: the log is cut back to record {}",
                key - 1
            );
        } else {
            tracing::warn!(
                key,
                %reason,
                removed,
                "the log's tail is damaged (a crash mid-write?): cut back to record {}",
                key - 1
            );
        }
        store.set_mark(key - 1)?;
        report.tail_cut = Some(TailCut {
            key,
            reason,
            removed,
        });
    } else if mark > last {
        return Err(JournalError::Unrecoverable(format!(
            "the log ends at record {last} but records up to {mark} were acknowledged: the store lost them (its files are damaged). Restore the data directory from a backup, or accept the loss of records {}..={mark} with: {repair_hint} --accept-loss",
            last + 1
        )));
    }
    Ok((engine, last))
}

/// Applies one record to the engine it follows (`None` before the first record).
fn replay_one(
    engine: Option<Engine>,
    key: u64,
    record: &Record,
    out: &mut Vec<Event>,
) -> Result<Engine, JournalError> {
    let Some(engine) = engine else {
        return match &record.command {
            Command::Configure { config } => {
                let built = Engine::new(config.clone())
                    .map_err(|e| diverged(key, record, e.to_string()))?;
                out.push(Event::Configured {
                    changes: config_changes(&CenterConfig::default(), config),
                });
                Ok(built)
            }
            _ => Err(diverged(
                key,
                record,
                "the first record of a log must be `configure`".to_string(),
            )),
        };
    };
    if let Command::Rebase = record.command {
        return Engine::restore(engine.export())
            .map_err(|e| diverged(key, record, format!("the rebase does not restore: {e}")));
    }
    match record.command.run(&engine, record.now_ms, out) {
        Ok(true) => Ok(engine),
        Ok(false) => Err(diverged(key, record, "it changed nothing".to_string())),
        Err(err) => Err(diverged(
            key,
            record,
            format!("the engine refused it: {err}"),
        )),
    }
}

fn diverged(key: u64, record: &Record, detail: String) -> JournalError {
    JournalError::Diverged {
        key,
        command: record.command.name(),
        detail,
    }
}
