//! [`Center`]: the durable engine on tokio time — operations, its own timer driver, the
//! event bus — for tools that want the engine on (virtual) tokio time without actors.
//! The actor runtime ([`crate::Runtime`]) does not use it: there the actors own the
//! timers.
//!
//! Time is tokio's: `now_ms` is the Unix time at start plus the tokio time elapsed since,
//! so under `tokio::time::pause()` the whole center runs on a virtual clock (the
//! simulator's day in seconds) and timers fire as virtual time passes.
//!
//! Journal calls run on the calling task: with `sync` durability an operation holds its
//! worker thread for about one fsync (≈ 0.15 ms here). Run the center on a multi-thread
//! runtime.

use crate::bus::EventBus;
use omniroute_engine::journal::{Ack, Command, Journal, JournalError, LogStore};
use omniroute_engine::{Engine, TimeMs};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Milliseconds on tokio's clock, anchored to a Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_ms: TimeMs,
    start: Instant,
}

impl Clock {
    /// A clock that reads `base_ms` now.
    pub fn starting_at(base_ms: TimeMs) -> Self {
        Clock {
            base_ms,
            start: Instant::now(),
        }
    }

    /// Now, in ms.
    pub fn now_ms(&self) -> TimeMs {
        self.base_ms + self.start.elapsed().as_millis() as TimeMs
    }

    /// The tokio instant of `at_ms`.
    pub fn instant(&self, at_ms: TimeMs) -> Instant {
        self.start + std::time::Duration::from_millis(at_ms.saturating_sub(self.base_ms))
    }
}

/// The durable engine on tokio time (see the module docs).
pub struct Center<S: LogStore> {
    journal: Arc<Journal<S>>,
    clock: Clock,
    bus: EventBus,
    /// Wakes the timer driver when an operation may have armed an earlier timer.
    timers_changed: Arc<Notify>,
    driver: tokio::task::JoinHandle<()>,
}

impl<S: LogStore> Center<S> {
    /// Starts the center around an opened journal: subscribes the bus to it and spawns
    /// the timer driver on the current tokio runtime. `clock` must read the time the
    /// journal was opened at (or later).
    pub fn start(journal: Journal<S>, clock: Clock, bus_capacity: usize) -> Self {
        let bus = EventBus::new(bus_capacity);
        journal.observe(bus.observer());
        let journal = Arc::new(journal);
        let timers_changed = Arc::new(Notify::new());
        let driver = tokio::spawn(drive_timers(journal.clone(), clock, timers_changed.clone()));
        Center {
            journal,
            clock,
            bus,
            timers_changed,
            driver,
        }
    }

    /// Runs one operation at the clock's now; returns once it is durable.
    pub fn execute(&self, command: Command) -> Result<Ack, JournalError> {
        let ack = self.journal.execute(command, self.clock.now_ms());
        self.timers_changed.notify_one();
        ack
    }

    /// Reads the engine.
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        self.journal.read(f)
    }

    /// The event bus.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The journal.
    pub fn journal(&self) -> &Journal<S> {
        &self.journal
    }
}

impl<S: LogStore> Drop for Center<S> {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sleeps until the journal's next timer (or until an operation may have armed an
/// earlier one), then fires everything due. A journal failure stops the driver (every
/// later operation reports it).
async fn drive_timers<S: LogStore>(journal: Arc<Journal<S>>, clock: Clock, changed: Arc<Notify>) {
    loop {
        let notified = changed.notified();
        match journal.next_due() {
            Some(due) if due <= clock.now_ms() => {
                if let Err(e) = journal.fire_due(clock.now_ms()) {
                    tracing::error!(error = %e, "timer driver stopped");
                    return;
                }
                continue;
            }
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(clock.instant(due)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}
