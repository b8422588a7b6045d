//! A simulated agent, the same in both modes: it logs in for its shift, reads its
//! pushes, answers each offer as its group's plan says (accept after a delay, or
//! reject; talk for the handle time; complete; end wrap-up early when the plan says
//! so), comes back when the engine sets it away after missed offers, logs out at the
//! shift's end, and records all of it. Only the session differs between the modes —
//! the runtime's in-process session on virtual time, a QUIC client in connect mode —
//! behind [`Desk`].

use crate::report::{Records, Violation};
use crate::scenario::{AgentGroup, OfferPlan, QueueSpec, Scenario};
use omniroute_transport::actors::engine::{InteractionId, Presence, SeededRng};
use omniroute_transport::actors::{OfferPush, Push};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a run's tasks share.
pub struct Shared {
    /// Everything recorded so far.
    pub records: Mutex<Records>,
    /// Agents whose shift is not over yet (or has not begun) and answers in progress,
    /// in connect mode (each agent's own task): none left, nothing more will happen to
    /// work still waiting.
    pub working: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Shared records, no one working yet.
    pub fn new(records: Records) -> Self {
        Shared {
            records: Mutex::new(records),
            working: Default::default(),
        }
    }
}

/// One of [`Shared::working`] while it lives.
pub struct Working(Arc<Shared>);

impl Working {
    /// Counts one more working until dropped.
    pub fn new(shared: &Arc<Shared>) -> Self {
        shared
            .working
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Working(shared.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0
            .working
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The five things an agent does with its session; errors are the refusal's text.
pub trait Desk: Send + Sync + 'static {
    /// Makes the agent available (`true`: log in, or back from away) or offline.
    fn available(&self, on: bool) -> impl Future<Output = Result<(), String>> + Send;
    /// Accepts an offer.
    fn accept(&self, interaction: InteractionId)
    -> impl Future<Output = Result<(), String>> + Send;
    /// Rejects an offer.
    fn reject(&self, interaction: InteractionId)
    -> impl Future<Output = Result<(), String>> + Send;
    /// Completes work (no wrap-up code).
    fn complete(
        &self,
        interaction: InteractionId,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Ends wrap-up early. Refused because the queue's wrap-up time ran out just
    /// before is `Ok` (the race a real agent has too).
    fn end_wrap_up(
        &self,
        interaction: InteractionId,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// An agent's stream of pushes (bounded from the runtime, unbounded from a client).
pub trait Pushes: Send + 'static {
    /// The next push; `None` once the session is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Push>> + Send;
}

impl Pushes for mpsc::Receiver<Push> {
    fn recv(&mut self) -> impl Future<Output = Option<Push>> + Send {
        mpsc::Receiver::recv(self)
    }
}

impl Pushes for mpsc::UnboundedReceiver<Push> {
    fn recv(&mut self) -> impl Future<Output = Option<Push>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
}

/// How an offer is matched with this run's record of its interaction.
#[derive(Clone, Debug)]
pub enum OfferRecords {
    /// By the interaction's id, once its submit returned (virtual time: every offer is
    /// this run's work).
    ById,
    /// By the customer's name, `<prefix><n>` being record `n` (connect mode: offers of
    /// anyone else's customers are left alone). The first offer of work that arrived
    /// while an eligible agent was free times routing: due time → this offer.
    ByCustomer {
        /// This run's customer-name prefix.
        prefix: String,
    },
}

/// One simulated agent.
pub struct SimAgent {
    /// Index among the scenario's agents (the watch's and the records').
    pub index: usize,
    /// Its group's index and definition.
    pub group_index: usize,
    /// Its group.
    pub group: AgentGroup,
    /// Agent id.
    pub id: Arc<str>,
    /// The scenario's queues (each offer's plan depends on its queue).
    pub queues: Arc<Vec<QueueSpec>>,
    /// Its own draws.
    pub rng: SeededRng,
    /// When the run's clock started (tokio's clock: virtual or real).
    pub start: Instant,
    /// How offers find their records.
    pub offers: OfferRecords,
}

/// The scenario's agents in order, each with its own seed drawn from `rng`.
pub fn roster(
    scenario: &Scenario,
    rng: &mut SeededRng,
    start: Instant,
    offers: OfferRecords,
) -> Vec<SimAgent> {
    let queues = Arc::new(scenario.queues.clone());
    scenario
        .agents()
        .into_iter()
        .enumerate()
        .map(|(index, (group_index, def))| SimAgent {
            index,
            group_index,
            group: scenario.agent_groups[group_index].clone(),
            id: Arc::from(def.id),
            queues: queues.clone(),
            rng: SeededRng::new(rng.next_u64()),
            start,
            offers: offers.clone(),
        })
        .collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Milliseconds of the run's clock since `start`.
fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

impl SimAgent {
    fn now_ms(&self) -> u64 {
        ms_since(self.start)
    }

    /// Works the shift: until the push stream ends. `on_shift` (counted before the
    /// task started) is let go when the shift ends: the agent takes no more work.
    pub async fn run<D: Desk>(
        mut self,
        desk: Arc<D>,
        mut pushes: impl Pushes,
        shared: Arc<Shared>,
        on_shift: Working,
    ) {
        let mut on_shift = Some(on_shift);
        tokio::time::sleep_until(self.start + secs(self.group.shift_start_s)).await;
        if desk.available(true).await.is_err() {
            return;
        }
        let (index, group_index) = (self.index, self.group_index);
        shared
            .records
            .lock()
            .unwrap()
            .shift(index, group_index, self.now_ms(), true);
        let shift_end = self.group.shift_end_s.map(|e| self.start + secs(e));
        let mut logged_out = false;
        loop {
            let push = match shift_end.filter(|_| !logged_out) {
                Some(at) => tokio::select! {
                    p = pushes.recv() => p,
                    _ = tokio::time::sleep_until(at) => {
                        logged_out = true;
                        let _ = desk.available(false).await;
                        shared.records.lock().unwrap().shift(index, group_index, self.now_ms(), false);
                        drop(on_shift.take());
                        continue;
                    }
                },
                None => pushes.recv().await,
            };
            let Some(push) = push else { return };
            match self.react(push, &desk, &shared, logged_out, self.now_ms()) {
                Reaction::Answer(answer, plan) => {
                    let working = Working::new(&shared);
                    tokio::spawn(async move {
                        answer.run(plan).await;
                        drop(working);
                    });
                }
                Reaction::Back => {
                    let _ = desk.available(true).await;
                }
                Reaction::Nothing => {}
            }
        }
    }

    /// Records a push read at `now_ms` and says what the agent does about it.
    pub fn react<D: Desk>(
        &mut self,
        push: Push,
        desk: &Arc<D>,
        shared: &Arc<Shared>,
        logged_out: bool,
        now_ms: u64,
    ) -> Reaction<D> {
        let mut r = shared.records.lock().unwrap();
        r.push_seen(self.index, &push, now_ms);
        match push {
            Push::Offer(offer) => {
                let Some(record) = self.locate(&mut r, &offer) else {
                    return Reaction::Nothing; // not this run's customer
                };
                let queue = self.queues.iter().find(|q| q.id == offer.queue);
                let plan = self.group.plan(queue, &mut self.rng);
                Reaction::Answer(
                    Answer {
                        desk: desk.clone(),
                        shared: shared.clone(),
                        agent: self.id.clone(),
                        index: self.index,
                        start: self.start,
                        interaction: offer.interaction,
                        auto_accepted: offer.auto_accepted,
                        record,
                    },
                    plan,
                )
            }
            Push::Presence {
                presence: Presence::Away { .. },
            } if !logged_out => {
                r.set_away += 1;
                Reaction::Back
            }
            _ => Reaction::Nothing,
        }
    }

    /// Where an offer's interaction is recorded: `Some(Found)` to answer it, `None`
    /// to leave it alone.
    fn locate(&self, r: &mut Records, offer: &OfferPush) -> Option<Found> {
        match &self.offers {
            OfferRecords::ById => Some(Found::Later),
            OfferRecords::ByCustomer { prefix } => {
                let i = offer
                    .customer
                    .strip_prefix(prefix.as_str())
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|n| *n < r.interactions.len())?;
                if offer.offer_seq <= 1 && r.interactions[i].found_free {
                    let arrived = r.interactions[i].arrived_us;
                    let now_us = self.start.elapsed().as_micros() as u64;
                    r.routing_us(now_us.saturating_sub(arrived));
                }
                Some(Found::At(i))
            }
        }
    }
}

/// What an agent does about a push.
pub enum Reaction<D> {
    /// Answers an offer as planned.
    Answer(Answer<D>, OfferPlan),
    /// Comes back (available) after the engine set it away for missed offers.
    Back,
    /// Nothing.
    Nothing,
}

/// An offer's record.
#[derive(Clone, Copy, Debug)]
pub enum Found {
    /// Record `n`.
    At(usize),
    /// Looked up by the interaction's id once accepted (its submit's reply may come
    /// after the offer).
    Later,
}

/// One offer being answered, then worked: [`Answer::run`] as a task of its own, or
/// step by step ([`Answer::take`], [`Answer::complete`], [`Answer::ready`]) by a
/// driver that keeps the time between them.
pub struct Answer<D> {
    desk: Arc<D>,
    shared: Arc<Shared>,
    agent: Arc<str>,
    index: usize,
    start: Instant,
    interaction: InteractionId,
    auto_accepted: bool,
    record: Found,
}

impl<D: Desk> Answer<D> {
    fn violate(&self, kind: &str, detail: String) {
        self.shared.records.lock().unwrap().violate(Violation {
            kind: kind.into(),
            interaction: self.interaction.0,
            agent: self.agent.to_string(),
            at_ms: ms_since(self.start),
            detail,
        });
    }

    /// How long the agent waits before answering (none for auto-accepted work).
    pub fn delay(&self, plan: &OfferPlan) -> Duration {
        if self.auto_accepted || plan.delay_s <= 0.0 {
            Duration::ZERO
        } else {
            secs(plan.delay_s)
        }
    }

    async fn run(self, plan: OfferPlan) {
        let delay = self.delay(&plan);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let Some(record) = self.take(&plan).await else {
            return;
        };
        tokio::time::sleep(secs(plan.handle_s)).await;
        if !self.complete(record).await {
            return;
        }
        let Some(ready) = plan.ready_after_s else {
            return;
        };
        tokio::time::sleep(secs(ready)).await;
        self.ready().await;
    }

    /// Once the plan's delay passed: accepts (or rejects) the offer. `Some(record)`
    /// when the work is the agent's now (talk for the plan's handle time, then
    /// [`Answer::complete`]); `None` when rejected, or when the offer was gone.
    pub async fn take(&self, plan: &OfferPlan) -> Option<Option<usize>> {
        let interaction = self.interaction;
        // Auto-accepted (the channel's setting): the work is the agent's already,
        // nothing to answer.
        if !self.auto_accepted {
            if plan.reject {
                if self.desk.reject(interaction).await.is_ok() {
                    self.shared.records.lock().unwrap().rejected += 1;
                }
                return None;
            }
            if self.desk.accept(interaction).await.is_err() {
                // Timed out, withdrawn or the customer left meanwhile.
                return None;
            }
        }
        let at = ms_since(self.start);
        let record = {
            let mut r = self.shared.records.lock().unwrap();
            let record = match self.record {
                Found::At(i) => Some(i),
                Found::Later => r.index_of(interaction.0),
            };
            if let Some(i) = record {
                r.answered(i, at, &self.agent, self.index);
            }
            record
        };
        if record.is_none() {
            self.violate(
                "unknown_interaction",
                "accepted an interaction the simulator did not submit".into(),
            );
        }
        Some(record)
    }

    /// Completes the work: `true` if it was (wrap-up follows, ended early by
    /// [`Answer::ready`] if the plan says so).
    pub async fn complete(&self, record: Option<usize>) -> bool {
        match self.desk.complete(self.interaction).await {
            Ok(()) => {
                if let Some(i) = record {
                    let at = ms_since(self.start);
                    self.shared.records.lock().unwrap().completed(i, at);
                }
                true
            }
            Err(e) => {
                self.violate("complete_refused", e);
                false
            }
        }
    }

    /// Ends the wrap-up early.
    pub async fn ready(&self) {
        if let Err(e) = self.desk.end_wrap_up(self.interaction).await {
            self.violate("end_wrap_up_refused", e);
        }
    }
}
