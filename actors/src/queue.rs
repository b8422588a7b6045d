//! The queue actor: one per configured queue. It owns the queue's waiting-work
//! statistics over sliding windows and the timers of waiting work — relaxation steps and
//! preferred-agent fallbacks. The queue-size limit is enforced by the engine at submit
//! (a full queue answers "busy"); the actor reports depth against it.

use crate::runtime::Core;
use crate::stats::{Outcome, QueueWindow, WindowStats};
use crate::timers::TimerHandle;
use omniroute_engine::journal::Command;
use omniroute_engine::{Event, InteractionId, TimeMs, Timer};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Windows every queue reports (5 min, 15 min, 1 hour).
pub const STAT_WINDOWS_MS: [u64; 3] = [300_000, 900_000, 3_600_000];

/// A queue's live statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue id.
    pub queue: String,
    /// When computed.
    pub at_ms: TimeMs,
    /// Interactions waiting (its own, counted against `max_waiting`).
    pub depth: u32,
    /// The queue's size limit.
    pub max_waiting: u32,
    /// Longest current wait, ms (from the interaction's original enqueue time).
    pub longest_wait_ms: u64,
    /// Service-level threshold, ms, and target percent.
    pub service_level_threshold_ms: u64,
    /// Target share answered within the threshold, percent.
    pub service_level_target_percent: u8,
    /// Figures over each window of [`STAT_WINDOWS_MS`].
    pub windows: Vec<WindowStats>,
}

/// An interaction of a queue answered or abandoned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueOutcome {
    /// Record sequence.
    pub seq: u64,
    /// When.
    pub at_ms: TimeMs,
    /// What.
    pub outcome: Outcome,
}

/// Messages a queue actor handles.
pub enum QueueMsg {
    /// (Re)build from the engine (timers and the outcomes still in the engine).
    Rebuild,
    /// An event about waiting work in this queue.
    Routed {
        /// Record sequence.
        seq: u64,
        /// The event.
        event: Event,
    },
    /// Interactions of this queue answered or abandoned, in record order (the router
    /// sends them in batches).
    Outcomes(Vec<QueueOutcome>),
    /// A timer the actor armed is due.
    Fire(Timer),
    /// The statistics.
    Stats(RpcReplyPort<QueueStats>),
    /// The queue's definition changed: re-read its service-level threshold.
    Refresh,
    /// Fault injection: panic now.
    Crash,
}

pub(crate) struct QueueActor;

/// A queue's service-level threshold (the default's when it is gone).
fn threshold_of(engine: &omniroute_engine::Engine, queue: &str) -> u64 {
    engine.with_config(|c| {
        c.queues
            .iter()
            .find(|q| q.id == queue)
            .map_or(20_000, |q| q.service_level.threshold_ms)
    })
}

pub(crate) struct QueueArgs {
    pub core: Arc<Core>,
    pub id: Arc<str>,
}

pub(crate) struct QueueState {
    core: Arc<Core>,
    id: Arc<str>,
    ready: bool,
    stash: Vec<QueueMsg>,
    seen_seq: u64,
    window: QueueWindow,
    timers: HashMap<(InteractionId, u8), TimerHandle>,
}

impl QueueState {
    fn arm(&mut self, myself: &ActorRef<QueueMsg>, due_ms: TimeMs, timer: Timer) {
        let (interaction, kind) = match timer {
            Timer::Relaxation { interaction, .. } => (interaction, 0),
            Timer::PreferredFallback { interaction } => (interaction, 1),
            _ => return,
        };
        let at = self.core.shared.clock.instant(due_ms);
        let me = myself.clone();
        let h = self.core.timers.arm(at, move || {
            let _ = me.cast(QueueMsg::Fire(timer));
        });
        if let Some(old) = self.timers.insert((interaction, kind), h) {
            old.cancel();
        }
    }

    fn rebuild(&mut self, myself: &ActorRef<QueueMsg>) {
        for (_, h) in self.timers.drain() {
            h.cancel();
        }
        let id = self.id.clone();
        let retain = self.core.shared.config.stats_retain_ms;
        let now = self.core.shared.now_ms();
        let ((timers, mut outcomes, threshold), seq) = self.core.shared.read(|engine| {
            let ids = engine.interaction_ids();
            let mut outcomes = Vec::new();
            for i in &ids {
                let Ok(s) = engine.interaction(*i) else {
                    continue;
                };
                if *s.queue != *id {
                    continue;
                }
                if let Some(answered) = s.answered_ms
                    && answered + retain >= now
                {
                    outcomes.push((
                        answered,
                        Outcome::Answered {
                            wait_ms: answered.saturating_sub(s.enqueued_ms),
                        },
                    ));
                } else if s.state == omniroute_engine::InteractionState::Abandoned
                    && let Some(at) = s.history.last().map(|h| h.at_ms())
                    && at + retain >= now
                {
                    outcomes.push((
                        at,
                        Outcome::Abandoned {
                            wait_ms: at.saturating_sub(s.enqueued_ms),
                        },
                    ));
                }
            }
            let timers: Vec<(TimeMs, Timer)> = engine
                .pending_timers()
                .into_iter()
                .filter(|(_, t)| match t {
                    Timer::Relaxation { interaction, .. }
                    | Timer::PreferredFallback { interaction } => engine
                        .interaction(*interaction)
                        .is_ok_and(|s| *s.queue == *id),
                    _ => false,
                })
                .collect();
            (timers, outcomes, threshold_of(engine, &id))
        });
        self.seen_seq = seq;
        outcomes.sort_by_key(|(at, _)| *at);
        self.window = QueueWindow::new(retain, threshold);
        for (at, o) in outcomes {
            self.window.record(at, o);
        }
        for (due, timer) in timers {
            self.arm(myself, due, timer);
        }
        self.ready = true;
    }

    fn stats(&self) -> QueueStats {
        let now = self.core.shared.now_ms();
        let id = self.id.clone();
        let ((snapshot, def), _) = self.core.shared.read(|engine| {
            let def = engine.with_config(|c| c.queues.iter().find(|q| *q.id == *id).cloned());
            (engine.queue(&id, now).ok(), def)
        });
        let (threshold, percent, max_waiting) = def
            .map(|d| {
                (
                    d.service_level.threshold_ms,
                    d.service_level.percent,
                    d.max_waiting,
                )
            })
            .unwrap_or((20_000, 80, 0));
        let (depth, longest) = snapshot
            .map(|s| {
                let longest = s
                    .waiting
                    .iter()
                    .map(|w| now.saturating_sub(w.enqueued_ms))
                    .max()
                    .unwrap_or(0);
                (s.waiting_count, longest)
            })
            .unwrap_or((0, 0));
        QueueStats {
            queue: self.id.to_string(),
            at_ms: now,
            depth,
            max_waiting,
            longest_wait_ms: longest,
            service_level_threshold_ms: threshold,
            service_level_target_percent: percent,
            windows: STAT_WINDOWS_MS
                .iter()
                .map(|w| self.window.window(now, *w))
                .collect(),
        }
    }
}

impl Actor for QueueActor {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<QueueMsg>,
        args: QueueArgs,
    ) -> Result<QueueState, ActorProcessingErr> {
        let retain = args.core.shared.config.stats_retain_ms;
        Ok(QueueState {
            core: args.core,
            id: args.id,
            ready: false,
            stash: Vec::new(),
            seen_seq: 0,
            window: QueueWindow::new(retain, 20_000),
            timers: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<QueueMsg>,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        for (_, h) in state.timers.drain() {
            h.cancel();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<QueueMsg>,
        msg: QueueMsg,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        state.step(&myself, msg);
        Ok(())
    }
}

impl QueueState {
    fn step(&mut self, myself: &ActorRef<QueueMsg>, msg: QueueMsg) {
        let state = self;
        let myself = myself.clone();
        match msg {
            QueueMsg::Rebuild => {
                let first = !state.ready;
                state.rebuild(&myself);
                if first {
                    for m in std::mem::take(&mut state.stash) {
                        state.step(&myself, m);
                    }
                }
            }
            m @ (QueueMsg::Routed { .. } | QueueMsg::Outcomes(_)) if !state.ready => {
                state.stash.push(m)
            }
            QueueMsg::Routed { seq, event } => {
                if seq > state.seen_seq {
                    let mut timers = Vec::new();
                    event.timers(|due, t| timers.push((due, t)));
                    for (due, t) in timers {
                        state.arm(&myself, due, t);
                    }
                }
            }
            QueueMsg::Outcomes(outcomes) => {
                for o in outcomes {
                    if o.seq > state.seen_seq {
                        state.window.record(o.at_ms, o.outcome);
                    }
                }
            }
            QueueMsg::Fire(timer) => {
                match timer {
                    Timer::Relaxation { interaction, .. } => {
                        state.timers.remove(&(interaction, 0));
                    }
                    Timer::PreferredFallback { interaction } => {
                        state.timers.remove(&(interaction, 1));
                    }
                    _ => {}
                }
                state
                    .core
                    .shared
                    .fire(Command::Timer { timer }, "queue timer");
            }
            QueueMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            QueueMsg::Refresh => {
                let id = state.id.clone();
                let (threshold, _) = state.core.shared.read(|e| threshold_of(e, &id));
                state.window.set_threshold(threshold);
            }
            QueueMsg::Crash => panic!("fault injected into queue actor `{}`", state.id),
        }
    }
}
