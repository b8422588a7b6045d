//! [`Runtime`]: the actor system around the durable engine.
//!
//! ```text
//!  sessions / adapters ──execute──▶ Journal (engine + log) ──records, in log order──▶ router
//!                                                                                     │
//!          ┌───────────────────────────────┬───────────────────────────┬──────────────┤
//!          ▼                               ▼                           ▼              ▼
//!   conversation actor (per live     queue actor (per queue):    agent actor (per   event bus
//!   interaction): transcript,        stats windows, relaxation   agent): sessions,  (observers)
//!   participants, context ──offers──▶ and preferred timers        offers, timers,
//!                          ──events──▶                            grace, pushes
//! ```
//!
//! Routing is never an actor's job: operations run through the journal (the shared
//! dispatcher), on the caller's task. The router hands each record's events to the
//! actors concerned; events about an interaction go through its conversation actor, so
//! an agent sees them in that interaction's order. Timers are armed by the actors on
//! tokio time and fire back as logged `timer` operations, so the whole system runs on a
//! paused clock.
//!
//! Supervision: every actor is linked to a supervisor. A failed (panicking) actor is
//! logged and started again; it rebuilds its state from the engine — which is the
//! log's state — and ignores events its rebuild already includes, so nothing is lost or
//! applied twice. Agent sessions live outside the agent's actor and survive it; they
//! get a [`Push::Resync`] with the rebuilt state.

use crate::agent::{AgentActor, AgentArgs, AgentMsg};
use crate::bus::{EventBus, Subscription};
use crate::center::Clock;
use crate::conversation::{ConversationActor, ConversationArgs, ConversationMsg, ConversationView};
use crate::core::{JournalHandle, RuntimeConfig, RuntimeError, Shared};
use crate::queue::{QueueActor, QueueArgs, QueueMsg, QueueOutcome, QueueStats};
use crate::session::{AgentView, OfferPush, Push, PushTo, SessionSet};
use crate::stats::Outcome;
use crate::timers::Timers;
use crate::transcript;
use crate::virtual_agent::{BotMemory, BotTurn, VirtualAgent};
use dashmap::DashMap;
use omniroute_engine::journal::{Ack, Command, Journal, JournalError, LogStore, Published};
use omniroute_engine::{
    ChangeKind, EngineError, Event, InteractionId, InteractionState, Message, NewInteraction,
    Presence, Sender, TimeMs, TransferTarget,
};
use parking_lot::Mutex;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Semaphore, mpsc};

/// Restarts per actor within [`RESTART_WINDOW_MS`] done at once; past them the
/// supervisor backs off (a crash loop is logged, not spun).
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    Agent(Arc<str>),
    Queue(Arc<str>),
    Conversation(InteractionId),
    Bot(String),
}

/// Which actor a fault is injected into ([`Runtime::inject_panic`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActorKey {
    /// An agent's actor.
    Agent(String),
    /// A queue's actor.
    Queue(String),
    /// A live interaction's conversation actor.
    Conversation(InteractionId),
}

/// What the router remembers of a customer for channel switching: kept while their
/// conversation is live and for the switching window after (housekeeping forgets it).
#[derive(Clone, Debug, Default)]
struct CustomerTrack {
    /// The customer's live interactions, oldest first (usually none or one): a new
    /// message joins the newest; the customer is kept while any is live.
    live: Vec<InteractionId>,
    last_activity_ms: TimeMs,
    last_agent: Option<Arc<str>>,
    last: Option<InteractionId>,
    ended_ms: Option<TimeMs>,
}

impl CustomerTrack {
    /// Counts `interaction` live (kept in id order: ids grow with creation).
    fn opened(&mut self, interaction: InteractionId) {
        if let Err(at) = self.live.binary_search(&interaction) {
            self.live.insert(at, interaction);
        }
    }
}

/// Each customer's interactions the engine still holds — the index
/// `customer_history` reads — kept as long as the engine keeps them (its retention of
/// finished work, 24 h by default), not just for the switching window.
#[derive(Default)]
struct Histories {
    by_customer: DashMap<Arc<str>, VecDeque<InteractionId>>,
    /// Finished interactions with their customer, in the order they finished. The
    /// engine purges finished work by when it finished (its last step: the end of its
    /// wrap-up), so housekeeping walks this from the front, forgetting what the engine
    /// no longer holds, until a batch in which it holds everything.
    finished: Mutex<VecDeque<(InteractionId, Arc<str>)>>,
    /// The engine's [`forget_epoch`](omniroute_engine::Engine::forget_epoch) when the
    /// index was last checked: until the engine forgets something, nothing is checked.
    checked: Mutex<Option<(u64, u64)>>,
}

impl Histories {
    /// Interactions looked at per batch (the engine's read lock is taken per batch).
    const BATCH: usize = 4_096;

    fn add(&self, customer: &Arc<str>, interaction: InteractionId) {
        // One lookup (the key is shared, not copied).
        self.by_customer
            .entry(customer.clone())
            .or_default()
            .push_back(interaction);
    }

    /// Whether the engine may have forgotten indexed work since the last check (its
    /// forget epoch is now `epoch`); notes `epoch` as checked.
    fn needs_check(&self, epoch: (u64, u64)) -> bool {
        self.checked.lock().replace(epoch) != Some(epoch)
    }

    /// Forgets the finished interactions the engine has purged. `purged` answers, for
    /// a batch of ids, which the engine no longer holds. Entries still held at the
    /// front (a long wrap-up finishing after later work) stay there, in order; the
    /// walk ends at a batch with nothing to forget.
    fn forget_purged(&self, purged: impl Fn(&[InteractionId]) -> Vec<bool>) {
        // Held entries kept at the front (only housekeeping takes entries out; the
        // router only adds at the back).
        let mut kept = 0;
        loop {
            let batch: Vec<InteractionId> = self
                .finished
                .lock()
                .iter()
                .skip(kept)
                .take(Self::BATCH)
                .map(|(id, _)| *id)
                .collect();
            if batch.is_empty() {
                return;
            }
            let gone = purged(&batch);
            debug_assert_eq!(gone.len(), batch.len(), "one answer per id");
            if !gone.contains(&true) {
                return;
            }
            let forgotten: Vec<(InteractionId, Arc<str>)> = {
                // Held entries moved up in place (in order), the purged ones after
                // them, then drained: linear in the batch.
                let mut q = self.finished.lock();
                let mut held = kept;
                for (at, gone) in (kept..kept + batch.len()).zip(&gone) {
                    if !*gone {
                        q.swap(held, at);
                        held += 1;
                    }
                }
                let drained = q.drain(held..kept + batch.len()).collect();
                kept = held;
                drained
            };
            // A customer's work is indexed as it was created and mostly finishes in
            // that order: its oldest entry, as a rule — taken off the front at once.
            // The rest wait, then go by customer (a customer with many is linear in
            // its list, not in list × ids).
            let mut rest: Vec<(InteractionId, Arc<str>)> = Vec::new();
            for (id, customer) in forgotten {
                // A customer with only this one indexed (most): one lookup.
                if self
                    .by_customer
                    .remove_if(&*customer, |_, v| v.len() == 1 && v.front() == Some(&id))
                    .is_some()
                {
                    continue;
                }
                // Not its only one (only housekeeping takes entries out): at the front
                // it goes at once and the list stays non-empty; elsewhere, below.
                match self.by_customer.get_mut(&*customer) {
                    Some(mut v) if v.front() == Some(&id) => {
                        v.pop_front();
                    }
                    Some(v) => {
                        drop(v);
                        rest.push((id, customer));
                    }
                    None => {}
                }
            }
            rest.sort_by(|a, b| a.1.cmp(&b.1));
            for group in rest.chunk_by(|a, b| a.1 == b.1) {
                let customer = &group[0].1;
                let empty = match self.by_customer.get_mut(&**customer) {
                    Some(mut v) => {
                        match group {
                            [(id, _)] => v.retain(|x| x != id),
                            _ => {
                                let ids: FxHashSet<InteractionId> =
                                    group.iter().map(|(id, _)| *id).collect();
                                v.retain(|x| !ids.contains(x));
                            }
                        }
                        v.is_empty()
                    }
                    None => false,
                };
                if empty {
                    self.by_customer.remove_if(&**customer, |_, v| v.is_empty());
                }
            }
            if batch.len() < Self::BATCH {
                return;
            }
        }
    }
}

/// One record's message to an agent actor.
struct AgentBatch {
    agent: ActorRef<AgentMsg>,
    events: Vec<Event>,
    offers: Vec<Arc<OfferPush>>,
    /// It must rebuild from the engine after them.
    rebuild: bool,
}

/// One record's message to an interaction's conversation actor.
struct ConversationBatch {
    interaction: InteractionId,
    events: Vec<Event>,
    /// The record created the interaction: its request (the router knows everything
    /// its first offer carries).
    created: Option<Arc<NewInteraction>>,
    /// The idle actor taken for it: its `Start` carries the events.
    start: Option<ActorRef<ConversationMsg>>,
}

/// The entry of `list` that `is`, made with `new` if there is none yet.
fn entry<T>(list: &mut Vec<T>, is: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> &mut T {
    match list.iter().position(is) {
        Some(at) => &mut list[at],
        None => {
            list.push(new());
            list.last_mut().expect("just pushed")
        }
    }
}

fn conversation_batch(
    list: &mut Vec<ConversationBatch>,
    interaction: InteractionId,
) -> &mut ConversationBatch {
    entry(
        list,
        |b| b.interaction == interaction,
        || ConversationBatch {
            interaction,
            events: Vec::new(),
            created: None,
            start: None,
        },
    )
}

/// The context of an offer of an interaction the record being routed created, as its
/// conversation actor would build it: the request's customer and attributes, the
/// transcript of the record's events about it up to the offer (`routed`: those before
/// it). `None` for any other event.
fn offer_context(
    event: &Event,
    routed: &[ConversationBatch],
    at_ms: TimeMs,
) -> Option<Arc<OfferPush>> {
    let Event::Offered { interaction, .. } = event else {
        return None;
    };
    let batch = routed.iter().find(|b| b.interaction == *interaction)?;
    let request = batch.created.as_ref()?;
    let transcript = batch
        .events
        .iter()
        .chain(std::iter::once(event))
        .filter_map(|e| crate::transcript::from_event(at_ms, e))
        .collect();
    OfferPush::of(
        event,
        request.customer.clone(),
        request.attributes.clone(),
        transcript,
    )
    .map(Arc::new)
}

/// Whether `event` asks for a timer.
fn arms_a_timer(event: &Event) -> bool {
    let mut any = false;
    event.timers(|_, _| any = true);
    any
}

struct LiveInfo {
    queue: Arc<str>,
    enqueued_ms: TimeMs,
    customer: Option<Arc<str>>,
    answered: bool,
    /// The agent holding its offer or the work (messages go to it).
    holder: Option<Arc<str>>,
}

impl RouterState {
    /// The agent an event concerns (keeping track of who holds each live
    /// interaction, for its messages).
    fn agent_concerned(&mut self, event: &Event) -> Option<Arc<str>> {
        let mut hold = |i: &InteractionId, who: Option<Arc<str>>| {
            if let Some(info) = self.live.get_mut(i) {
                info.holder = who;
            }
        };
        match event {
            Event::Offered {
                interaction, agent, ..
            } => {
                hold(interaction, Some(agent.clone()));
                Some(agent.clone())
            }
            Event::Rejected {
                interaction, agent, ..
            }
            | Event::OfferTimedOut {
                interaction, agent, ..
            }
            | Event::OfferRescinded {
                interaction, agent, ..
            } => {
                hold(interaction, None);
                Some(agent.clone())
            }
            Event::Accepted { agent, .. }
            | Event::Completed { agent, .. }
            | Event::WrapUpEnded { agent, .. }
            | Event::PresenceChanged { agent, .. } => Some(agent.clone()),
            Event::Transferred {
                interaction,
                from_agent,
                ..
            } => {
                hold(interaction, None);
                from_agent.clone()
            }
            Event::Queued { interaction, .. } => {
                hold(interaction, None);
                None
            }
            Event::MessagePosted { interaction, .. } => {
                self.live.get(interaction).and_then(|i| i.holder.clone())
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct RouterState {
    live: FxHashMap<InteractionId, LiveInfo>,
    /// Outcomes (answered, abandoned) not yet handed to their queue's actor: sent
    /// [`OUTCOME_BATCH`] at a time, and before anyone reads the queue's statistics.
    outcomes: FxHashMap<Arc<str>, Vec<QueueOutcome>>,
}

/// How many outcomes the router gathers for a queue's actor before sending them (one
/// message instead of one per interaction); a read of the queue's statistics sends
/// what is gathered first, so no read misses an outcome routed before it.
const OUTCOME_BATCH: usize = 64;

impl Core {
    /// Notes an outcome for `queue`'s actor (sent with the next batch).
    fn note_outcome(&self, st: &mut RouterState, queue: &Arc<str>, outcome: QueueOutcome) {
        let pending = st.outcomes.entry(queue.clone()).or_default();
        pending.push(outcome);
        if pending.len() >= OUTCOME_BATCH {
            self.send_outcomes(st, queue);
        }
    }

    /// Sends `queue`'s actor the outcomes gathered for it (with the router's lock
    /// held: in order with the router's own sends).
    fn send_outcomes(&self, st: &mut RouterState, queue: &str) {
        if let Some(outcomes) = st.outcomes.remove(queue)
            && !outcomes.is_empty()
            && let Some(q) = self.queues.get(queue)
        {
            let _ = q.cast(QueueMsg::Outcomes(outcomes));
        }
    }

    /// [`Core::send_outcomes`] from outside the router.
    fn flush_outcomes(&self, queue: &str) {
        self.send_outcomes(&mut self.router.lock(), queue);
    }
}

/// What the actors share.
pub(crate) struct Core {
    pub shared: Arc<Shared>,
    // Keyed by ids the server hands out or its configuration names: a fast hash.
    // (Maps keyed by what customers send — `customers`, `bots`, the history index —
    // keep the default, randomly seeded one.)
    pub agents: DashMap<Arc<str>, ActorRef<AgentMsg>, FxBuildHasher>,
    pub sessions: DashMap<Arc<str>, Arc<SessionSet>, FxBuildHasher>,
    pub queues: DashMap<Arc<str>, ActorRef<QueueMsg>, FxBuildHasher>,
    pub conversations: DashMap<InteractionId, ActorRef<ConversationMsg>, FxBuildHasher>,
    /// Conversation actors whose interaction finished, waiting for the next new one
    /// (at most `idle_conversation_actors`; last in, first out).
    idle_conversations: Mutex<Vec<ActorRef<ConversationMsg>>>,
    identities: DashMap<ActorId, Identity, FxBuildHasher>,
    customers: DashMap<Arc<str>, CustomerTrack>,
    /// Customers whose work finished, with when, oldest first: housekeeping forgets
    /// those still idle past the switching window without visiting every customer.
    expiring: Mutex<VecDeque<(TimeMs, Arc<str>)>>,
    histories: Histories,
    bots: DashMap<String, ActorRef<BotMsg>>,
    virtual_agents: HashMap<String, Arc<dyn VirtualAgent>>,
    live: AtomicUsize,
    /// Open virtual-agent conversations (they count toward the live limit).
    bots_open: AtomicUsize,
    /// Set by `Runtime::shutdown`: nothing is (re)started after it.
    stopping: std::sync::atomic::AtomicBool,
    next_session: AtomicU64,
    router: Mutex<RouterState>,
    bus: EventBus,
    supervisor: std::sync::OnceLock<ActorCell>,
    handle: tokio::runtime::Handle,
    /// The actors' timers (one driver task for all).
    pub timers: Arc<Timers>,
}

impl Core {
    fn supervisor(&self) -> ActorCell {
        self.supervisor.get().expect("supervisor started").clone()
    }

    /// Runs a sequence of operations in order for an actor, off its thread in `sync`.
    pub(crate) fn fire_sequence(self: &Arc<Self>, commands: Vec<Command>, why: &'static str) {
        let shared = self.shared.clone();
        let run = move || {
            for command in commands {
                if let Err(e) = shared.journal.execute(command, shared.now_ms()) {
                    tracing::warn!(error = %e, why, "operation refused");
                }
            }
        };
        if self.shared.journal.is_sync() {
            tokio::task::spawn_blocking(run);
        } else {
            run();
        }
    }

    /// Runs one operation for a caller: inline when acknowledgements do not wait for an
    /// fsync, on a blocking thread when they do.
    async fn run(&self, command: Command) -> Result<Ack, RuntimeError> {
        if self.shared.journal.is_sync() {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.journal.execute(command, shared.now_ms()))
                .await
                .map_err(|e| RuntimeError::Unavailable(format!("the journal worker ({e})")))?
                .map_err(RuntimeError::from)
        } else {
            self.shared
                .journal
                .execute(command, self.shared.now_ms())
                .map_err(RuntimeError::from)
        }
    }

    fn spawn_agent(self: &Arc<Self>, id: Arc<str>, grace: Option<TimeMs>, restarted: bool) {
        let sessions = self.sessions.entry(id.clone()).or_default().clone();
        let args = AgentArgs {
            core: self.clone(),
            id: id.clone(),
            sessions,
            grace_until_ms: grace,
            restarted,
        };
        let _g = self.handle.enter();
        match ractor::ActorRuntime::spawn_linked_instant(None, AgentActor, args, self.supervisor())
        {
            Ok((actor, _)) => {
                self.identities
                    .insert(actor.get_id(), Identity::Agent(id.clone()));
                self.agents.insert(id, actor.clone());
                let _ = actor.cast(AgentMsg::Rebuild { announce: false });
            }
            Err(e) => tracing::error!(agent = %id, error = %e, "could not start agent actor"),
        }
    }

    fn spawn_queue(self: &Arc<Self>, id: Arc<str>) {
        let args = QueueArgs {
            core: self.clone(),
            id: id.clone(),
        };
        let _g = self.handle.enter();
        match ractor::ActorRuntime::spawn_linked_instant(None, QueueActor, args, self.supervisor())
        {
            Ok((actor, _)) => {
                self.identities
                    .insert(actor.get_id(), Identity::Queue(id.clone()));
                self.queues.insert(id, actor.clone());
                let _ = actor.cast(QueueMsg::Rebuild);
            }
            Err(e) => tracing::error!(queue = %id, error = %e, "could not start queue actor"),
        }
    }

    fn spawn_conversation(
        self: &Arc<Self>,
        interaction: InteractionId,
        request: Option<Arc<NewInteraction>>,
        restarted: bool,
    ) {
        let args = match request {
            Some(_) => ConversationArgs::New {
                core: self.clone(),
                interaction,
                request,
            },
            None => ConversationArgs::Existing {
                core: self.clone(),
                interaction,
                restarted,
            },
        };
        let rebuild = matches!(args, ConversationArgs::Existing { .. });
        let _g = self.handle.enter();
        match ractor::ActorRuntime::spawn_linked_instant(
            None,
            ConversationActor,
            args,
            self.supervisor(),
        ) {
            Ok((actor, _)) => {
                self.identities
                    .insert(actor.get_id(), Identity::Conversation(interaction));
                self.conversations.insert(interaction, actor.clone());
                if rebuild {
                    let _ = actor.cast(ConversationMsg::Rebuild);
                }
            }
            Err(e) => {
                tracing::error!(%interaction, error = %e, "could not start conversation actor")
            }
        }
    }

    /// An idle conversation actor for a new interaction, if the pool has one: it
    /// serves `interaction` from now on (its `Start` goes with the events of the record
    /// that created it).
    fn take_idle_conversation(
        &self,
        interaction: InteractionId,
    ) -> Option<ActorRef<ConversationMsg>> {
        let actor = loop {
            let actor = self.idle_conversations.lock().pop()?;
            // (One that stopped while idle is not an actor any more.)
            if actor.get_status() == ractor::ActorStatus::Running {
                break actor;
            }
        };
        self.identities
            .insert(actor.get_id(), Identity::Conversation(interaction));
        self.conversations.insert(interaction, actor.clone());
        Some(actor)
    }

    /// An idle conversation actor that stopped leaves the pool.
    fn forget_idle(&self, id: ActorId) {
        self.idle_conversations.lock().retain(|a| a.get_id() != id);
    }

    /// A conversation actor whose interaction finished (and left `conversations`)
    /// offers itself for the next one: `true` if the pool took it, `false` if it is to
    /// stop (the pool is full, or the runtime is stopping).
    pub(crate) fn recycle_conversation(&self, actor: &ActorRef<ConversationMsg>) -> bool {
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        let mut idle = self.idle_conversations.lock();
        if idle.len() >= self.shared.config.idle_conversation_actors {
            return false;
        }
        // No identity while idle: it serves no interaction a restart would rebuild.
        self.identities.remove(&actor.get_id());
        idle.push(actor.clone());
        true
    }

    /// Hands one durable record's events to the actors concerned (log order: the
    /// journal calls this for one record at a time).
    fn route(self: &Arc<Self>, p: &Published) {
        self.bus.publish(p);
        let mut st = self.router.lock();
        // One message per actor per record: its events in the record's order (a
        // submit's `created`, `queued` and `offered` reach the conversation together).
        let mut to_agents: Vec<AgentBatch> = Vec::new();
        let mut to_conversations: Vec<ConversationBatch> = Vec::new();
        for event in &p.events {
            // The agent concerned hears of it first, straight from here: one sender
            // in the log's order, so its sessions see the engine's order across all
            // its work (an offer's context follows from its conversation actor, and
            // the agent holds later pushes back until it has it).
            if let Some(agent) = st.agent_concerned(event)
                && let Some(a) = self.agents.get(&*agent)
            {
                // An offer of work this record created: its context (customer,
                // attributes, the transcript so far) goes with it, from here (its
                // conversation actor sends none for it).
                let context = offer_context(event, &to_conversations, p.at_ms);
                // No conversation actor to send an offer's context: the agent builds
                // it from the engine (and tells its sessions everything again).
                let rebuild = context.is_none()
                    && matches!(event, Event::Offered { interaction, .. }
                        if !self.conversations.contains_key(interaction));
                let batch = entry(
                    &mut to_agents,
                    |b| b.agent.get_id() == a.get_id(),
                    || AgentBatch {
                        agent: a.clone(),
                        events: Vec::new(),
                        offers: Vec::new(),
                        rebuild: false,
                    },
                );
                batch.events.push(event.clone());
                batch.offers.extend(context);
                batch.rebuild |= rebuild;
            }
            match event {
                Event::Created {
                    interaction, queue, ..
                } => {
                    let customer = p
                        .request
                        .as_ref()
                        .map(|r| Arc::<str>::from(r.customer.as_str()));
                    if let Some(c) = &customer {
                        let mut t = self.customers.entry(c.clone()).or_default();
                        t.opened(*interaction);
                        t.last_activity_ms = p.at_ms;
                        drop(t);
                        self.histories.add(c, *interaction);
                    }
                    st.live.insert(
                        *interaction,
                        LiveInfo {
                            queue: queue.clone(),
                            enqueued_ms: p.at_ms,
                            customer,
                            answered: false,
                            holder: None,
                        },
                    );
                    let request = p
                        .request
                        .clone()
                        .unwrap_or_else(|| Arc::new(NewInteraction::new("", "")));
                    let batch = conversation_batch(&mut to_conversations, *interaction);
                    batch.created = Some(request.clone());
                    match self.take_idle_conversation(*interaction) {
                        Some(actor) => batch.start = Some(actor),
                        None => self.spawn_conversation(*interaction, Some(request), false),
                    }
                }
                Event::Queued {
                    interaction, queue, ..
                }
                | Event::Offered {
                    interaction, queue, ..
                } => {
                    if let Some(info) = st.live.get_mut(interaction) {
                        info.queue = queue.clone();
                    }
                }
                Event::Transferred {
                    interaction,
                    to: TransferTarget::Queue(q),
                    ..
                } => {
                    if let Some(info) = st.live.get_mut(interaction) {
                        info.queue = Arc::from(q.as_str());
                    }
                }
                Event::Accepted { interaction, agent } => {
                    if let Some(info) = st.live.get_mut(interaction) {
                        let first = !info.answered;
                        info.answered = true;
                        let (queue, enqueued_ms) = (info.queue.clone(), info.enqueued_ms);
                        if let Some(c) = &info.customer
                            && let Some(mut t) = self.customers.get_mut(&**c)
                        {
                            t.last_agent = Some(agent.clone());
                        }
                        if first {
                            self.note_outcome(
                                &mut st,
                                &queue,
                                QueueOutcome {
                                    seq: p.seq,
                                    at_ms: p.at_ms,
                                    outcome: Outcome::Answered {
                                        wait_ms: p.at_ms.saturating_sub(enqueued_ms),
                                    },
                                },
                            );
                        }
                    }
                }
                Event::Abandoned {
                    interaction, queue, ..
                } => {
                    if let Some(info) = st.live.remove(interaction) {
                        if !info.answered {
                            self.note_outcome(
                                &mut st,
                                queue,
                                QueueOutcome {
                                    seq: p.seq,
                                    at_ms: p.at_ms,
                                    outcome: Outcome::Abandoned {
                                        wait_ms: p.at_ms.saturating_sub(info.enqueued_ms),
                                    },
                                },
                            );
                        }
                        self.finished(*interaction, info, p.at_ms);
                    }
                }
                Event::Completed { interaction, .. } => {
                    if let Some(info) = st.live.remove(interaction) {
                        self.finished(*interaction, info, p.at_ms);
                    }
                }
                // Work in wrap-up when the server started (its `completed` came before
                // the restart) finishes here.
                Event::WrapUpEnded { interaction, .. } => {
                    if let Some(info) = st.live.remove(interaction) {
                        self.finished(*interaction, info, p.at_ms);
                    }
                }
                Event::MessagePosted {
                    interaction,
                    message,
                } if message.from == Sender::Customer => {
                    if let Some(info) = st.live.get(interaction)
                        && let Some(c) = &info.customer
                        && let Some(mut t) = self.customers.get_mut(&**c)
                    {
                        t.last_activity_ms = p.at_ms;
                    }
                }
                Event::Configured { changes } => {
                    for change in changes {
                        let id: Arc<str> = Arc::from(change.id.as_str());
                        match (change.kind.as_str(), change.change) {
                            ("agent", ChangeKind::Added) => self.spawn_agent(id, None, false),
                            ("agent", ChangeKind::Removed) => {
                                self.sessions.remove(&id);
                                if let Some((_, a)) = self.agents.remove(&id) {
                                    a.stop(Some("agent removed from the configuration".into()));
                                }
                            }
                            ("queue", ChangeKind::Added) => self.spawn_queue(id),
                            ("queue", ChangeKind::Changed) => {
                                // Outcomes gathered before the change are judged by the
                                // threshold in force when they happened.
                                self.send_outcomes(&mut st, &id);
                                if let Some(q) = self.queues.get(&id) {
                                    let _ = q.cast(QueueMsg::Refresh);
                                }
                            }
                            ("queue", ChangeKind::Removed) => {
                                st.outcomes.remove(&id);
                                if let Some((_, q)) = self.queues.remove(&id) {
                                    q.stop(Some("queue removed from the configuration".into()));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            if let Some(interaction) = event.interaction() {
                conversation_batch(&mut to_conversations, interaction)
                    .events
                    .push(event.clone());
            }
            // Its actor arms the queue's timers (relaxation, preferred-agent
            // fallback): nothing to send for waiting work without any.
            if let Event::Queued { queue, .. } = event
                && arms_a_timer(event)
                && let Some(q) = self.queues.get(queue)
            {
                let _ = q.cast(QueueMsg::Routed {
                    seq: p.seq,
                    event: event.clone(),
                });
            }
        }
        drop(st);
        for batch in to_agents {
            let _ = batch.agent.cast(AgentMsg::Routed {
                seq: p.seq,
                at_ms: p.at_ms,
                events: batch.events,
                offers: batch.offers,
            });
            if batch.rebuild {
                let _ = batch.agent.cast(AgentMsg::Rebuild { announce: true });
            }
        }
        for batch in to_conversations {
            let ConversationBatch {
                interaction,
                events,
                created,
                start,
            } = batch;
            if let (Some(actor), Some(request)) = (start, created) {
                // (An idle actor stops only with the runtime.)
                let _ = actor.cast(ConversationMsg::Start {
                    interaction,
                    request,
                    seq: p.seq,
                    at_ms: p.at_ms,
                    events,
                });
            } else if let Some(c) = self.conversations.get(&interaction) {
                let _ = c.cast(ConversationMsg::Routed {
                    seq: p.seq,
                    at_ms: p.at_ms,
                    events,
                });
            }
        }
    }

    fn finished(&self, interaction: InteractionId, info: LiveInfo, at_ms: TimeMs) {
        let _ = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        if let Some(c) = info.customer {
            if let Some(mut t) = self.customers.get_mut(&*c) {
                t.live.retain(|i| *i != interaction);
                // The agent who served the one that ended last (with several live, the
                // last to accept may have served another).
                if info.answered
                    && let Some(agent) = info.holder
                {
                    t.last_agent = Some(agent);
                }
                t.last = Some(interaction);
                t.ended_ms = Some(at_ms);
                t.last_activity_ms = at_ms;
            }
            self.expiring.lock().push_back((at_ms, c.clone()));
            self.histories.finished.lock().push_back((interaction, c));
        }
    }

    /// Forgets customers with no live work and no activity within the switching
    /// window. A customer's activity after its work finished only comes with new work,
    /// whose end queues it again: the queue's front is all that needs looking at.
    fn forget_idle_customers(&self, now: TimeMs) {
        let window = self.shared.config.switch_window_ms;
        loop {
            let customer = {
                let mut q = self.expiring.lock();
                match q.front() {
                    Some((at, _)) if now.saturating_sub(*at) > window => {
                        q.pop_front().map(|(_, c)| c)
                    }
                    _ => {
                        // A peak's capacity is not kept for good.
                        let len = q.len();
                        if q.capacity() > 1_024 && len < q.capacity() / 4 {
                            q.shrink_to(len * 2);
                        }
                        return;
                    }
                }
            };
            if let Some(c) = customer {
                self.customers.remove_if(&*c, |_, t| {
                    t.live.is_empty() && now.saturating_sub(t.last_activity_ms) > window
                });
            }
        }
    }

    /// Reserves a place for one more live interaction (admission control).
    fn admit(&self) -> Result<(), RuntimeError> {
        let max = self.shared.config.max_live_interactions;
        let before =
            self.live.fetch_add(1, Ordering::AcqRel) + self.bots_open.load(Ordering::Acquire);
        if before >= max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(RuntimeError::Busy(format!(
                "{before} interactions are live, the limit is {max}; try again later"
            )));
        }
        Ok(())
    }

    async fn submit(&self, request: NewInteraction) -> Result<InteractionId, RuntimeError> {
        self.admit()?;
        match self.run(Command::Submit { request }).await {
            Ok(ack) => Ok(ack.interaction.expect("a submit creates an interaction")),
            Err(e) => {
                let _ = self
                    .live
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_sub(1))
                    });
                Err(e)
            }
        }
    }

    async fn post(&self, interaction: InteractionId, message: Message) -> Result<(), RuntimeError> {
        self.run(Command::Post {
            interaction,
            message,
        })
        .await
        .map(|_| ())
    }

    async fn call<M: ractor::Message, T: Send + 'static>(
        &self,
        what: &str,
        actor: Option<ActorRef<M>>,
        msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
    ) -> Result<T, RuntimeError> {
        let timeout = self.shared.config.call_timeout;
        let actor = actor.ok_or_else(|| RuntimeError::Unavailable(what.to_string()))?;
        match actor.call(msg, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(RuntimeError::Timeout {
                what: what.to_string(),
                ms: timeout.as_millis() as u64,
            }),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(RuntimeError::Unavailable(what.to_string()))
            }
        }
    }
}

/// What happened to an inbound customer message ([`Runtime::inbound`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InboundOutcome {
    /// A new conversation was created and routed.
    Created {
        /// Interaction.
        interaction: InteractionId,
    },
    /// The message joined the customer's open conversation (perhaps from another
    /// channel than it started on).
    Joined {
        /// Interaction.
        interaction: InteractionId,
    },
    /// The customer's previous conversation ended within the switching window: a new
    /// one continues it, waiting first for the agent who served it.
    Returning {
        /// New interaction.
        interaction: InteractionId,
        /// The one it continues.
        previous: InteractionId,
        /// The agent it waits for.
        agent: String,
    },
    /// A virtual agent answered; the conversation stays with it.
    Bot {
        /// Its reply.
        reply: String,
    },
    /// The virtual agent resolved the conversation.
    Resolved {
        /// Its last reply.
        reply: String,
    },
    /// The virtual agent handed over to a live queue: a new interaction carrying what
    /// it collected (as attributes) and the exchange (as transcript).
    Escalated {
        /// Interaction.
        interaction: InteractionId,
        /// Its last reply.
        reply: String,
    },
}

/// An inbound customer message from a channel adapter.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// Channel it came on.
    pub channel: String,
    /// Customer id or contact point (the same customer across channels).
    pub customer: String,
    /// Text.
    pub text: String,
    /// Attributes for a new conversation.
    pub attributes: BTreeMap<String, String>,
    /// Queue for a new conversation (else the routing rules decide).
    pub queue: Option<String>,
    /// Start a new conversation with this virtual agent.
    pub virtual_agent: Option<String>,
    /// Post into this conversation (it must be the customer's and still open) instead
    /// of finding it by customer.
    pub interaction: Option<InteractionId>,
}

impl Inbound {
    /// A message from `customer` on `channel`.
    pub fn new(channel: &str, customer: &str, text: &str) -> Self {
        Inbound {
            channel: channel.to_string(),
            customer: customer.to_string(),
            text: text.to_string(),
            attributes: BTreeMap::new(),
            queue: None,
            virtual_agent: None,
            interaction: None,
        }
    }
}

// ------------------------------------------------------------------ virtual agent stage

/// Messages of a virtual-agent conversation.
pub(crate) enum BotMsg {
    Say {
        channel: String,
        text: String,
        reply: ractor::RpcReplyPort<Result<InboundOutcome, RuntimeError>>,
    },
    /// No message since the `n`th: the customer left; the bot stops.
    Idle(u64),
}

struct BotActor;

struct BotState {
    core: Arc<Core>,
    bot: Arc<dyn VirtualAgent>,
    base: Inbound,
    memory: BotMemory,
    messages: Vec<Message>,
    said: u64,
    /// Its slot under the live limit was handed to the interaction it escalated to.
    released: bool,
}

impl BotState {
    fn arm_idle(&self, myself: &ActorRef<BotMsg>) {
        let n = self.said;
        myself.send_after(
            std::time::Duration::from_millis(self.core.shared.config.switch_window_ms),
            move || BotMsg::Idle(n),
        );
    }
}

impl Actor for BotActor {
    type Msg = BotMsg;
    type State = BotState;
    type Arguments = BotState;

    async fn post_stop(
        &self,
        _myself: ActorRef<BotMsg>,
        st: &mut BotState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.released {
            st.released = true;
            st.core.bots_open.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn pre_start(
        &self,
        myself: ActorRef<BotMsg>,
        mut state: BotState,
    ) -> Result<BotState, ActorProcessingErr> {
        state.arm_idle(&myself);
        if let Some(greeting) = state.bot.greeting() {
            state.messages.push(Message {
                from: Sender::VirtualAgent,
                from_id: Some(state.bot.name().to_string()),
                channel: state.base.channel.clone(),
                text: greeting,
                sent_ms: state.core.shared.now_ms(),
            });
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BotMsg>,
        msg: BotMsg,
        st: &mut BotState,
    ) -> Result<(), ActorProcessingErr> {
        let (channel, text, reply) = match msg {
            BotMsg::Say {
                channel,
                text,
                reply,
            } => (channel, text, reply),
            BotMsg::Idle(n) => {
                if n == st.said {
                    tracing::info!(customer = %st.base.customer, bot = st.bot.name(), "virtual agent conversation idle past the switching window: ended");
                    st.core
                        .bots
                        .remove_if(&st.base.customer, |_, r| r.get_id() == myself.get_id());
                    myself.stop(None);
                }
                return Ok(());
            }
        };
        st.said += 1;
        st.arm_idle(&myself);
        let now = st.core.shared.now_ms();
        st.messages.push(Message {
            from: Sender::Customer,
            from_id: None,
            channel: channel.clone(),
            text: text.clone(),
            sent_ms: now,
        });
        let turn = st.bot.respond(&mut st.memory, &text);
        let said = match &turn {
            BotTurn::Reply(r) | BotTurn::Resolve(r) | BotTurn::Escalate { reply: r, .. } => {
                r.clone()
            }
        };
        st.messages.push(Message {
            from: Sender::VirtualAgent,
            from_id: Some(st.bot.name().to_string()),
            channel: channel.clone(),
            text: said.clone(),
            sent_ms: now,
        });
        let outcome = match turn {
            BotTurn::Reply(reply) => Ok(InboundOutcome::Bot { reply }),
            BotTurn::Resolve(reply) => {
                tracing::info!(customer = %st.base.customer, bot = st.bot.name(), "resolved by the virtual agent");
                Ok(InboundOutcome::Resolved { reply })
            }
            BotTurn::Escalate { reply, queue } => {
                let mut request = NewInteraction::new(&st.base.channel, &st.base.customer);
                request.attributes = st.base.attributes.clone();
                for (k, v) in &st.memory.collected {
                    request.attributes.insert(k.clone(), v.clone());
                }
                request
                    .attributes
                    .insert("virtual_agent".to_string(), st.bot.name().to_string());
                request.queue = queue.or(st.base.queue.clone());
                // The exchange and what the bot collected are logged with the
                // interaction's creation: every offer carries them.
                let mut summary: Vec<String> = st
                    .memory
                    .collected
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                summary.sort();
                request.messages = st.messages.clone();
                request.messages.push(Message {
                    from: Sender::System,
                    from_id: Some(st.bot.name().to_string()),
                    channel: channel.clone(),
                    text: format!("virtual agent escalated; collected: {}", summary.join(", ")),
                    sent_ms: now,
                });
                // The bot's slot under the live limit goes to the interaction.
                st.released = true;
                st.core.bots_open.fetch_sub(1, Ordering::AcqRel);
                let submitted = st.core.submit(request).await;
                if submitted.is_err() {
                    st.released = false;
                    st.core.bots_open.fetch_add(1, Ordering::AcqRel);
                }
                match submitted {
                    Ok(interaction) => {
                        st.messages.clear();
                        Ok(InboundOutcome::Escalated { interaction, reply })
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let done = matches!(
            outcome,
            Ok(InboundOutcome::Resolved { .. }) | Ok(InboundOutcome::Escalated { .. })
        );
        let _ = reply.send(outcome);
        if done {
            st.core
                .bots
                .remove_if(&st.base.customer, |_, r| r.get_id() == myself.get_id());
            myself.stop(None);
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ supervisor

struct Supervisor;

struct SupervisorState {
    core: std::sync::Weak<Core>,
    failures: HashMap<Identity, VecDeque<TimeMs>>,
}

impl Core {
    fn respawn(self: &Arc<Self>, identity: Identity) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        match identity {
            Identity::Agent(a) => self.spawn_agent(a, None, true),
            Identity::Queue(q) => self.spawn_queue(q),
            Identity::Conversation(i) => self.spawn_conversation(i, None, true),
            // Its exchange was in its memory only: the customer's next message starts
            // a new one (see docs/ACTORS.md).
            Identity::Bot(_) => {}
        }
    }

    fn unregister(&self, identity: &Identity, id: ActorId) {
        match identity {
            Identity::Agent(a) => {
                self.agents.remove_if(a, |_, r| r.get_id() == id);
            }
            Identity::Queue(q) => {
                self.queues.remove_if(q, |_, r| r.get_id() == id);
            }
            Identity::Conversation(i) => {
                self.conversations.remove_if(i, |_, r| r.get_id() == id);
            }
            Identity::Bot(c) => {
                self.bots.remove_if(c, |_, r| r.get_id() == id);
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: SupervisorState,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(core) = state.core.upgrade() else {
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((_, identity)) = core.identities.remove(&cell.get_id()) else {
                    // An idle conversation actor (no identity): out of the pool.
                    core.forget_idle(cell.get_id());
                    return Ok(());
                };
                core.unregister(&identity, cell.get_id());
                if let Identity::Bot(customer) = &identity {
                    tracing::error!(%customer, %error, "virtual agent failed: its exchange is lost; the customer's next message starts again");
                    return Ok(());
                }
                // A conversation's agent may be holding pushes back for an offer's
                // context that died with it: it rebuilds from the engine now, not when
                // the conversation comes back (a crash loop delays that).
                if let Identity::Conversation(interaction) = &identity {
                    let holder = core
                        .router
                        .lock()
                        .live
                        .get(interaction)
                        .and_then(|i| i.holder.clone());
                    if let Some(agent) = holder
                        && let Some(a) = core.agents.get(&agent)
                    {
                        let _ = a.cast(AgentMsg::Rebuild { announce: true });
                    }
                }
                let now = core.shared.now_ms();
                let recent = state.failures.entry(identity.clone()).or_default();
                recent.push_back(now);
                while recent.front().is_some_and(|t| *t + RESTART_WINDOW_MS < now) {
                    recent.pop_front();
                }
                let failures = recent.len();
                // Forget actors that have been quiet for a while (bounded memory).
                state
                    .failures
                    .retain(|_, r| r.back().is_some_and(|t| *t + RESTART_WINDOW_MS >= now));
                if failures > MAX_RESTARTS {
                    // A crash loop: keep restarting (its work must not be stranded) but
                    // back off, doubling up to a minute.
                    let delay_ms = (1_000u64 << (failures - MAX_RESTARTS - 1).min(6)).min(60_000);
                    tracing::error!(actor = ?identity, %error, failures, delay_ms, "actor keeps failing: restarting it after a delay");
                    let core = Arc::downgrade(&core);
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                        if let Some(core) = core.upgrade() {
                            core.respawn(identity);
                        }
                    });
                    return Ok(());
                }
                tracing::error!(actor = ?identity, %error, "actor failed: restarting it from the engine's state");
                core.respawn(identity);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                match core.identities.remove(&cell.get_id()) {
                    Some((_, identity)) => core.unregister(&identity, cell.get_id()),
                    None => core.forget_idle(cell.get_id()),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ sessions

/// One connected session of an agent: its pushes and its requests.
pub struct AgentSession {
    core: Arc<Core>,
    agent: Arc<str>,
    id: u64,
    rx: Option<mpsc::Receiver<Push>>,
    permits: Arc<Semaphore>,
}

impl AgentSession {
    /// The agent.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The next push; `None` once the runtime is gone (or the pushes were taken).
    pub async fn next(&mut self) -> Option<Push> {
        self.rx.as_mut()?.recv().await
    }

    /// A push if one is waiting.
    pub fn try_next(&mut self) -> Option<Push> {
        self.rx.as_mut()?.try_recv().ok()
    }

    /// Takes the stream of pushes (to forward them elsewhere, e.g. a network session);
    /// requests still go through this session.
    pub fn take_pushes(&mut self) -> Option<mpsc::Receiver<Push>> {
        self.rx.take()
    }

    async fn request(&self, command: Command) -> Result<Ack, RuntimeError> {
        let _permit = self.permits.try_acquire().map_err(|_| {
            RuntimeError::Busy(format!(
                "session has {} requests in flight (the limit); wait for answers",
                self.core.shared.config.session_max_in_flight
            ))
        })?;
        self.core.run(command).await
    }

    /// Sets the agent's presence (log in: `Available`; log out: `Offline`).
    pub async fn set_presence(&self, presence: Presence) -> Result<Ack, RuntimeError> {
        self.request(Command::SetPresence {
            agent: self.agent.to_string(),
            presence,
        })
        .await
    }

    /// Accepts an offer.
    pub async fn accept(&self, interaction: InteractionId) -> Result<Ack, RuntimeError> {
        self.request(Command::Accept {
            agent: self.agent.to_string(),
            interaction,
        })
        .await
    }

    /// Rejects an offer.
    pub async fn reject(&self, interaction: InteractionId) -> Result<Ack, RuntimeError> {
        self.request(Command::Reject {
            agent: self.agent.to_string(),
            interaction,
        })
        .await
    }

    /// Completes assigned work.
    pub async fn complete(
        &self,
        interaction: InteractionId,
        wrap_up_code: Option<&str>,
    ) -> Result<Ack, RuntimeError> {
        self.request(Command::Complete {
            agent: self.agent.to_string(),
            interaction,
            wrap_up_code: wrap_up_code.map(String::from),
        })
        .await
    }

    /// Ends a wrap-up before the queue's wrap-up time ("ready"): the capacity is free
    /// at once.
    pub async fn end_wrap_up(&self, interaction: InteractionId) -> Result<Ack, RuntimeError> {
        self.request(Command::EndWrapUp {
            agent: self.agent.to_string(),
            interaction,
        })
        .await
    }

    /// Transfers assigned work to an agent or a queue; the transcript and attributes
    /// go with it.
    pub async fn transfer(
        &self,
        interaction: InteractionId,
        to: TransferTarget,
    ) -> Result<Ack, RuntimeError> {
        self.request(Command::Transfer {
            agent: self.agent.to_string(),
            interaction,
            to,
        })
        .await
    }

    /// Sends a message to the customer of assigned work, on the channel the customer
    /// last wrote on (or `channel`).
    pub async fn send_message(
        &self,
        interaction: InteractionId,
        text: &str,
        channel: Option<&str>,
    ) -> Result<Ack, RuntimeError> {
        let channel = match channel {
            Some(c) => c.to_string(),
            None => self.core_channel(interaction).await?,
        };
        self.request(Command::Post {
            interaction,
            message: Message {
                from: Sender::Agent,
                from_id: Some(self.agent.to_string()),
                channel,
                text: text.to_string(),
                sent_ms: self.core.shared.now_ms(),
            },
        })
        .await
    }

    /// The channel the customer last wrote on (else the one the interaction came on),
    /// from the engine, whatever its actors are doing.
    async fn core_channel(&self, interaction: InteractionId) -> Result<String, RuntimeError> {
        let (found, _) = self.core.shared.read(|e| e.interaction(interaction));
        let s = found.map_err(|e| RuntimeError::Journal(e.into()))?;
        let last = s.history.iter().rev().find_map(|h| match h {
            omniroute_engine::HistoryEntry::Message { message, .. }
                if message.from == Sender::Customer =>
            {
                Some(message.channel.clone())
            }
            _ => None,
        });
        Ok(last.unwrap_or(s.channel))
    }

    /// The agent's state as its actor holds it.
    pub async fn view(&self) -> Result<AgentView, RuntimeError> {
        let actor = self.core.agents.get(&self.agent).map(|r| r.clone());
        self.core
            .call(&format!("agent `{}`", self.agent), actor, AgentMsg::View)
            .await
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        if let Some(set) = self.core.sessions.get(&self.agent) {
            set.remove(self.id);
        }
        if let Some(a) = self.core.agents.get(&self.agent) {
            let _ = a.cast(AgentMsg::SessionClosed);
        }
    }
}

// ------------------------------------------------------------------ the runtime

/// The actor runtime (see the module docs).
pub struct Runtime {
    core: Arc<Core>,
    supervisor: ActorRef<()>,
    grace_driver: tokio::task::JoinHandle<()>,
    timer_driver: AbortOnDrop,
}

impl Runtime {
    /// Starts the actors around an opened journal (configured with
    /// `external_timers: true`, so the actors own the timers): one actor per configured
    /// agent and queue, one per live interaction, timers re-armed from the engine, and
    /// agents in a restart grace period waiting for their sessions.
    pub async fn start<S: LogStore>(
        journal: Journal<S>,
        clock: Clock,
        config: RuntimeConfig,
        virtual_agents: Vec<Arc<dyn VirtualAgent>>,
    ) -> Result<Runtime, RuntimeError> {
        if !journal.external_timers() {
            return Err(RuntimeError::BadRequest(
                "the journal was opened without `external_timers: true`: the runtime's actors own the timers, and the journal's own timer queue would grow unrun".into(),
            ));
        }
        let journal: Arc<Journal<S>> = Arc::new(journal);
        let handle: Arc<dyn JournalHandle> = journal.clone();
        let bus = EventBus::new(config.bus_capacity);
        let core = Arc::new(Core {
            shared: Arc::new(Shared {
                journal: handle,
                clock,
                config,
            }),
            agents: DashMap::default(),
            sessions: DashMap::default(),
            queues: DashMap::default(),
            conversations: DashMap::default(),
            idle_conversations: Mutex::default(),
            identities: DashMap::default(),
            customers: DashMap::new(),
            expiring: Mutex::default(),
            histories: Histories::default(),
            bots: DashMap::new(),
            virtual_agents: virtual_agents
                .into_iter()
                .map(|v| (v.name().to_string(), v))
                .collect(),
            live: AtomicUsize::new(0),
            bots_open: AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            router: Mutex::new(RouterState::default()),
            bus,
            supervisor: std::sync::OnceLock::new(),
            handle: tokio::runtime::Handle::current(),
            timers: Arc::new(Timers::default()),
        });
        let timer_driver = AbortOnDrop(tokio::spawn(core.timers.clone().drive()));
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorState {
                core: Arc::downgrade(&core),
                failures: HashMap::new(),
            },
        )
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("the supervisor ({e})")))?;
        let _ = core.supervisor.set(supervisor.get_cell());

        // What exists now: agents, queues, live interactions.
        let grace: HashMap<String, TimeMs> = journal.grace_periods().into_iter().collect();
        let ((agents, queues, live), _) = core.shared.read(|engine| {
            let config = engine.config();
            let mut live = Vec::new();
            let mut finished = Vec::new();
            for id in engine.interaction_ids() {
                if let Ok(s) = engine.interaction(id) {
                    let customer = Arc::<str>::from(s.customer.as_str());
                    core.histories.add(&customer, id);
                    if !s.state.is_terminal() {
                        live.push(s);
                    } else {
                        let at = s.history.last().map_or(0, |h| h.at_ms());
                        finished.push((at, id, customer));
                    }
                }
            }
            finished.sort_unstable();
            core.histories
                .finished
                .lock()
                .extend(finished.into_iter().map(|(_, id, c)| (id, c)));
            (
                config.agents.into_iter().map(|a| a.id).collect::<Vec<_>>(),
                config.queues.into_iter().map(|q| q.id).collect::<Vec<_>>(),
                live,
            )
        });
        for a in agents {
            let g = grace.get(&a).copied();
            core.spawn_agent(Arc::from(a.as_str()), g, false);
        }
        for q in queues {
            core.spawn_queue(Arc::from(q.as_str()));
        }
        {
            let mut st = core.router.lock();
            for s in &live {
                let customer: Arc<str> = Arc::from(s.customer.as_str());
                st.live.insert(
                    s.id,
                    LiveInfo {
                        queue: Arc::from(s.queue.as_str()),
                        enqueued_ms: s.enqueued_ms,
                        customer: Some(customer.clone()),
                        answered: s.answered_ms.is_some(),
                        // As the router's own record has it: the agent of the offer or
                        // the work, through wrap-up.
                        holder: matches!(
                            s.state,
                            InteractionState::Assigned
                                | InteractionState::Offered
                                | InteractionState::WrapUp
                        )
                        .then(|| s.agent.as_deref().map(Arc::from))
                        .flatten(),
                    },
                );
                let mut t = core.customers.entry(customer.clone()).or_default();
                t.opened(s.id);
                t.last_activity_ms = t.last_activity_ms.max(s.created_ms);
                if s.state == InteractionState::Assigned || s.state == InteractionState::Offered {
                    t.last_agent = s.agent.as_deref().map(Arc::from);
                }
            }
            core.live.store(st.live.len(), Ordering::Release);
        }
        for s in &live {
            core.spawn_conversation(s.id, None, false);
        }
        // Every actor has rebuilt from the engine before anyone is served (a session
        // connected before its agent's rebuild would miss what the rebuild absorbed).
        let agents: Vec<_> = core.agents.iter().map(|r| r.clone()).collect();
        for a in agents {
            core.call("an agent actor starting", Some(a), AgentMsg::View)
                .await?;
        }
        let queues: Vec<_> = core.queues.iter().map(|r| r.clone()).collect();
        for q in queues {
            core.call("a queue actor starting", Some(q), QueueMsg::Stats)
                .await?;
        }
        let conversations: Vec<_> = core
            .conversations
            .iter()
            .map(|r| (*r.key(), r.value().clone()))
            .collect();
        for (interaction, c) in conversations {
            // A conversation finished meanwhile stops: not an error.
            let _ = core
                .call("a conversation actor starting", Some(c), |reply| {
                    ConversationMsg::View { interaction, reply }
                })
                .await;
        }
        let router = core.clone();
        journal.observe(move |p: &Published| router.route(p));
        // Housekeeping every 10 s: customers not seen within the switching window are
        // forgotten (bounded memory), so are the history index's entries of work the
        // engine has purged, and restart grace periods whose agent actor is
        // gone are fired by the journal so held work is not stranded.
        let weak = Arc::downgrade(&core);
        let grace_driver = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let Some(core) = weak.upgrade() else { return };
                let now = core.shared.now_ms();
                core.forget_idle_customers(now);
                // Read before the walk: a purge during it shows at the next round.
                // (A record routed only after a purge that already forgot its
                // interaction — delivery later than the retention — leaves its entry
                // until the engine's next purge moves the epoch.)
                let epoch = core.shared.read(|e| e.forget_epoch()).0;
                if core.histories.needs_check(epoch) {
                    core.histories.forget_purged(|ids| {
                        core.shared
                            .read(|e| ids.iter().map(|id| !e.holds(*id)).collect())
                            .0
                    });
                }
                let orphaned = core
                    .shared
                    .journal
                    .grace_periods()
                    .into_iter()
                    .any(|(a, until)| until <= now && !core.agents.contains_key(a.as_str()));
                if orphaned {
                    let _ = core.shared.journal.fire_due(now);
                }
            }
        });
        Ok(Runtime {
            core,
            supervisor,
            grace_driver,
            timer_driver,
        })
    }

    /// Connects a session for `agent`: pushes start with the next event. The agent's
    /// restart/disconnect grace period, if one runs, is cancelled.
    pub fn connect_agent(&self, agent: &str) -> Result<AgentSession, RuntimeError> {
        let (tx, rx) = mpsc::channel(self.core.shared.config.session_buffer.max(1));
        self.open_session(agent, PushTo::Buffer(tx), Some(rx))
    }

    /// Connects a session of an agent whose pushes are handed to `on_push` as the
    /// agent's actor sends them, in order, instead of buffered for
    /// [`AgentSession::next`] (which answers `None` for it): for an in-process client
    /// that handles each push at once, such as the simulator's agents on virtual
    /// time. `on_push` runs on the actor's task and must not block or wait; no lock of
    /// the runtime is held while it runs (it may open or drop sessions).
    pub fn connect_agent_with(
        &self,
        agent: &str,
        on_push: impl Fn(Push) + Send + Sync + 'static,
    ) -> Result<AgentSession, RuntimeError> {
        self.open_session(agent, PushTo::Call(Arc::new(on_push)), None)
    }

    fn open_session(
        &self,
        agent: &str,
        to: PushTo,
        rx: Option<mpsc::Receiver<Push>>,
    ) -> Result<AgentSession, RuntimeError> {
        let actor = self
            .core
            .agents
            .get(agent)
            .map(|r| r.clone())
            .ok_or_else(|| RuntimeError::UnknownAgent(agent.to_string()))?;
        let id = self.core.next_session.fetch_add(1, Ordering::Relaxed);
        let key: Arc<str> = Arc::from(agent);
        self.core
            .sessions
            .entry(key.clone())
            .or_default()
            .add(id, to);
        let _ = actor.cast(AgentMsg::SessionOpened);
        Ok(AgentSession {
            core: self.core.clone(),
            agent: key,
            id,
            rx,
            permits: Arc::new(Semaphore::new(
                self.core.shared.config.session_max_in_flight.max(1),
            )),
        })
    }

    /// Submits an interaction (no first message). Busy past the live-interaction limit
    /// or when its queue is full.
    pub async fn submit(&self, request: NewInteraction) -> Result<InteractionId, RuntimeError> {
        self.core.submit(request).await
    }

    /// An inbound customer message: joins the customer's open conversation (on any
    /// channel) within the switching window, continues a just-ended one with the same
    /// agent, goes to a virtual agent, or starts a new conversation.
    pub async fn inbound(&self, inbound: Inbound) -> Result<InboundOutcome, RuntimeError> {
        let core = &self.core;
        if inbound.customer.trim().is_empty() {
            return Err(RuntimeError::BadRequest(
                "`customer` is empty: every inbound message needs the customer's id or contact point".into(),
            ));
        }
        if inbound.text.len() > omniroute_engine::MAX_MESSAGE_BYTES {
            return Err(RuntimeError::BadRequest(format!(
                "`text` is {} bytes; the limit is {}",
                inbound.text.len(),
                omniroute_engine::MAX_MESSAGE_BYTES
            )));
        }
        if !core.shared.read(|e| e.has_channel(&inbound.channel)).0 {
            return Err(RuntimeError::BadRequest(format!(
                "unknown channel `{}` in an inbound message",
                inbound.channel
            )));
        }
        let now = core.shared.now_ms();
        let window = core.shared.config.switch_window_ms;
        let message = |text: &str| Message {
            from: Sender::Customer,
            from_id: None,
            channel: inbound.channel.clone(),
            text: text.to_string(),
            sent_ms: now,
        };
        // 0. A conversation named by the adapter: post into it.
        if let Some(interaction) = inbound.interaction {
            let (owner, _) = core
                .shared
                .read(|e| e.interaction_owner(interaction).map(|(c, _)| c));
            match owner {
                Ok(owner) if owner == inbound.customer => {
                    core.post(interaction, message(&inbound.text)).await?;
                    return Ok(InboundOutcome::Joined { interaction });
                }
                Ok(_) => {
                    return Err(RuntimeError::BadRequest(format!(
                        "interaction {interaction} is not customer `{}`'s conversation",
                        inbound.customer
                    )));
                }
                Err(e) => return Err(RuntimeError::Journal(JournalError::Engine(e))),
            }
        }
        // 1. A virtual agent is talking with this customer.
        if let Some(bot) = core.bots.get(&inbound.customer).map(|r| r.clone()) {
            let (channel, text) = (inbound.channel.clone(), inbound.text.clone());
            return core
                .call("the virtual agent", Some(bot), move |reply| BotMsg::Say {
                    channel,
                    text,
                    reply,
                })
                .await?;
        }
        // 2. An open conversation: join it, however long the customer was silent (an
        //    agent may be holding it; a second conversation would strand the reply).
        //    The newest first; one that finished meanwhile (the router has not heard
        //    yet) gives way to the next.
        let track = core
            .customers
            .get(inbound.customer.as_str())
            .map(|t| t.clone());
        for &live in track.iter().flat_map(|t| t.live.iter().rev()) {
            match core.post(live, message(&inbound.text)).await {
                Ok(()) => return Ok(InboundOutcome::Joined { interaction: live }),
                // Finished meanwhile: the next, or start anew below.
                Err(RuntimeError::Journal(JournalError::Engine(
                    EngineError::InvalidState { .. } | EngineError::UnknownInteraction(_),
                ))) => {}
                Err(e) => return Err(e),
            }
        }
        // 3. A conversation that just ended: continue it with the same agent.
        // (Only with no live conversation known: if every one above finished
        //    meanwhile, what the copy says of the last one is stale — start anew.)
        if let Some(t) = &track
            && t.live.is_empty()
            && let (Some(previous), Some(agent), Some(ended)) =
                (t.last, t.last_agent.clone(), t.ended_ms)
            && now.saturating_sub(ended) <= window
        {
            let mut request = NewInteraction::new(&inbound.channel, &inbound.customer);
            request.attributes = inbound.attributes.clone();
            request
                .attributes
                .insert("continues".to_string(), previous.0.to_string());
            request.queue = inbound.queue.clone();
            request.preferred_agent = Some(agent.to_string());
            request.preferred_fallback_ms = core.shared.config.return_to_agent_ms;
            let interaction = self.submit_with(request, message(&inbound.text)).await?;
            return Ok(InboundOutcome::Returning {
                interaction,
                previous,
                agent: agent.to_string(),
            });
        }
        // 4. A virtual agent first.
        if let Some(name) = &inbound.virtual_agent {
            let bot = core
                .virtual_agents
                .get(name)
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownVirtualAgent(name.clone()))?;
            let max = core.shared.config.max_live_interactions;
            let open =
                core.bots_open.fetch_add(1, Ordering::AcqRel) + core.live.load(Ordering::Acquire);
            if open >= max {
                core.bots_open.fetch_sub(1, Ordering::AcqRel);
                return Err(RuntimeError::Busy(format!(
                    "{open} conversations are open, the limit is {max}; try again later"
                )));
            }
            let state = BotState {
                core: core.clone(),
                bot,
                base: inbound.clone(),
                memory: BotMemory::default(),
                messages: Vec::new(),
                said: 0,
                released: false,
            };
            let (actor, _) =
                match Actor::spawn_linked(None, BotActor, state, core.supervisor()).await {
                    Ok(spawned) => spawned,
                    Err(e) => {
                        core.bots_open.fetch_sub(1, Ordering::AcqRel);
                        return Err(RuntimeError::Unavailable(format!("a virtual agent ({e})")));
                    }
                };
            // Two first messages racing: the first bot registered serves both.
            let actor = match core.bots.entry(inbound.customer.clone()) {
                dashmap::Entry::Occupied(existing) => {
                    actor.stop(None);
                    existing.get().clone()
                }
                dashmap::Entry::Vacant(slot) => {
                    core.identities
                        .insert(actor.get_id(), Identity::Bot(inbound.customer.clone()));
                    slot.insert(actor.clone());
                    actor
                }
            };
            let (channel, text) = (inbound.channel.clone(), inbound.text.clone());
            return core
                .call("the virtual agent", Some(actor), move |reply| BotMsg::Say {
                    channel,
                    text,
                    reply,
                })
                .await?;
        }
        // 5. A new conversation.
        let mut request = NewInteraction::new(&inbound.channel, &inbound.customer);
        request.attributes = inbound.attributes.clone();
        request.queue = inbound.queue.clone();
        let interaction = self.submit_with(request, message(&inbound.text)).await?;
        Ok(InboundOutcome::Created { interaction })
    }

    /// Creates an interaction with the customer's first message, in one logged
    /// operation (an agent cannot finish the work before the message is in it).
    async fn submit_with(
        &self,
        mut request: NewInteraction,
        first: Message,
    ) -> Result<InteractionId, RuntimeError> {
        request.messages = vec![first];
        self.core.submit(request).await
    }

    /// The customer left.
    pub async fn abandon(&self, interaction: InteractionId) -> Result<Ack, RuntimeError> {
        self.core.run(Command::Abandon { interaction }).await
    }

    /// Runs any logged operation (configuration, forced presence…); a submit goes
    /// through admission like [`Runtime::submit`].
    pub async fn execute(&self, command: Command) -> Result<Ack, RuntimeError> {
        if let Command::Submit { .. } = &command {
            self.core.admit()?;
            return match self.core.run(command).await {
                Ok(ack) => Ok(ack),
                Err(e) => {
                    let _ = self
                        .core
                        .live
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(1))
                        });
                    Err(e)
                }
            };
        }
        self.core.run(command).await
    }

    /// An agent's state from its actor.
    pub async fn agent_view(&self, agent: &str) -> Result<AgentView, RuntimeError> {
        let actor = self.core.agents.get(agent).map(|r| r.clone());
        if actor.is_none() && !self.agent_configured(agent) {
            return Err(RuntimeError::UnknownAgent(agent.to_string()));
        }
        self.core
            .call(&format!("agent `{agent}`"), actor, AgentMsg::View)
            .await
    }

    fn agent_configured(&self, agent: &str) -> bool {
        self.core.shared.read(|e| e.agent(agent).is_ok()).0
    }

    /// A queue's live statistics from its actor.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, RuntimeError> {
        self.core.flush_outcomes(queue);
        let actor = self.core.queues.get(queue).map(|r| r.clone());
        if actor.is_none() && !self.core.shared.read(|e| e.queue(queue, 0).is_ok()).0 {
            return Err(RuntimeError::UnknownQueue(queue.to_string()));
        }
        self.core
            .call(&format!("queue `{queue}`"), actor, QueueMsg::Stats)
            .await
    }

    /// A conversation: from its actor while live, else rebuilt from the engine (kept
    /// there for the journal's `retain_finished_ms` after it finished).
    pub async fn conversation(
        &self,
        interaction: InteractionId,
    ) -> Result<ConversationView, RuntimeError> {
        let actor = self.core.conversations.get(&interaction).map(|r| r.clone());
        if actor.is_some() {
            match self
                .core
                .call(&format!("conversation {interaction}"), actor, |reply| {
                    ConversationMsg::View { interaction, reply }
                })
                .await
            {
                Ok(Some(v)) => return Ok(v),
                // Finished meanwhile, its actor back in the pool.
                Ok(None) => {}
                Err(RuntimeError::Unavailable(_)) => {} // finished meanwhile
                Err(e) => return Err(e),
            }
        }
        let (snapshot, _) = self.core.shared.read(|e| e.interaction(interaction));
        let s = snapshot.map_err(|e| RuntimeError::Journal(e.into()))?;
        Ok(view_from_snapshot(s))
    }

    /// Every conversation of a customer the engine still holds, oldest first.
    pub fn customer_history(&self, customer: &str) -> Vec<ConversationView> {
        // The customer's own index, not a scan of every interaction (an id the engine
        // purged since housekeeping last ran is skipped).
        let ids = self.indexed_history(customer);
        if ids.is_empty() {
            return Vec::new();
        }
        let (mut found, _) = self.core.shared.read(|e| {
            ids.iter()
                .filter_map(|id| e.interaction(*id).ok())
                .filter(|s| s.customer == customer)
                .collect::<Vec<_>>()
        });
        found.sort_by_key(|s| s.id);
        found.into_iter().map(view_from_snapshot).collect()
    }

    /// The ordered stream of routing events (bounded; a subscriber that falls behind
    /// is told how many records it missed).
    pub fn subscribe(&self) -> Subscription {
        self.core.bus.subscribe()
    }

    /// The interactions the runtime's history index lists for `customer` (what
    /// `customer_history` looks up; entries of purged work go at housekeeping).
    pub fn indexed_history(&self, customer: &str) -> Vec<InteractionId> {
        self.core
            .histories
            .by_customer
            .get(customer)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Customers the runtime keeps switching state for: those with live work and
    /// those whose work ended within the switching window (housekeeping, every 10 s,
    /// forgets the rest).
    pub fn tracked_customers(&self) -> usize {
        self.core.customers.len()
    }

    /// Live interactions (admitted, not yet completed or abandoned).
    pub fn live_interactions(&self) -> usize {
        self.core.live.load(Ordering::Acquire)
    }

    /// Conversation actors serving a live interaction.
    pub fn conversation_actors(&self) -> usize {
        self.core.conversations.len()
    }

    /// Conversation actors idle in the pool, each waiting to serve a next new
    /// interaction (at most [`RuntimeConfig::idle_conversation_actors`]).
    pub fn idle_conversation_actors(&self) -> usize {
        self.core.idle_conversations.lock().len()
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.core.shared.clock
    }

    /// Reads the engine.
    pub fn read<R>(&self, f: impl FnOnce(&omniroute_engine::Engine) -> R) -> R {
        self.core.shared.read(f).0
    }

    /// Fault injection: makes an actor panic, to drill supervision. Returns whether
    /// the actor was running.
    pub fn inject_panic(&self, key: &ActorKey) -> bool {
        match key {
            ActorKey::Agent(a) => self
                .core
                .agents
                .get(a.as_str())
                .is_some_and(|r| r.cast(AgentMsg::Crash).is_ok()),
            ActorKey::Queue(q) => self
                .core
                .queues
                .get(q.as_str())
                .is_some_and(|r| r.cast(QueueMsg::Crash).is_ok()),
            ActorKey::Conversation(i) => self
                .core
                .conversations
                .get(i)
                .is_some_and(|r| r.cast(ConversationMsg::Crash(*i)).is_ok()),
        }
    }

    /// Stops every actor.
    pub fn shutdown(&self) {
        self.core.stopping.store(true, Ordering::Release);
        self.grace_driver.abort();
        self.timer_driver.0.abort();
        self.supervisor.stop_children(None);
        self.supervisor.stop(None);
    }
}

/// A task stopped when this is dropped (also when `Runtime::start` fails half-way).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn view_from_snapshot(s: omniroute_engine::InteractionSnapshot) -> ConversationView {
    let mut participants = std::collections::BTreeSet::from(["customer".to_string()]);
    let mut channels = vec![s.channel.clone()];
    let mut entries = Vec::new();
    for h in &s.history {
        if let omniroute_engine::HistoryEntry::Accepted { agent, .. } = h {
            participants.insert(format!("agent:{agent}"));
        }
        if let Some(e) = transcript::from_history(h) {
            match (e.from, &e.from_id) {
                (Sender::Agent, Some(a)) => {
                    participants.insert(format!("agent:{a}"));
                }
                (Sender::VirtualAgent, Some(a)) => {
                    participants.insert(format!("virtual_agent:{a}"));
                }
                (Sender::Customer, _) if !channels.contains(&e.channel) => {
                    channels.push(e.channel.clone())
                }
                _ => {}
            }
            entries.push(e);
        }
    }
    ConversationView {
        interaction: s.id,
        customer: s.customer,
        channel: s.channel,
        queue: s.queue,
        attributes: s.attributes,
        state: s.state,
        agent: s.agent,
        participants,
        channels,
        transcript: entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_index_forgets_all_purged_work_past_one_batch_and_keeps_the_rest() {
        let h = Histories::default();
        let n = 3 * Histories::BATCH as u64 + 10;
        let customer = |i: u64| -> Arc<str> { Arc::from(format!("c{}", i % 7).as_str()) };
        for i in 0..n {
            h.add(&customer(i), InteractionId(i));
            h.finished.lock().push_back((InteractionId(i), customer(i)));
        }
        // The engine still holds long wrap-ups near the front (5, 7, 100, 4,200) and
        // everything from 2 * BATCH on.
        let held = |id: InteractionId| {
            [5, 7, 100, 4_200].contains(&id.0) || id.0 >= 2 * Histories::BATCH as u64
        };
        let looked = std::sync::atomic::AtomicUsize::new(0);
        h.forget_purged(|ids| {
            looked.fetch_add(ids.len(), Ordering::Relaxed);
            ids.iter().map(|id| !held(*id)).collect()
        });
        let left: Vec<u64> = h.finished.lock().iter().map(|(id, _)| id.0).collect();
        let expected: Vec<u64> = (0..n).filter(|i| held(InteractionId(*i))).collect();
        assert_eq!(left, expected, "held entries stay, in order");
        let indexed: usize = h.by_customer.iter().map(|e| e.value().len()).sum();
        assert_eq!(indexed, expected.len());
        assert!(h.by_customer.get("c5").unwrap().contains(&InteractionId(5)));
        // It stopped at the first batch with nothing to forget.
        assert!(looked.load(Ordering::Relaxed) <= 3 * Histories::BATCH + 1);
        // Once the engine lets go of everything, so does the index.
        h.forget_purged(|ids| vec![true; ids.len()]);
        assert!(h.finished.lock().is_empty());
        assert!(h.by_customer.is_empty());
    }
}
