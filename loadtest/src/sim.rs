//! Virtual-time mode: the real engine and actor runtime in-process on a paused tokio
//! clock. Customers arrive (Poisson, or a rate per interval), agents log in for their
//! shifts, accept (or reject) offers after a delay, talk for a handle time and complete;
//! customers abandon when their patience runs out. Everything the simulator sees is
//! recorded and checked: no agent above capacity, no interaction assigned twice, no
//! offer to an ineligible agent, every interaction accounted for (and the engine's own
//! invariants, work conservation included, checked every 30 simulated minutes and at
//! the end).
//!
//! Same scenario, same seed → the same run: one thread, a paused clock, seeded draws.

use crate::agent::{self, Answer, Desk, OfferRecords, Reaction, Shared, SimAgent};
use crate::report::{Record, Records, Report, Violation};
use crate::scenario::OfferPlan;
use crate::scenario::Scenario;
use omniroute_transport::actors::center::Clock;
use omniroute_transport::actors::engine::journal::{
    Command, DiscardStore, Journal, JournalConfig, JournalError,
};
use omniroute_transport::actors::engine::{
    EngineError, InteractionId, NewInteraction, Presence, SeededRng,
};
use omniroute_transport::actors::{AgentSession, Push, Runtime, RuntimeConfig, RuntimeError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The runtime's in-process session is a simulated agent's desk on virtual time.
impl Desk for AgentSession {
    async fn available(&self, on: bool) -> Result<(), String> {
        let presence = if on {
            Presence::Available
        } else {
            Presence::Offline
        };
        self.set_presence(presence)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn accept(&self, interaction: InteractionId) -> Result<(), String> {
        AgentSession::accept(self, interaction)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn reject(&self, interaction: InteractionId) -> Result<(), String> {
        AgentSession::reject(self, interaction)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn complete(&self, interaction: InteractionId) -> Result<(), String> {
        AgentSession::complete(self, interaction, None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn end_wrap_up(&self, interaction: InteractionId) -> Result<(), String> {
        match AgentSession::end_wrap_up(self, interaction).await {
            Ok(_)
            | Err(RuntimeError::Journal(JournalError::Engine(EngineError::InvalidState {
                ..
            }))) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a simulated agent does next.
enum Act {
    /// Its shift starts: it connects and makes itself available.
    LogIn(usize),
    /// Its shift ends: it goes offline.
    LogOut(usize),
    /// Back from away (set away for missed offers).
    Back(usize),
    /// Answers an offer (its delay passed).
    Take(Answer<AgentSession>, OfferPlan),
    /// Completes the work (its handle time passed).
    Complete(Answer<AgentSession>, OfferPlan, Option<usize>),
    /// Ends its wrap-up early.
    Ready(Answer<AgentSession>),
}

/// An act and when (since the run's start), in the order acts were planned among
/// those due at once.
struct Due {
    at: Duration,
    seq: u64,
    /// Boxed: the heap moves its entries as it reorders them.
    act: Box<Act>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The simulated agents and what each does next, soonest first.
#[derive(Default)]
struct Agenda {
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
    agents: Vec<SimAgent>,
    /// Each agent's session once its shift started.
    desks: Vec<Option<Arc<AgentSession>>>,
    logged_out: Vec<bool>,
    /// An act taken off the agenda is running (it may plan more).
    acting: bool,
}

/// Every simulated agent on virtual time, driven by one task from one agenda: an
/// agent's pushes are handled as its actor sends them (the session's `on_push`), and
/// what the agent does after a delay (answer, complete, end wrap-up, come back) waits
/// in the agenda — not a task per agent sleeping on its push stream and a task per
/// offer sleeping through its handle time. The same agent, the same records
/// (`crate::agent`): only who keeps the time differs from connect mode.
struct Desks {
    agenda: Mutex<Agenda>,
    /// Wakes the driver when an act is planned sooner than what it sleeps for.
    earlier: Notify,
    start: Instant,
    shared: Arc<Shared>,
}

impl Desks {
    fn schedule(&self, agenda: &mut Agenda, at: Duration, act: Act) {
        agenda.seq += 1;
        let earliest = agenda.due.peek().is_none_or(|Reverse(d)| at < d.at);
        agenda.due.push(Reverse(Due {
            at,
            seq: agenda.seq,
            act: Box::new(act),
        }));
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// A push for agent `i`, on its actor's task.
    fn on_push(&self, i: usize, push: Push) {
        // (Poisoned: the driver failed, which the run reports; the push is moot.)
        let Ok(mut guard) = self.agenda.lock() else {
            return;
        };
        let agenda = &mut *guard;
        // Set when the session was connected, before any push could come.
        let Some(desk) = agenda.desks[i].clone() else {
            return;
        };
        // One reading of the clock for the push and what it leads to (the run's clock
        // is tokio's paused one: a lock each time it is read).
        let now = self.start.elapsed();
        let now_ms = now.as_millis() as u64;
        let reaction =
            agenda.agents[i].react(push, &desk, &self.shared, agenda.logged_out[i], now_ms);
        match reaction {
            Reaction::Answer(answer, plan) => {
                let at = now + answer.delay(&plan);
                self.schedule(agenda, at, Act::Take(answer, plan));
            }
            Reaction::Back => self.schedule(agenda, now, Act::Back(i)),
            Reaction::Nothing => {}
        }
    }

    /// Runs the agenda: each act when it is due, in order.
    async fn drive(self: Arc<Self>, runtime: Arc<Runtime>) {
        loop {
            let next = self
                .agenda
                .lock()
                .unwrap()
                .due
                .peek()
                .map(|Reverse(d)| d.at);
            match next {
                Some(at) if at <= self.start.elapsed() => {}
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(self.start + at) => {}
                        _ = self.earlier.notified() => {}
                    }
                    continue;
                }
                None => {
                    self.earlier.notified().await;
                    continue;
                }
            }
            let Some(Reverse(due)) = ({
                let mut agenda = self.agenda.lock().unwrap();
                let due = agenda.due.pop();
                agenda.acting = due.is_some();
                due
            }) else {
                continue;
            };
            self.act(*due.act, &runtime).await;
            self.agenda.lock().unwrap().acting = false;
        }
    }

    /// Every agent's shift is over and none has anything left to do (or doing).
    fn gone_for_good(&self) -> bool {
        let agenda = self.agenda.lock().unwrap();
        agenda.logged_out.iter().all(|out| *out) && agenda.due.is_empty() && !agenda.acting
    }

    /// Plans `act` at `at` (since the run's start).
    fn plan(&self, at: Duration, act: Act) {
        let mut agenda = self.agenda.lock().unwrap();
        self.schedule(&mut agenda, at, act);
    }

    /// Plans `act` `after` seconds from now.
    fn later(&self, after: f64, act: Act) {
        self.plan(self.start.elapsed() + Duration::from_secs_f64(after), act);
    }

    /// Records agent `i`'s shift starting (`on`) or ending now.
    fn shift(&self, i: usize, group_index: usize, on: bool) {
        let now_ms = self.start.elapsed().as_millis() as u64;
        self.shared
            .records
            .lock()
            .unwrap()
            .shift(i, group_index, now_ms, on);
    }

    async fn act(self: &Arc<Self>, act: Act, runtime: &Runtime) {
        match act {
            Act::LogIn(i) => {
                let (id, group_index, shift_end) = {
                    let agenda = self.agenda.lock().unwrap();
                    let a = &agenda.agents[i];
                    (a.id.clone(), a.group_index, a.group.shift_end_s)
                };
                // The session must not keep the agenda alive (it holds the runtime).
                let me: Weak<Desks> = Arc::downgrade(self);
                let connected = runtime.connect_agent_with(&id, move |push| {
                    if let Some(me) = me.upgrade() {
                        me.on_push(i, push);
                    }
                });
                let Ok(session) = connected else {
                    return;
                };
                let desk = Arc::new(session);
                self.agenda.lock().unwrap().desks[i] = Some(desk.clone());
                if desk.available(true).await.is_err() {
                    return;
                }
                self.shift(i, group_index, true);
                if let Some(end) = shift_end {
                    self.plan(Duration::from_secs_f64(end), Act::LogOut(i));
                }
            }
            Act::LogOut(i) => {
                let (desk, group_index) = {
                    let mut agenda = self.agenda.lock().unwrap();
                    agenda.logged_out[i] = true;
                    (agenda.desks[i].clone(), agenda.agents[i].group_index)
                };
                if let Some(desk) = desk {
                    let _ = desk.available(false).await;
                }
                self.shift(i, group_index, false);
            }
            Act::Back(i) => {
                let desk = {
                    let agenda = self.agenda.lock().unwrap();
                    agenda.desks[i].clone().filter(|_| !agenda.logged_out[i])
                };
                if let Some(desk) = desk {
                    let _ = desk.available(true).await;
                }
            }
            Act::Take(answer, plan) => {
                if let Some(record) = answer.take(&plan).await {
                    let handle_s = plan.handle_s;
                    self.later(handle_s, Act::Complete(answer, plan, record));
                }
            }
            Act::Complete(answer, plan, record) => {
                if answer.complete(record).await
                    && let Some(ready) = plan.ready_after_s
                {
                    self.later(ready, Act::Ready(answer));
                }
            }
            Act::Ready(answer) => answer.ready().await,
        }
    }
}

/// Where simulated time starts (2026-01-01T00:00:00Z, Unix ms).
pub const BASE_MS: u64 = 1_767_225_600_000;

/// Runs a scenario on virtual time. `progress` is called about every simulated
/// minute with (simulated seconds, records so far).
pub fn run(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(f64, &Records),
) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(simulate(scenario, seed, progress))
}

async fn simulate(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(f64, &Records),
) -> Result<Report, String> {
    let wall = std::time::Instant::now();
    let center = scenario.center()?;
    let (journal, _) = Journal::open(
        // Every record is encoded as a server's would be, then dropped: a simulated
        // run is never recovered, and a day's log would only fill memory.
        Arc::new(DiscardStore::new()),
        Some(center),
        JournalConfig::simulated(),
        BASE_MS,
    )
    .map_err(|e| e.to_string())?;
    let runtime = Arc::new(
        Runtime::start(
            journal,
            Clock::starting_at(BASE_MS),
            RuntimeConfig {
                max_live_interactions: usize::MAX / 2,
                session_buffer: 1 << 20,
                // Customers are new each time: no channel switching between them.
                switch_window_ms: 0,
                return_to_agent_ms: 0,
                ..RuntimeConfig::default()
            },
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    let start = Instant::now();
    let shared = Arc::new(Shared::new({
        let mut r = Records::new(scenario);
        r.setup_wall = wall.elapsed();
        r
    }));
    let mut rng = SeededRng::new(seed);
    let end = Duration::from_secs_f64(scenario.duration_s);

    // Agents: every one works its shift (see `crate::agent`), all driven from one
    // agenda (see `Desks`).
    let desks = Arc::new(Desks {
        agenda: Mutex::new(Agenda::default()),
        earlier: Notify::new(),
        start,
        shared: shared.clone(),
    });
    {
        let mut agenda = desks.agenda.lock().unwrap();
        for agent in agent::roster(scenario, &mut rng, start, OfferRecords::ById) {
            let at = Duration::from_secs_f64(agent.group.shift_start_s);
            let i = agenda.agents.len();
            agenda.agents.push(agent);
            agenda.desks.push(None);
            agenda.logged_out.push(false);
            desks.schedule(&mut agenda, at, Act::LogIn(i));
        }
    }
    let agents = tokio::spawn(desks.clone().drive(runtime.clone()));

    // Arrivals: one task for every stream, Poisson by thinning (exact for a rate per
    // interval), open loop.
    let mut customer = 0u64;
    let plan = scenario.arrival_plan(&mut rng);
    let patience: Vec<Option<f64>> = plan
        .iter()
        .map(|(_, _, qi)| {
            scenario.queues[*qi]
                .patience
                .as_ref()
                .map(|d| d.sample(&mut rng))
        })
        .collect();
    shared.records.lock().unwrap().expect(plan.len());
    let all_in = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let arrivals = {
        let (runtime, shared) = (runtime.clone(), shared.clone());
        let scenario = scenario.clone();
        let channel_names: Vec<String> = scenario
            .channel_defs()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let all_in = all_in.clone();
        tokio::spawn(async move {
            // Customers' patience: (deadline, record, interaction), soonest first; the
            // same task serves arrivals and abandons in time order (one timer, no task
            // per customer).
            let mut waits: BinaryHeap<Reverse<(Duration, usize, InteractionId)>> =
                BinaryHeap::new();
            let mut plan = plan.into_iter().zip(patience).peekable();
            loop {
                // Customers answered already will not leave: their patience is dropped
                // now, not waited for (the same outcome, one wake less each).
                {
                    let r = shared.records.lock().unwrap();
                    while waits.peek().is_some_and(|Reverse((_, idx, _))| {
                        r.interactions[*idx].answered_ms.is_some()
                    }) {
                        waits.pop();
                    }
                }
                let next_arrival = plan
                    .peek()
                    .map(|((t, _, _), _)| Duration::from_secs_f64(*t));
                let next_leave = waits.peek().map(|Reverse((d, _, _))| *d);
                if next_arrival.is_none() {
                    all_in.store(true, std::sync::atomic::Ordering::Release);
                }
                let leave = match (next_arrival, next_leave) {
                    (None, None) => break,
                    (Some(a), Some(l)) => l <= a,
                    (None, Some(_)) => true,
                    (Some(_), None) => false,
                };
                if leave {
                    let Some(Reverse((due, idx, id))) = waits.pop() else {
                        break;
                    };
                    tokio::time::sleep_until(start + due).await;
                    let answered = shared.records.lock().unwrap().interactions[idx]
                        .answered_ms
                        .is_some();
                    if answered {
                        continue;
                    }
                    match runtime.abandon(id).await {
                        Ok(_) => {
                            let at = start.elapsed().as_millis() as u64;
                            shared.records.lock().unwrap().abandoned(idx, at);
                        }
                        // Accepted at this very moment: it is answered.
                        Err(RuntimeError::Journal(_)) => {}
                        Err(e) => {
                            let mut r = shared.records.lock().unwrap();
                            let at = start.elapsed().as_millis() as u64;
                            r.violate(Violation {
                                kind: "abandon_refused".into(),
                                interaction: id.0,
                                agent: String::new(),
                                at_ms: at,
                                detail: e.to_string(),
                            });
                        }
                    }
                    continue;
                }
                let Some(((t, si, qi), patience)) = plan.next() else {
                    break;
                };
                tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
                let stream = &scenario.arrivals[si];
                let channel_index =
                    |name: &str| channel_names.iter().position(|c| c == name).unwrap_or(0);
                let n = customer;
                customer += 1;
                let request = NewInteraction::new(&stream.channel, &format!("c-{n}"))
                    .to_queue(&scenario.queues[qi].id);
                let at = start.elapsed().as_millis() as u64;
                let began = std::time::Instant::now();
                let submitted = runtime.submit(request).await;
                let routing_us = began.elapsed().as_micros() as u64;
                let now = start.elapsed();
                let mut r = shared.records.lock().unwrap();
                r.routing_us(routing_us);
                let mut record = Record::new(qi, at);
                record.channel = channel_index(&stream.channel);
                let idx = r.arrive(record);
                match submitted {
                    Ok(id) => {
                        r.submitted(idx, id.0, now.as_millis() as u64);
                        if let Some(p) = patience {
                            waits.push(Reverse((now + Duration::from_secs_f64(p), idx, id)));
                        }
                    }
                    Err(e) => r.refused(idx, e.to_string()),
                }
                drop(r);
            }
        })
    };

    // Let it run: work conservation checked every 5 simulated seconds (from the
    // simulator's own view), progress and a sample every simulated minute, the engine's
    // own invariants every 30 minutes; until the arrivals are over and every
    // interaction is finished, nothing more can happen to what is left, or a day passed.
    let limit = end + Duration::from_secs(24 * 3_600);
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if agents.is_finished() {
            break; // the agents' driver failed: reported below
        }
        let elapsed = start.elapsed();
        let now_ms = BASE_MS + elapsed.as_millis() as u64;
        ticks += 1;
        shared
            .records
            .lock()
            .unwrap()
            .check_conservation(elapsed.as_millis() as u64);
        if !ticks.is_multiple_of(12) {
            continue;
        }
        // Every simulated minute, finished interactions the simulator no longer needs
        // leave the engine (a logged operation, as the server's retention does at
        // snapshots): the engine stays the size of the live work, and runs faster for
        // it (every 30 minutes what was older than 10 cost ≈ 10 % of a 1,000-agent
        // day: docs/BENCHMARKS.md).
        let _ = runtime
            .execute(Command::PurgeFinished {
                finished_before_ms: now_ms.saturating_sub(60_000),
            })
            .await;
        // The engine's own invariants (work conservation among them): it walks every
        // interaction the engine holds, so every 30 simulated minutes.
        let broken = if ticks.is_multiple_of(12 * 30) {
            runtime.read(|e| e.check_invariants(now_ms))
        } else {
            Vec::new()
        };
        {
            let mut r = shared.records.lock().unwrap();
            for b in broken {
                r.violate(crate::report::engine_violation(
                    b,
                    elapsed.as_millis() as u64,
                ));
            }
            r.sample(elapsed.as_millis() as u64, runtime.live_interactions());
            progress(elapsed.as_secs_f64(), &r);
        }
        let open = shared.records.lock().unwrap().open();
        let over = elapsed >= end && all_in.load(std::sync::atomic::Ordering::Acquire);
        // Work left with every agent gone for good and no customer left to give up:
        // nothing more can happen to it (it is reported as still waiting), so the run
        // ends here rather than at the limit (a simulated day of samples for nothing,
        // and a day more in the run's clock, which throughput is reckoned over).
        let stuck = over && arrivals.is_finished() && desks.gone_for_good();
        if (over && open == 0) || stuck || elapsed >= limit {
            break;
        }
    }
    // Patience left for customers already answered: nothing to wait for.
    arrivals.abort();
    let agents_failed = agents.is_finished();
    agents.abort();
    let finished_ms = start.elapsed().as_millis() as u64;
    if agents_failed {
        let detail = match agents.await {
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("the simulated agents' driver panicked: {what}")
            }
            _ => "the simulated agents' driver stopped".to_string(),
        };
        shared.records.lock().unwrap().violate(Violation {
            kind: "simulator_failed".into(),
            interaction: 0,
            agent: String::new(),
            at_ms: finished_ms,
            detail,
        });
    }
    {
        let now_ms = BASE_MS + finished_ms;
        let broken = runtime.read(|e| e.check_invariants(now_ms));
        let mut r = shared.records.lock().unwrap();
        for b in broken {
            r.violate(crate::report::engine_violation(b, finished_ms));
        }
        // What is still open: waiting in the engine (no agent left to take it) is not
        // lost work; anything else is.
        let open: Vec<(usize, u64)> = r
            .interactions
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.finished())
            .filter_map(|(i, x)| Some((i, x.id?)))
            .collect();
        for (i, id) in open {
            let waiting = runtime.read(|e| {
                e.interaction(InteractionId(id)).is_ok_and(|s| {
                    matches!(
                        s.state,
                        omniroute_transport::actors::engine::InteractionState::Queued
                            | omniroute_transport::actors::engine::InteractionState::Offered
                    )
                })
            });
            if waiting && r.interactions[i].answered_ms.is_none() {
                r.still_waiting(i);
            }
        }
    }
    runtime.shutdown();
    let mut records =
        std::mem::replace(&mut *shared.records.lock().unwrap(), Records::new(scenario));
    records.close(finished_ms);
    Ok(Report::build(scenario, seed, &records, wall.elapsed()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_engine_s_findings_name_their_interaction_and_agent() {
        let v = crate::report::engine_violation(
            "interaction 17 waits in queue q while agent a-3 is available with capacity for voice"
                .into(),
            5,
        );
        assert_eq!((v.interaction, v.agent.as_str()), (17, "a-3"));
        let v = crate::report::engine_violation(
            "target 2: available-member count off in a lane".into(),
            5,
        );
        assert_eq!((v.interaction, v.agent.as_str()), (0, ""));
    }
}
