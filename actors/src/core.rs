//! What every actor shares: the durable engine behind an object-safe handle, the
//! clock, the registries of running actors, the limits and the error type.

use crate::center::Clock;
use omniroute_engine::journal::{Ack, Command, Durability, Journal, JournalError, LogStore};
use omniroute_engine::{Engine, EngineError, TimeMs};
use std::sync::Arc;
use std::time::Duration;

/// The journal, with its store type erased so actors need no type parameter.
pub trait JournalHandle: Send + Sync + 'static {
    /// Runs one operation at `now_ms` (returns once acknowledged by the durability mode).
    fn execute(&self, command: Command, now_ms: TimeMs) -> Result<Ack, JournalError>;
    /// Reads the engine while no operation runs; also gives the last record appended,
    /// so a reader knows which records its view already includes.
    fn read_at(&self, f: &mut dyn FnMut(&Engine, u64));
    /// Fires due reconnect grace periods (see [`Journal::fire_due`]).
    fn fire_due(&self, now_ms: TimeMs) -> Result<Vec<Ack>, JournalError>;
    /// Agents in their restart grace period, with its end.
    fn grace_periods(&self) -> Vec<(String, TimeMs)>;
    /// Whether acknowledgements wait for a flush (`sync`).
    fn is_sync(&self) -> bool;
}

impl<S: LogStore> JournalHandle for Journal<S> {
    fn execute(&self, command: Command, now_ms: TimeMs) -> Result<Ack, JournalError> {
        Journal::execute(self, command, now_ms)
    }
    fn read_at(&self, f: &mut dyn FnMut(&Engine, u64)) {
        // The sequencer is held during `read`, so no record is appended meanwhile.
        Journal::read(self, |engine| f(engine, self.last_seq()))
    }
    fn fire_due(&self, now_ms: TimeMs) -> Result<Vec<Ack>, JournalError> {
        Journal::fire_due(self, now_ms)
    }
    fn grace_periods(&self) -> Vec<(String, TimeMs)> {
        Journal::grace_periods(self)
    }
    fn is_sync(&self) -> bool {
        matches!(self.durability(), Durability::Sync)
    }
}

/// Limits and timings of the actor runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Live interactions (created, not yet completed or abandoned) admitted at once;
    /// past it `submit` answers [`RuntimeError::Busy`] (default 100,000).
    pub max_live_interactions: usize,
    /// Requests one session may have in flight; past it [`RuntimeError::Busy`]
    /// (default 64).
    pub session_max_in_flight: usize,
    /// Pushes buffered per session; past it new pushes are dropped for that session
    /// (it keeps what it has not read yet) and the next one that fits is preceded by
    /// [`crate::Push::Lagged`] with how many (default 1,024).
    pub session_buffer: usize,
    /// Timeout of every call between actors and of calls into an actor (default 2 s).
    pub call_timeout: Duration,
    /// A customer's new inbound message within this long of their last activity joins
    /// their open conversation instead of starting another (default 10 minutes).
    pub switch_window_ms: u64,
    /// When a switching customer's previous conversation had ended, the new one waits
    /// this long for the same agent before anyone eligible may take it (default 60 s).
    pub return_to_agent_ms: u64,
    /// After an agent's last session drops, how long its work waits for it to come
    /// back before it goes offline and its work returns to its queue (default 30 s).
    pub disconnect_grace_ms: u64,
    /// Records each event-bus subscriber may fall behind by (default 4,096).
    pub bus_capacity: usize,
    /// The longest statistics window queue actors keep (default 1 hour).
    pub stats_retain_ms: u64,
    /// Conversation actors kept idle after their interaction finished, each to serve
    /// a next new interaction instead of an actor spawned (and a finished one stopped)
    /// per interaction (default 1,024; 0: one actor spawned per interaction).
    pub idle_conversation_actors: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_live_interactions: 100_000,
            session_max_in_flight: 64,
            session_buffer: 1_024,
            call_timeout: Duration::from_secs(2),
            switch_window_ms: 10 * 60_000,
            return_to_agent_ms: 60_000,
            disconnect_grace_ms: 30_000,
            bus_capacity: 4_096,
            stats_retain_ms: 3_600_000,
            idle_conversation_actors: 1_024,
        }
    }
}

/// Why the runtime refused something.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request itself is wrong (empty customer id, unknown channel, message too
    /// long, a journal not opened for the runtime…): what and where is in the message.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Over a limit: try again later. Nothing was done.
    #[error("busy: {0}")]
    Busy(String),
    /// The engine or the journal refused it (unknown ids, wrong state, invalid input…).
    #[error(transparent)]
    Journal(JournalError),
    /// No such agent in the configuration.
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// No such queue in the configuration.
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// No such virtual agent registered.
    #[error("unknown virtual agent `{0}`")]
    UnknownVirtualAgent(String),
    /// An actor did not answer in time.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// Who.
        what: String,
        /// How long.
        ms: u64,
    },
    /// An actor is not running (stopping, or restarting after a failure): retry.
    #[error("{0} is not available right now (restarting or stopped); retry")]
    Unavailable(String),
}

impl From<JournalError> for RuntimeError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Engine(EngineError::QueueFull { queue, max_waiting }) => {
                RuntimeError::Busy(format!(
                    "queue `{queue}` is full ({max_waiting} waiting); try again later"
                ))
            }
            e => RuntimeError::Journal(e),
        }
    }
}

/// The journal, the clock and the config, shared by every actor.
pub(crate) struct Shared {
    pub journal: Arc<dyn JournalHandle>,
    pub clock: Clock,
    pub config: RuntimeConfig,
}

impl Shared {
    pub fn now_ms(&self) -> TimeMs {
        self.clock.now_ms()
    }

    /// Runs an operation for an actor (a timer firing, a grace period ending) without
    /// blocking the actor's thread on an fsync: in `sync` mode on a blocking thread.
    /// Refusals (a stale timer is not one: it logs nothing) are logged.
    pub fn fire(self: &Arc<Self>, command: Command, why: &'static str) {
        let run = {
            let shared = self.clone();
            move || {
                let now = shared.now_ms();
                if let Err(e) = shared.journal.execute(command, now) {
                    tracing::warn!(error = %e, why, "operation refused");
                }
            }
        };
        if self.journal.is_sync() {
            tokio::task::spawn_blocking(run);
        } else {
            run();
        }
    }

    /// Reads the engine; returns what `f` computed and the last record it includes.
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> (R, u64) {
        let mut f = Some(f);
        let mut out = None;
        self.journal.read_at(&mut |engine, seq| {
            if let Some(f) = f.take() {
                out = Some((f(engine), seq));
            }
        });
        out.expect("read_at calls its function once")
    }
}
