//! The actor runtime in process (no network), `batched` durability on this machine's
//! disk (sled in a temporary directory), on a 2-worker tokio runtime:
//!
//! * `latency`: time from submitting an interaction to its offer arriving at the agent's
//!   session (router → conversation actor → agent actor → session buffer: a superset of
//!   "reaching the agent actor"), p50/p90/p99/p99.9/max, submitted open-loop at 10,000/s
//!   and 20,000/s by a generator thread that submits each at its scheduled time
//!   (reported from the submit call and from the schedule, so a stalled generator shows
//!   up instead of hiding: no coordinated omission). 1,000 agents accept and complete
//!   at once (no wrap-up), so the load is full lifecycles.
//! * `lifecycles`: full lifecycles per second — submit → offer → accept → complete →
//!   wrap-up done (a 1 ms wrap-up ended by the agent actor's timer) — with 1,000 agents
//!   driving their own sessions, closed loop with 2,000 interactions in flight.
//! * `memory`: resident memory per idle agent actor (10,000 agents) and per live
//!   conversation (10,000 waiting interactions), from `/proc/self/statm` deltas.
//!
//! * `floor`: what one simulated interaction cannot cost less than on the simulator's
//!   single thread — a full lifecycle through the engine and its log alone (no
//!   actors), one actor message (two actors, and round rings of 2, 2,000 and 20,000:
//!   the cost once the receivers are cold), one short actor life (spawn, message, stop).
//!
//! `cargo bench --bench actors` (all) or name parts: `-- latency lifecycles memory floor`.
//! `OMNIROUTE_BENCH_QUICK=1` runs each for a fraction of the time.

/// The binary's allocator (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: omniroute_actors::alloc::MiMalloc = omniroute_actors::alloc::MiMalloc;

use omniroute_actors::center::Clock;
use omniroute_actors::engine::journal::{Durability, Journal, JournalConfig, SledStore};
use omniroute_actors::engine::*;
use omniroute_actors::{Push, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn quick() -> bool {
    std::env::var_os("OMNIROUTE_BENCH_QUICK").is_some()
}

fn center(agents: usize, wrap_up_ms: u64) -> CenterConfig {
    let mut queue = QueueDef::new("q", &[("s", 1)]);
    queue.max_waiting = u32::MAX;
    queue.wrap_up_ms = wrap_up_ms;
    queue.offer_timeout_ms = 600_000;
    CenterConfig {
        channels: ChannelDef::builtin(),
        skills: vec![SkillDef {
            name: "s".into(),
            is_language: false,
        }],
        agents: (0..agents)
            .map(|n| AgentDef {
                id: format!("a{n}"),
                name: format!("a{n}"),
                skills: vec![SkillLevel {
                    skill: "s".into(),
                    proficiency: 5,
                }],
                capacity: CapacityProfile::simple(10, &["chat"]),
            })
            .collect(),
        queues: vec![queue],
        routing: RoutingConfig {
            rules: vec![],
            default_queue: Some("q".into()),
        },
        settings: Settings::default(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The journal every part runs on: batched:10ms on sled, the actors' timers, no snapshots.
fn open_journal(dir: &std::path::Path, config: CenterConfig, now: u64) -> Journal<SledStore> {
    Journal::open(
        SledStore::open(dir).unwrap(),
        Some(config),
        JournalConfig {
            durability: Durability::Batched { flush_every_ms: 10 },
            external_timers: true,
            snapshot_every: 0,
            ..Default::default()
        },
        now,
    )
    .unwrap()
    .0
}

async fn runtime(dir: &std::path::Path, config: CenterConfig) -> Runtime {
    let now = now_ms();
    let journal = open_journal(dir, config, now);
    Runtime::start(
        journal,
        Clock::starting_at(now),
        RuntimeConfig {
            max_live_interactions: 1_000_000,
            session_buffer: 65_536,
            ..Default::default()
        },
        vec![],
    )
    .await
    .unwrap()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Agents answer every offer: accept, complete; `done` counts wrap-ups ended.
fn drive_agents(
    rt: &Runtime,
    agents: usize,
    on_offer: Arc<dyn Fn(InteractionId) + Send + Sync>,
    done: Arc<tokio::sync::Semaphore>,
    finished: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..agents)
        .map(|n| {
            let mut s = rt.connect_agent(&format!("a{n}")).unwrap();
            let on_offer = on_offer.clone();
            let done = done.clone();
            let finished = finished.clone();
            tokio::spawn(async move {
                s.set_presence(Presence::Available).await.unwrap();
                while let Some(p) = s.next().await {
                    match p {
                        Push::Offer(o) => {
                            on_offer(o.interaction);
                            let _ = s.accept(o.interaction).await;
                        }
                        Push::Assigned { interaction } => {
                            let _ = s.complete(interaction, None).await;
                        }
                        Push::Completed {
                            interaction,
                            wrap_up_until_ms: None,
                        }
                        | Push::WrapUpEnded { interaction } => {
                            let _ = interaction;
                            finished.fetch_add(1, Ordering::Relaxed);
                            done.add_permits(1);
                        }
                        Push::Lagged { missed } => panic!("session lagged by {missed}"),
                        _ => {}
                    }
                }
            })
        })
        .collect()
}

fn latency() {
    for rate in [10_000, 20_000] {
        latency_at(rate);
    }
}

fn latency_at(rate: u64) {
    let rt_tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_tokio.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let agents = 1_000;
        let rt = Arc::new(runtime(dir.path(), center(agents, 0)).await);
        let seconds = if quick() { 1 } else { 5 };
        let total = (rate * seconds) as usize;
        // Scheduled submit time of interaction id n (ids are 1, 2, 3… in submit order).
        let scheduled: Arc<Vec<AtomicU64>> = Arc::new((0..total + 2).map(|_| AtomicU64::new(0)).collect());
        let latencies: Arc<Vec<AtomicU64>> = Arc::new((0..total + 2).map(|_| AtomicU64::new(0)).collect());
        let actual: Arc<Vec<AtomicU64>> = Arc::new((0..total + 2).map(|_| AtomicU64::new(0)).collect());
        let service: Arc<Vec<AtomicU64>> = Arc::new((0..total + 2).map(|_| AtomicU64::new(0)).collect());
        let origin = Instant::now();
        let on_offer: Arc<dyn Fn(InteractionId) + Send + Sync> = {
            let scheduled = scheduled.clone();
            let latencies = latencies.clone();
            let actual = actual.clone();
            let service = service.clone();
            Arc::new(move |id: InteractionId| {
                let i = id.0 as usize;
                if i < scheduled.len() {
                    let at = origin.elapsed().as_nanos() as u64;
                    let s = scheduled[i].load(Ordering::Acquire);
                    latencies[i].store(at.saturating_sub(s).max(1), Ordering::Release);
                    let a = actual[i].load(Ordering::Acquire);
                    service[i].store(at.saturating_sub(a).max(1), Ordering::Release);
                }
            })
        };
        let finished = Arc::new(AtomicU64::new(0));
        let _drivers = drive_agents(&rt, agents, on_offer, Arc::new(tokio::sync::Semaphore::new(0)), finished.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Open loop on its own thread: interaction k is due at k / rate seconds and is
        // submitted then, whatever the server is doing.
        let period_ns = 1_000_000_000 / rate;
        let start = origin.elapsed().as_nanos() as u64;
        let generator = {
            let rt = rt.clone();
            let scheduled = scheduled.clone();
            let actual = actual.clone();
            let handle = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                for next in 0..total {
                    let due = start + next as u64 * period_ns;
                    // Sleep (not spin: two cores) until due; the timer's slack is
                    // tens of µs, counted in the "from the schedule" figures.
                    let now = origin.elapsed().as_nanos() as u64;
                    if due > now {
                        std::thread::sleep(Duration::from_nanos(due - now));
                    }
                    // Ids are 1, 2, 3… in submit order (one submitter, fresh log): the
                    // times are stored first, as the offer can reach the agent before
                    // submit returns.
                    scheduled[next + 1].store(due, Ordering::Release);
                    actual[next + 1].store(origin.elapsed().as_nanos() as u64, Ordering::Release);
                    let id = handle
                        .block_on(rt.submit(NewInteraction::new("chat", "c")))
                        .unwrap();
                    assert_eq!(id.0 as usize, next + 1);
                }
            })
        };
        tokio::task::spawn_blocking(move || generator.join().unwrap())
            .await
            .unwrap();
        let elapsed = (origin.elapsed().as_nanos() as u64 - start) as f64 / 1e9;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let us = |v: u64| v as f64 / 1000.0;
        for (what, table) in [
            ("from the submit call", &service),
            ("from the schedule", &latencies),
        ] {
            let mut l: Vec<u64> = table.iter().map(|a| a.load(Ordering::Acquire)).filter(|v| *v > 0).collect();
            l.sort_unstable();
            println!(
                "latency: {total} submits at {rate}/s ({:.0}/s achieved), {agents} agents; submit→offer at the agent's session {what}: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs ({} measured)",
                total as f64 / elapsed,
                us(percentile(&l, 0.5)),
                us(percentile(&l, 0.9)),
                us(percentile(&l, 0.99)),
                us(percentile(&l, 0.999)),
                us(*l.last().unwrap_or(&0)),
                l.len()
            );
        }
        rt.shutdown();
    });
}

fn lifecycles() {
    let rt_tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_tokio.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let agents = 1_000;
        let rt = Arc::new(runtime(dir.path(), center(agents, 1)).await);
        let in_flight = 2_000;
        let done = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let finished = Arc::new(AtomicU64::new(0));
        let _drivers = drive_agents(&rt, agents, Arc::new(|_| {}), done.clone(), finished.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seconds = if quick() { 1.0 } else { 5.0 };
        // Customers arrive from several connections at once (one submitter would
        // measure one task's speed, not the server's).
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                let rt = rt.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    loop {
                        let permit = done.acquire().await.unwrap();
                        permit.forget();
                        if rt.submit(NewInteraction::new("chat", "c")).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await; // warm-up
        let f0 = finished.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let f1 = finished.load(Ordering::Relaxed);
        let rate = (f1 - f0) as f64 / t0.elapsed().as_secs_f64();
        for s in &submitters {
            s.abort();
        }
        println!(
            "lifecycles: {:.0} full lifecycles/s (submit → offer → accept → complete → 1 ms wrap-up ended) with {agents} agents, {in_flight} in flight, over {seconds} s",
            rate
        );
        rt.shutdown();
    });
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory() {
    let rt_tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_tokio.block_on(async {
        let n = 10_000usize;
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let journal = open_journal(dir.path(), center(n, 0), now);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_bytes();
        let rt = Runtime::start(
            journal,
            Clock::starting_at(now),
            RuntimeConfig {
                max_live_interactions: 1_000_000,
                ..Default::default()
            },
            vec![],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let with_agents = rss_bytes();
        // Agents are offline: every interaction waits, each with its conversation actor.
        for _ in 0..n {
            rt.submit(NewInteraction::new("chat", "c")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with_conversations = rss_bytes();
        assert_eq!(rt.conversation_actors(), n);
        println!(
            "memory: {:.0} bytes per idle agent actor ({n} agents; sessions table and actor, engine's agent excluded); {:.0} bytes per live conversation ({n} waiting; conversation actor + router + engine interaction + log cache)",
            (with_agents.saturating_sub(before)) as f64 / n as f64,
            (with_conversations.saturating_sub(with_agents)) as f64 / n as f64,
        );
        rt.shutdown();
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = args.is_empty();
    let want = |name: &str| all || args.iter().any(|a| a == name);
    if want("latency") {
        latency();
    }
    if want("lifecycles") {
        lifecycles();
    }
    if want("memory") {
        memory();
    }
    if want("floor") {
        floor();
    }
}

/// What one simulated interaction cannot cost less than, on one thread as the
/// simulator runs (a current-thread tokio runtime): the engine and its log alone for a
/// full lifecycle, one actor message (a cast that wakes the receiving actor), and one
/// actor's life (spawned linked to a supervisor, one message, stopped, its supervisor
/// told).
fn floor() {
    let lifecycles = if quick() { 50_000 } else { 500_000 };
    // A first pass grows the allocator's memory (every interaction stays in the
    // engine, as finished work does for a day): measured, not reported.
    engine_lifecycles(lifecycles, 2_000);
    for in_flight in [500, 2_000] {
        let (took, records) = engine_lifecycles(lifecycles, in_flight);
        println!(
            "floor        engine + log, {in_flight:>5} live: {:.2} µs per lifecycle ({records} records), {:.0} lifecycles/s",
            took.as_secs_f64() * 1e6 / lifecycles as f64,
            lifecycles as f64 / took.as_secs_f64()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let hops = if quick() { 200_000 } else { 2_000_000 };
    let took = rt.block_on(ping_pong(hops));
    println!(
        "floor        actor message (cast, the receiver woken, handled): {:.2} µs per hop ({hops} hops)",
        took.as_secs_f64() * 1e6 / hops as f64
    );
    for actors in [2, 2_000, 20_000] {
        let took = rt.block_on(ring(actors, hops));
        println!(
            "floor        actor message round a ring of {actors:>6} actors: {:.2} µs per hop ({hops} hops)",
            took.as_secs_f64() * 1e6 / hops as f64
        );
    }
    let lives = if quick() { 20_000 } else { 200_000 };
    let took = rt.block_on(actor_lives(lives));
    println!(
        "floor        actor life (spawn linked, one message, stop, supervisor told): {:.2} µs per actor ({lives} actors)",
        took.as_secs_f64() * 1e6 / lives as f64
    );
}

/// Full lifecycles (submit → offer → accept → complete → end of wrap-up: 4 records)
/// through the engine and the log on the simulator's store (records encoded, then
/// dropped), 1,000 agents taking one call each, `in_flight` live (the rest wait).
fn engine_lifecycles(lifecycles: u64, in_flight: u64) -> (Duration, u64) {
    use omniroute_actors::engine::journal::{Command, DiscardStore};
    use std::collections::VecDeque;
    let mut config = center(1_000, 60_000);
    for a in &mut config.agents {
        a.capacity = CapacityProfile::simple(10, &["voice"]);
    }
    let (journal, _) = Journal::open(
        Arc::new(DiscardStore::new()),
        Some(config),
        JournalConfig::simulated(),
        0,
    )
    .unwrap();
    let mut now: TimeMs = 1;
    for n in 0..1_000 {
        journal
            .execute(
                Command::SetPresence {
                    agent: format!("a{n}"),
                    presence: Presence::Available,
                },
                now,
            )
            .unwrap();
    }
    let mut offered: VecDeque<(InteractionId, String)> = VecDeque::new();
    let take = |events: &[Event], offered: &mut VecDeque<(InteractionId, String)>| {
        for e in events {
            if let Event::Offered {
                interaction, agent, ..
            } = e
            {
                offered.push_back((*interaction, agent.to_string()));
            }
        }
    };
    let (mut records, mut done, mut submitted) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while done < lifecycles {
        while submitted - done < in_flight && submitted < lifecycles {
            let ack = journal
                .execute(
                    Command::Submit {
                        request: NewInteraction::new("voice", "c").to_queue("q"),
                    },
                    now,
                )
                .unwrap();
            records += 1;
            submitted += 1;
            take(&ack.events, &mut offered);
        }
        let (interaction, agent) = offered.pop_front().expect("an offer is out");
        now += 1;
        for command in [
            Command::Accept {
                agent: agent.clone(),
                interaction,
            },
            Command::Complete {
                agent: agent.clone(),
                interaction,
                wrap_up_code: None,
            },
            Command::EndWrapUp { agent, interaction },
        ] {
            let ack = journal.execute(command, now).unwrap();
            records += 1;
            take(&ack.events, &mut offered);
        }
        done += 1;
    }
    (started.elapsed(), records)
}

struct Pong;

/// Hops left, and (once) who to send it on to.
struct Ball(u64, Option<ractor::ActorRef<Ball>>);

impl ractor::Actor for Pong {
    type Msg = Ball;
    type State = (
        Option<ractor::ActorRef<Ball>>,
        Option<tokio::sync::oneshot::Sender<()>>,
    );
    type Arguments = Option<tokio::sync::oneshot::Sender<()>>;
    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        done: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok((None, done))
    }
    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        Ball(left, peer): Ball,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let Some(peer) = peer {
            state.0 = Some(peer);
        }
        if left == u64::MAX {
            return Ok(()); // an introduction only
        }
        if left == 0 {
            if let Some(done) = state.1.take() {
                let _ = done.send(());
            }
            return Ok(());
        }
        if let Some(peer) = &state.0 {
            let _ = peer.cast(Ball(left - 1, None));
        }
        Ok(())
    }
}

/// Two actors passing one message back and forth `hops` times: each hop is a cast that
/// wakes the other actor's task.
async fn ping_pong(hops: u64) -> Duration {
    let (done_a, a_done) = tokio::sync::oneshot::channel();
    let (done_b, b_done) = tokio::sync::oneshot::channel();
    let (a, _ha) = ractor::Actor::spawn(None, Pong, Some(done_a))
        .await
        .unwrap();
    let (b, _hb) = ractor::Actor::spawn(None, Pong, Some(done_b))
        .await
        .unwrap();
    // Introduce them (b learns a with the first message; a learns b here).
    a.cast(Ball(u64::MAX, Some(b.clone()))).unwrap();
    tokio::task::yield_now().await;
    let started = Instant::now();
    b.cast(Ball(hops, Some(a.clone()))).unwrap();
    tokio::select! {
        _ = a_done => {}
        _ = b_done => {}
    }
    let took = started.elapsed();
    a.stop(None);
    b.stop(None);
    took
}

/// `actors` actors in a ring passing one message round it `hops` times in all: each hop
/// wakes the next actor, so with many actors each hop finds the receiver's mailbox,
/// task and state cold, as the simulator's thousands of actors do.
async fn ring(actors: usize, hops: u64) -> Duration {
    let (done, finished) = tokio::sync::oneshot::channel();
    let last = (hops % actors as u64) as usize;
    let mut done = Some(done);
    let mut refs = Vec::with_capacity(actors);
    let mut handles = Vec::with_capacity(actors);
    for n in 0..actors {
        let (a, h) = ractor::Actor::spawn(None, Pong, if n == last { done.take() } else { None })
            .await
            .unwrap();
        refs.push(a);
        handles.push(h);
    }
    for (n, a) in refs.iter().enumerate() {
        a.cast(Ball(u64::MAX, Some(refs[(n + 1) % actors].clone())))
            .unwrap();
    }
    // Every introduction handled before the clock starts: the actors' tasks were all
    // woken before this one sleeps, so they run first.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let started = Instant::now();
    refs[0].cast(Ball(hops, None)).unwrap();
    finished.await.unwrap();
    let took = started.elapsed();
    // Stopped before the next measurement starts.
    for a in &refs {
        a.stop(None);
    }
    for h in handles {
        h.await.unwrap();
    }
    took
}

struct Brief;

impl ractor::Actor for Brief {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<()>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        myself: ractor::ActorRef<()>,
        _: (),
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        myself.stop(None);
        Ok(())
    }
}

struct Counting;

impl ractor::Actor for Counting {
    type Msg = ();
    type State = (u64, Option<tokio::sync::oneshot::Sender<()>>);
    type Arguments = (u64, tokio::sync::oneshot::Sender<()>);
    async fn pre_start(
        &self,
        _: ractor::ActorRef<()>,
        (n, done): Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok((n, Some(done)))
    }
    async fn handle(
        &self,
        _: ractor::ActorRef<()>,
        _: (),
        _: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
    async fn handle_supervisor_evt(
        &self,
        _: ractor::ActorRef<()>,
        event: ractor::SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let ractor::SupervisionEvent::ActorTerminated(..) = event {
            state.0 -= 1;
            if state.0 == 0
                && let Some(done) = state.1.take()
            {
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

/// `lives` short-lived actors, as the runtime runs a conversation: spawned linked to a
/// supervisor, sent one message, stopped; the supervisor hears of each end.
async fn actor_lives(lives: u64) -> Duration {
    let (done, all_done) = tokio::sync::oneshot::channel();
    let (supervisor, _h) = ractor::Actor::spawn(None, Counting, (lives, done))
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..lives {
        let (actor, _) =
            ractor::ActorRuntime::spawn_linked_instant(None, Brief, (), supervisor.get_cell())
                .unwrap();
        actor.cast(()).unwrap();
        // Let it run, as an interaction's conversation lives across many turns.
        tokio::task::yield_now().await;
    }
    all_done.await.unwrap();
    let took = started.elapsed();
    supervisor.stop(None);
    took
}
