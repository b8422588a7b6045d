//! The agent actor: one per configured agent. It owns the agent's presence as the agent
//! sees it, its connected sessions (pushes), its offers and their timeouts, the count of
//! offers missed in a row, wrap-up timers, and the grace period after its last session
//! drops. Routing itself never waits on it: the engine decides, the actor is told.

use crate::runtime::Core;
use crate::session::{AgentView, OfferPush, Push, SessionSet};
use crate::timers::TimerHandle;
use omniroute_engine::journal::Command;
use omniroute_engine::{Event, InteractionId, Presence, TimeMs, Timer, WorkSnapshot};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// How often a reclaim that a full queue refused is retried.
const RECLAIM_RETRY_MS: u64 = 10_000;

/// Messages an agent actor handles.
pub enum AgentMsg {
    /// (Re)build state from the engine; events up to the record read are ignored. With
    /// `announce`, sessions get a `Resync` and every outstanding offer again (after an
    /// actor failure that may have swallowed pushes).
    Rebuild {
        /// Tell the sessions.
        announce: bool,
    },
    /// An offer, with the conversation's context, forwarded by its conversation actor.
    Offer {
        /// Record sequence.
        seq: u64,
        /// The offer.
        push: Arc<OfferPush>,
    },
    /// Other events about this agent: one record's, in its order.
    Routed {
        /// Record sequence.
        seq: u64,
        /// When it happened.
        at_ms: TimeMs,
        /// The events.
        events: Vec<Event>,
        /// The context of offers of interactions this record created, which the
        /// router knows (their conversation actor sends none).
        offers: Vec<Arc<OfferPush>>,
    },
    /// A session connected.
    SessionOpened,
    /// A session dropped.
    SessionClosed,
    /// A timer the actor armed is due.
    Fire(Timer),
    /// The disconnect grace period of generation `n` ended.
    GraceOver(u64),
    /// Retry returning held work after a refused reclaim.
    ReclaimRetry(u64),
    /// The agent's state.
    View(RpcReplyPort<AgentView>),
    /// Fault injection: panic now (tests and chaos drills).
    Crash,
}

pub(crate) struct AgentActor;

/// A push in the agent's outbox.
enum Slot {
    Ready(Push),
    /// An offer whose context its conversation actor will send.
    Awaiting {
        interaction: InteractionId,
        offer_seq: u32,
    },
}

pub(crate) struct AgentArgs {
    pub core: Arc<Core>,
    pub id: Arc<str>,
    pub sessions: Arc<SessionSet>,
    /// Grace already running (after a server restart): when it ends.
    pub grace_until_ms: Option<TimeMs>,
    /// Started again after a failure (sessions get a `Resync`).
    pub restarted: bool,
}

pub(crate) struct AgentState {
    core: Arc<Core>,
    id: Arc<str>,
    sessions: Arc<SessionSet>,
    ready: bool,
    /// Routed messages that arrived before the first rebuild.
    stash: Vec<AgentMsg>,
    seen_seq: u64,
    presence: Presence,
    work: FxHashMap<InteractionId, WorkSnapshot>,
    offers: FxHashMap<InteractionId, (TimeMs, TimerHandle)>,
    wrap_ups: FxHashMap<InteractionId, TimerHandle>,
    misses: u32,
    /// Pushes held back behind an offer whose context (customer, transcript) its
    /// conversation actor has not sent yet: the sessions see the engine's order.
    outbox: VecDeque<Slot>,
    grace: Option<(u64, TimeMs, TimerHandle)>,
    generation: u64,
    restarted: bool,
    initial_grace: Option<TimeMs>,
}

impl AgentState {
    fn arm(&self, myself: &ActorRef<AgentMsg>, due_ms: TimeMs, msg: AgentMsg) -> TimerHandle {
        let at = self.core.shared.clock.instant(due_ms);
        let me = myself.clone();
        self.core.timers.arm(at, move || {
            let _ = me.cast(msg);
        })
    }

    fn view(&self) -> AgentView {
        let mut work: Vec<_> = self.work.values().cloned().collect();
        work.sort_by_key(|w| w.interaction);
        // Offers learnt from pushes do not carry their units: the engine knows them.
        if work.iter().any(|w| w.units == 0) {
            let (held, _) = self.core.shared.read(|e| {
                e.agent(&self.id)
                    .map(|a| {
                        a.work
                            .into_iter()
                            .map(|w| (w.interaction, w.units))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            });
            for w in &mut work {
                if let Some((_, units)) = held.iter().find(|(i, _)| *i == w.interaction) {
                    w.units = *units;
                }
            }
        }
        let mut offers: Vec<_> = self.offers.iter().map(|(i, (d, _))| (*i, *d)).collect();
        offers.sort();
        AgentView {
            agent: self.id.to_string(),
            presence: self.presence.clone(),
            work,
            offers,
            consecutive_misses: self.misses,
            sessions: self.sessions.len(),
            grace_until_ms: self.grace.as_ref().map(|(_, until, _)| *until),
        }
    }

    fn clear_timers(&mut self) {
        for (_, (_, h)) in self.offers.drain() {
            h.cancel();
        }
        for (_, h) in self.wrap_ups.drain() {
            h.cancel();
        }
        if let Some((_, _, h)) = self.grace.take() {
            h.cancel();
        }
    }

    fn rebuild(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        grace_until: Option<TimeMs>,
        announce: bool,
    ) {
        self.clear_timers();
        let id = self.id.clone();
        let ((snapshot, timers, offers), seq) = self.core.shared.read(|engine| {
            let snapshot = engine.agent(&id).ok();
            let mine: Vec<InteractionId> = snapshot
                .as_ref()
                .map(|s| s.work.iter().map(|w| w.interaction).collect())
                .unwrap_or_default();
            let timers: Vec<(TimeMs, Timer)> = if mine.is_empty() {
                Vec::new()
            } else {
                engine
                    .pending_timers()
                    .into_iter()
                    .filter(|(_, t)| match t {
                        Timer::OfferTimeout { interaction, .. }
                        | Timer::WrapUpEnd { interaction } => mine.contains(interaction),
                        _ => false,
                    })
                    .collect()
            };
            // The offers in hand, with their context, to push again when announcing.
            let offers: Vec<OfferPush> = if announce {
                snapshot
                    .iter()
                    .flat_map(|s| s.work.iter())
                    .filter(|w| w.phase == "offered")
                    .filter_map(|w| engine.interaction(w.interaction).ok())
                    .map(|i| {
                        let deadline_ms = timers
                            .iter()
                            .find_map(|(due, t)| match t {
                                Timer::OfferTimeout { interaction, .. } if *interaction == i.id => {
                                    Some(*due)
                                }
                                _ => None,
                            })
                            .unwrap_or(0);
                        let offer_seq = timers
                            .iter()
                            .find_map(|(_, t)| match t {
                                Timer::OfferTimeout {
                                    interaction,
                                    offer_seq,
                                } if *interaction == i.id => Some(*offer_seq),
                                _ => None,
                            })
                            .unwrap_or(0);
                        OfferPush {
                            interaction: i.id,
                            queue: i.queue.clone(),
                            channel: i.channel.clone(),
                            offer_seq,
                            deadline_ms,
                            auto_accepted: deadline_ms == 0,
                            customer: i.customer.clone(),
                            attributes: i.attributes.clone(),
                            transcript: i
                                .history
                                .iter()
                                .filter_map(crate::transcript::from_history)
                                .collect(),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (snapshot, timers, offers)
        });
        self.seen_seq = seq;
        self.work.clear();
        if let Some(s) = snapshot {
            self.presence = s.presence.clone();
            self.misses = s.consecutive_misses;
            for w in s.work {
                self.work.insert(w.interaction, w);
            }
        }
        for (due, timer) in timers {
            let h = self.arm(myself, due, AgentMsg::Fire(timer));
            match timer {
                Timer::OfferTimeout { interaction, .. } => {
                    self.offers.insert(interaction, (due, h));
                }
                Timer::WrapUpEnd { interaction } => {
                    self.wrap_ups.insert(interaction, h);
                }
                _ => h.cancel(),
            }
        }
        // No session but present (or holding work after a server restart): the grace
        // period runs; a session coming back cancels it.
        if self.sessions.len() == 0 {
            if let Some(until) = grace_until {
                self.start_grace(myself, until);
            } else if self.presence != Presence::Offline {
                let until = self.core.shared.now_ms() + self.core.shared.config.disconnect_grace_ms;
                self.start_grace(myself, until);
            }
        }
        self.ready = true;
        // Everything held back is in the rebuilt state (and announced, if asked).
        self.outbox.clear();
        if announce {
            self.sessions.push(Push::Resync(self.view()));
            for offer in offers {
                self.sessions.push(Push::Offer(Arc::new(offer)));
            }
        }
    }

    fn start_grace(&mut self, myself: &ActorRef<AgentMsg>, until: TimeMs) {
        if let Some((_, _, h)) = self.grace.take() {
            h.cancel();
        }
        self.generation += 1;
        let h = self.arm(myself, until, AgentMsg::GraceOver(self.generation));
        self.grace = Some((self.generation, until, h));
    }

    fn holds_assigned(&self) -> bool {
        self.work.values().any(|w| w.phase == "assigned")
    }

    /// A push for the sessions, after anything held back.
    fn emit(&mut self, push: Push) {
        if self.outbox.is_empty() {
            self.sessions.push(push);
        } else {
            self.outbox.push_back(Slot::Ready(push));
        }
    }

    fn flush(&mut self) {
        while let Some(Slot::Ready(_)) = self.outbox.front() {
            if let Some(Slot::Ready(push)) = self.outbox.pop_front() {
                self.sessions.push(push);
            }
        }
    }

    /// Offered (the routed event, in the engine's order): the offer's timer and work
    /// now; its push when the conversation sends the context.
    #[allow(clippy::too_many_arguments)]
    fn on_offered(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        interaction: InteractionId,
        channel: &str,
        offer_seq: u32,
        deadline_ms: TimeMs,
        auto_accepted: bool,
    ) {
        if let Some((_, h)) = self.offers.remove(&interaction) {
            h.cancel();
        }
        if !auto_accepted {
            let h = self.arm(
                myself,
                deadline_ms,
                AgentMsg::Fire(Timer::OfferTimeout {
                    interaction,
                    offer_seq,
                }),
            );
            self.offers.insert(interaction, (deadline_ms, h));
        }
        self.work.insert(
            interaction,
            WorkSnapshot {
                interaction,
                channel: channel.to_string(),
                units: 0,
                phase: "offered".to_string(),
            },
        );
        self.outbox.push_back(Slot::Awaiting {
            interaction,
            offer_seq,
        });
    }

    /// The offer's context from its conversation: the push takes its place.
    fn offer_context(&mut self, push: Arc<OfferPush>) {
        let slot = self.outbox.iter_mut().find(|s| {
            matches!(s, Slot::Awaiting { interaction, offer_seq }
                if *interaction == push.interaction && *offer_seq == push.offer_seq)
        });
        match slot {
            Some(slot) => {
                *slot = Slot::Ready(Push::Offer(push));
                self.flush();
            }
            None => tracing::debug!(
                agent = %self.id,
                interaction = %push.interaction,
                "offer context for no offer awaiting it (rebuilt since)"
            ),
        }
    }

    fn end_offer(&mut self, interaction: InteractionId, reason: &str) {
        if let Some((_, h)) = self.offers.remove(&interaction) {
            h.cancel();
        }
        self.work.remove(&interaction);
        self.emit(Push::OfferEnded {
            interaction,
            reason: reason.to_string(),
        });
    }

    fn on_event(&mut self, myself: &ActorRef<AgentMsg>, at_ms: TimeMs, event: Event) {
        match event {
            Event::Offered {
                interaction,
                channel,
                offer_seq,
                deadline_ms,
                auto_accepted,
                ..
            } => self.on_offered(
                myself,
                interaction,
                &channel,
                offer_seq,
                deadline_ms,
                auto_accepted,
            ),
            Event::Accepted { interaction, .. } => {
                if let Some((_, h)) = self.offers.remove(&interaction) {
                    h.cancel();
                }
                self.misses = 0;
                if let Some(w) = self.work.get_mut(&interaction) {
                    w.phase = "assigned".to_string();
                }
                self.emit(Push::Assigned { interaction });
            }
            Event::Rejected { interaction, .. } => self.end_offer(interaction, "rejected"),
            Event::OfferTimedOut { interaction, .. } => {
                self.misses += 1;
                self.end_offer(interaction, "timed_out");
            }
            Event::OfferRescinded {
                interaction,
                reason,
                ..
            } => {
                let how = match reason {
                    omniroute_engine::RescindReason::CustomerLeft => "customer_left",
                    omniroute_engine::RescindReason::AgentOffline => "agent_offline",
                    omniroute_engine::RescindReason::ServerRestart => "server_restart",
                };
                self.end_offer(interaction, how);
            }
            Event::Completed {
                interaction,
                wrap_up_until_ms,
                ..
            } => {
                match wrap_up_until_ms {
                    Some(until) => {
                        if let Some(w) = self.work.get_mut(&interaction) {
                            w.phase = "wrap_up".to_string();
                        }
                        let h = self.arm(
                            myself,
                            until,
                            AgentMsg::Fire(Timer::WrapUpEnd { interaction }),
                        );
                        if let Some(old) = self.wrap_ups.insert(interaction, h) {
                            old.cancel();
                        }
                    }
                    None => {
                        self.work.remove(&interaction);
                    }
                }
                self.emit(Push::Completed {
                    interaction,
                    wrap_up_until_ms,
                });
            }
            Event::WrapUpEnded { interaction, .. } => {
                if let Some(h) = self.wrap_ups.remove(&interaction) {
                    h.cancel();
                }
                self.work.remove(&interaction);
                self.emit(Push::WrapUpEnded { interaction });
            }
            Event::Transferred {
                interaction,
                from_agent: Some(from),
                to,
            } if *from == *self.id => {
                self.work.remove(&interaction);
                self.emit(Push::TransferredAway { interaction, to });
            }
            Event::MessagePosted {
                interaction,
                message,
            } => {
                if let Some(entry) = crate::transcript::from_event(
                    at_ms,
                    &Event::MessagePosted {
                        interaction,
                        message,
                    },
                ) {
                    self.emit(Push::Message { interaction, entry });
                }
            }
            Event::PresenceChanged { presence, .. } => {
                if presence != Presence::Offline
                    && let Some((_, _, h)) = self.grace.take()
                {
                    h.cancel();
                }
                self.presence = presence.clone();
                self.emit(Push::Presence { presence });
            }
            _ => {}
        }
    }
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        Ok(AgentState {
            core: args.core,
            id: args.id,
            sessions: args.sessions,
            ready: false,
            stash: Vec::new(),
            seen_seq: 0,
            presence: Presence::Offline,
            work: FxHashMap::default(),
            offers: FxHashMap::default(),
            wrap_ups: FxHashMap::default(),
            misses: 0,
            outbox: VecDeque::new(),
            grace: None,
            generation: 0,
            restarted: args.restarted,
            initial_grace: args.grace_until_ms,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        state.clear_timers();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        state.step(&myself, msg);
        Ok(())
    }
}

impl AgentState {
    fn step(&mut self, myself: &ActorRef<AgentMsg>, msg: AgentMsg) {
        let state = self;
        let myself = myself.clone();
        match msg {
            AgentMsg::Rebuild { announce } => {
                let grace = state.initial_grace.take();
                let first = !state.ready;
                let announce = announce || state.restarted;
                state.restarted = false;
                state.rebuild(&myself, grace, announce);
                if first {
                    for m in std::mem::take(&mut state.stash) {
                        state.step(&myself, m);
                    }
                }
            }
            m @ (AgentMsg::Offer { .. } | AgentMsg::Routed { .. }) if !state.ready => {
                state.stash.push(m);
            }
            AgentMsg::Offer { seq, push } => {
                if seq > state.seen_seq {
                    state.offer_context(push);
                }
            }
            AgentMsg::Routed {
                seq,
                at_ms,
                events,
                offers,
            } => {
                if seq > state.seen_seq {
                    for event in events {
                        state.on_event(&myself, at_ms, event);
                    }
                    for push in offers {
                        state.offer_context(push);
                    }
                }
            }
            AgentMsg::SessionOpened => {
                if let Some((_, _, h)) = state.grace.take() {
                    h.cancel();
                }
            }
            AgentMsg::SessionClosed => {
                if state.sessions.len() == 0 && state.presence != Presence::Offline {
                    let until =
                        state.core.shared.now_ms() + state.core.shared.config.disconnect_grace_ms;
                    state.start_grace(&myself, until);
                }
            }
            AgentMsg::Fire(timer) => {
                match timer {
                    Timer::OfferTimeout { interaction, .. } => {
                        state.offers.remove(&interaction);
                    }
                    Timer::WrapUpEnd { interaction } => {
                        state.wrap_ups.remove(&interaction);
                    }
                    _ => {}
                }
                state.core.shared.fire(Command::Timer { timer }, "timer");
            }
            AgentMsg::GraceOver(generation) => {
                let current = matches!(&state.grace, Some((g, _, _)) if *g == generation);
                if current && state.sessions.len() == 0 {
                    state.grace = None;
                    tracing::info!(agent = %state.id, "disconnect grace over: going offline, returning held work to its queue");
                    state.core.fire_sequence(
                        vec![
                            Command::SetPresence {
                                agent: state.id.to_string(),
                                presence: Presence::Offline,
                            },
                            Command::ReclaimWork {
                                agent: state.id.to_string(),
                            },
                        ],
                        "disconnect grace over",
                    );
                    state.generation += 1;
                    let due = state.core.shared.now_ms() + RECLAIM_RETRY_MS;
                    state.arm(&myself, due, AgentMsg::ReclaimRetry(state.generation));
                }
            }
            AgentMsg::ReclaimRetry(generation) => {
                if generation == state.generation
                    && state.sessions.len() == 0
                    && state.presence == Presence::Offline
                    && state.holds_assigned()
                {
                    tracing::warn!(agent = %state.id, "work still held after reclaim (queue full?): retrying");
                    state.core.fire_sequence(
                        vec![Command::ReclaimWork {
                            agent: state.id.to_string(),
                        }],
                        "reclaim retry",
                    );
                    let due = state.core.shared.now_ms() + RECLAIM_RETRY_MS;
                    state.arm(&myself, due, AgentMsg::ReclaimRetry(generation));
                }
            }
            AgentMsg::View(reply) => {
                let _ = reply.send(state.view());
            }
            AgentMsg::Crash => panic!("fault injected into agent actor `{}`", state.id),
        }
    }
}
