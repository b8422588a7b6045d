//! The conversation actor: one per live interaction, from its creation until it is
//! finished (completed and wrapped up, or abandoned). A finished conversation's actor
//! goes back to the runtime's pool of idle conversation actors (up to
//! [`crate::RuntimeConfig::idle_conversation_actors`]) and serves the next new
//! interaction: still one actor per live conversation, supervised, but not a spawn and a
//! stop per interaction. It owns the transcript (every
//! message and a line per routing step), the participants, and the context an agent is
//! offered with — so a transferred conversation reaches its next agent with everything
//! said and collected so far. Events about an interaction reach its agent through this
//! actor, in log order.

use crate::agent::AgentMsg;
use crate::runtime::Core;
use crate::session::OfferPush;
use crate::transcript::{self, TranscriptEntry};
use omniroute_engine::{Event, InteractionId, InteractionState, NewInteraction, Sender, TimeMs};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A conversation as its actor holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationView {
    /// Interaction.
    pub interaction: InteractionId,
    /// Customer.
    pub customer: String,
    /// The channel it arrived on.
    pub channel: String,
    /// Current queue.
    pub queue: String,
    /// Attributes (including what a virtual agent collected).
    pub attributes: BTreeMap<String, String>,
    /// Lifecycle state as last seen.
    pub state: InteractionState,
    /// The agent holding the offer or the work, if any.
    pub agent: Option<String>,
    /// Everyone who took part: `customer`, `agent:<id>`, `virtual_agent:<name>`.
    pub participants: BTreeSet<String>,
    /// Channels the customer used, in first-use order.
    pub channels: Vec<String>,
    /// The transcript, oldest first.
    pub transcript: Vec<TranscriptEntry>,
}

/// Messages a conversation actor handles.
pub enum ConversationMsg {
    /// Build state from the engine (after a restart, or for work that existed at start).
    Rebuild,
    /// Events about this interaction: one record's, in its order.
    Routed {
        /// Record sequence.
        seq: u64,
        /// When it happened.
        at_ms: TimeMs,
        /// The events.
        events: Vec<Event>,
    },
    /// A pooled (idle) actor takes a new interaction, with the events of the record
    /// that created it.
    Start {
        /// The interaction.
        interaction: InteractionId,
        /// Its request (customer, attributes).
        request: Arc<NewInteraction>,
        /// The record's sequence.
        seq: u64,
        /// When it happened.
        at_ms: TimeMs,
        /// Its events about this interaction (`created` first).
        events: Vec<Event>,
    },
    /// The conversation, if this actor still holds `interaction` (`None`: it finished
    /// and the actor went back to the pool, or serves another one now).
    View {
        /// The interaction asked about.
        interaction: InteractionId,
        /// Where the answer goes.
        reply: RpcReplyPort<Option<ConversationView>>,
    },
    /// Fault injection: panic now if this actor still holds `interaction` (one that
    /// finished and went back to the pool ignores it).
    Crash(InteractionId),
}

pub(crate) struct ConversationActor;

pub(crate) enum ConversationArgs {
    /// A new interaction (its `created` event follows as the first message).
    New {
        core: Arc<Core>,
        interaction: InteractionId,
        request: Option<Arc<NewInteraction>>,
    },
    /// Rebuild from the engine on `Rebuild` (`restarted`: after a failure).
    Existing {
        core: Arc<Core>,
        interaction: InteractionId,
        restarted: bool,
    },
}

pub(crate) struct ConversationState {
    core: Arc<Core>,
    /// Back in the pool: holds no interaction, drops whatever is still routed to it.
    idle: bool,
    ready: bool,
    restarted: bool,
    /// Agents the interaction was offered to, from its history (filled by a rebuild).
    agents_seen: Vec<String>,
    stash: Vec<ConversationMsg>,
    seen_seq: u64,
    /// The conversation but for what [`Line`]s give (see [`ConversationState::view`]):
    /// its transcript stays empty; participants and channels hold only what a rebuild
    /// found besides the lines.
    view: ConversationView,
    /// The transcript as it happened, rendered when read (most conversations are
    /// never read: text built per event would be built for nothing).
    lines: Vec<Line>,
}

/// One event or entry of a conversation, in order.
enum Line {
    /// An event routed to this actor (most make a line of the transcript; some none).
    Event(TimeMs, Event),
    /// A transcript entry rebuilt from the engine's history.
    Entry(TranscriptEntry),
}

fn participant_of(entry: &TranscriptEntry) -> Option<String> {
    match entry.from {
        Sender::Customer => Some("customer".to_string()),
        Sender::Agent => entry.from_id.as_ref().map(|a| format!("agent:{a}")),
        Sender::VirtualAgent => entry.from_id.as_ref().map(|a| format!("virtual_agent:{a}")),
        Sender::System => None,
    }
}

impl ConversationState {
    /// The transcript so far.
    fn transcript(&self) -> Vec<TranscriptEntry> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                Line::Event(at_ms, event) => transcript::from_event(*at_ms, event),
                Line::Entry(entry) => Some(entry.clone()),
            })
            .collect()
    }

    /// The conversation: the transcript rendered, everyone who took part (the
    /// customer, agents who accepted it, whoever wrote), the customer's channels in
    /// first-use order.
    fn view(&self) -> ConversationView {
        let mut view = self.view.clone();
        view.transcript = self.transcript();
        view.participants.insert("customer".to_string());
        for line in &self.lines {
            if let Line::Event(_, Event::Accepted { agent, .. }) = line {
                view.participants.insert(format!("agent:{agent}"));
            }
        }
        for entry in &view.transcript {
            if let Some(p) = participant_of(entry) {
                view.participants.insert(p);
            }
            if entry.from == Sender::Customer && !view.channels.contains(&entry.channel) {
                view.channels.push(entry.channel.clone());
            }
        }
        view
    }

    fn rebuild(&mut self) {
        let id = self.view.interaction;
        let (snapshot, seq) = self.core.shared.read(|engine| engine.interaction(id).ok());
        self.seen_seq = seq;
        let Some(s) = snapshot else {
            // Finished and forgotten meanwhile: nothing to hold.
            self.view.state = InteractionState::Completed;
            self.ready = true;
            return;
        };
        self.view.customer = s.customer;
        self.view.channel = s.channel.clone();
        self.view.channels = vec![s.channel];
        self.view.queue = s.queue;
        self.view.attributes = s.attributes;
        self.view.state = s.state;
        self.view.agent = s.agent;
        self.view.participants.clear();
        self.lines.clear();
        self.agents_seen.clear();
        for h in &s.history {
            if let omniroute_engine::HistoryEntry::Accepted { agent, .. } = h {
                self.view.participants.insert(format!("agent:{agent}"));
            }
            if let omniroute_engine::HistoryEntry::Offered { agent, .. } = h
                && !self.agents_seen.iter().any(|a| **a == **agent)
            {
                self.agents_seen.push(agent.to_string());
            }
            if let Some(entry) = transcript::from_history(h) {
                self.lines.push(Line::Entry(entry));
            }
        }
        self.ready = true;
    }

    fn agent_ref(&self, agent: &str) -> Option<ActorRef<AgentMsg>> {
        self.core.agents.get(agent).map(|r| r.clone())
    }

    /// `announced`: the record holding the event created the interaction, and the
    /// router sent the context of its offers (this actor sends none for them).
    fn on_event(&mut self, seq: u64, at_ms: TimeMs, event: Event, announced: bool) {
        match &event {
            Event::Created { queue, channel, .. } => {
                set(&mut self.view.queue, queue);
                set(&mut self.view.channel, channel);
                if self.view.channels.is_empty() {
                    self.view.channels.push(channel.to_string());
                }
                self.view.state = InteractionState::Queued;
            }
            Event::Queued { queue, .. } => {
                set(&mut self.view.queue, queue);
                self.view.state = InteractionState::Queued;
                self.view.agent = None;
            }
            Event::Offered { agent, queue, .. } => {
                set(&mut self.view.queue, queue);
                self.view.state = InteractionState::Offered;
                match &mut self.view.agent {
                    Some(a) => set(a, agent),
                    None => self.view.agent = Some(agent.to_string()),
                }
                if !announced
                    && let Some(a) = self.agent_ref(agent)
                    && let Some(push) = OfferPush::of(
                        &event,
                        self.view.customer.clone(),
                        self.view.attributes.clone(),
                        self.transcript_with(at_ms, &event),
                    )
                {
                    let push = Arc::new(push);
                    let _ = a.cast(AgentMsg::Offer { seq, push });
                }
            }
            Event::Accepted { .. } => self.view.state = InteractionState::Assigned,
            Event::Rejected { .. } | Event::OfferTimedOut { .. } | Event::OfferRescinded { .. } => {
                self.view.agent = None;
            }
            Event::Completed {
                wrap_up_until_ms, ..
            } => {
                self.view.state = if wrap_up_until_ms.is_some() {
                    InteractionState::WrapUp
                } else {
                    InteractionState::Completed
                };
            }
            Event::WrapUpEnded { .. } => self.view.state = InteractionState::Completed,
            Event::Abandoned { .. } => {
                self.view.state = InteractionState::Abandoned;
                self.view.agent = None;
            }
            _ => {}
        }
        self.lines.push(Line::Event(at_ms, event));
        // The agent concerned hears of every event from the router, in the log's
        // order; from here only an offer's context (above).
    }

    /// The transcript with `event`'s line (not in the lines yet) last.
    fn transcript_with(&self, at_ms: TimeMs, event: &Event) -> Vec<TranscriptEntry> {
        let mut t = self.transcript();
        t.extend(transcript::from_event(at_ms, event));
        t
    }

    /// One record's events about this interaction.
    fn on_events(&mut self, seq: u64, at_ms: TimeMs, events: Vec<Event>) {
        let announced = events.iter().any(|e| matches!(e, Event::Created { .. }));
        for event in events {
            self.on_event(seq, at_ms, event, announced);
        }
    }

    fn finished(&self) -> bool {
        self.view.state.is_terminal()
    }
}

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ConversationMsg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        Ok(match args {
            ConversationArgs::New {
                core,
                interaction,
                request,
            } => ConversationState::new(core, interaction, request, true, false),
            ConversationArgs::Existing {
                core,
                interaction,
                restarted,
            } => ConversationState::new(core, interaction, None, false, restarted),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConversationMsg>,
        msg: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        state.step(&myself, msg);
        Ok(())
    }
}

impl ConversationState {
    fn new(
        core: Arc<Core>,
        interaction: InteractionId,
        request: Option<Arc<NewInteraction>>,
        ready: bool,
        restarted: bool,
    ) -> ConversationState {
        let (customer, attributes) = request
            .map(|r| (r.customer.clone(), r.attributes.clone()))
            .unwrap_or_default();
        ConversationState {
            core,
            idle: false,
            ready,
            restarted,
            agents_seen: Vec::new(),
            stash: Vec::new(),
            seen_seq: 0,
            view: ConversationView {
                interaction,
                customer,
                channel: String::new(),
                queue: String::new(),
                attributes,
                state: InteractionState::Queued,
                agent: None,
                participants: BTreeSet::new(),
                channels: Vec::new(),
                transcript: Vec::new(),
            },
            lines: Vec::new(),
        }
    }

    fn step(&mut self, myself: &ActorRef<ConversationMsg>, msg: ConversationMsg) {
        let state = self;
        match msg {
            ConversationMsg::Rebuild => {
                let first = !state.ready;
                state.rebuild();
                // Events this conversation's previous actor had not passed on yet died
                // with it: its agent rebuilds from the engine too and tells its sessions.
                // Every agent it was ever offered to (a previous holder may have missed
                // its offer's end or a transfer away) rebuilds too.
                if state.restarted {
                    for agent in std::mem::take(&mut state.agents_seen) {
                        if let Some(a) = state.agent_ref(&agent) {
                            let _ = a.cast(AgentMsg::Rebuild { announce: true });
                        }
                    }
                }
                if first {
                    for m in std::mem::take(&mut state.stash) {
                        state.step(myself, m);
                    }
                }
            }
            ConversationMsg::Start {
                interaction,
                request,
                seq,
                at_ms,
                events,
            } => {
                *state = ConversationState::new(
                    state.core.clone(),
                    interaction,
                    Some(request),
                    true,
                    false,
                );
                state.on_events(seq, at_ms, events);
            }
            // Routed before this actor finished its previous interaction, read after:
            // not this conversation's.
            ConversationMsg::Routed { ref events, .. }
                if state.idle
                    || events
                        .iter()
                        .any(|e| e.interaction() != Some(state.view.interaction)) => {}
            m @ ConversationMsg::Routed { .. } if !state.ready => state.stash.push(m),
            ConversationMsg::Routed { seq, at_ms, events } => {
                // Records up to the rebuild's are in the state already (one record
                // may hold several events: all share its sequence number).
                if seq > state.seen_seq {
                    state.on_events(seq, at_ms, events);
                }
            }
            ConversationMsg::View { interaction, reply } => {
                let held = !state.idle && state.view.interaction == interaction;
                let _ = reply.send(held.then(|| state.view()));
            }
            ConversationMsg::Crash(interaction)
                if state.idle || state.view.interaction != interaction => {}
            ConversationMsg::Crash(_) => {
                panic!(
                    "fault injected into conversation actor {}",
                    state.view.interaction
                )
            }
        }
        if !state.idle && state.ready && state.finished() {
            state
                .core
                .conversations
                .remove_if(&state.view.interaction, |_, r| {
                    r.get_id() == myself.get_id()
                });
            if state.core.recycle_conversation(myself) {
                // Its memory goes now, not when the actor is next used.
                state.idle = true;
                state.lines = Vec::new();
                state.view.attributes.clear();
                state.view.participants.clear();
                state.stash = Vec::new();
            } else {
                myself.stop(None);
            }
        }
    }
}

/// Sets `field` to `to`, keeping its allocation (most events repeat the queue).
fn set(field: &mut String, to: &str) {
    if field != to {
        field.clear();
        field.push_str(to);
    }
}
