//! The dispatcher driven from several threads at once, as the actor runtime will.
//!
//! Six threads share one engine. Each acts for any agent (answers offers, completes
//! and transfers work — to queues and to named agents — changes presence), and submits
//! and abandons customer work for every queue, some of it with a preferred agent; so two
//! threads often race on the same agent or interaction. The code asserts capacity under the agent lock on every
//! reservation; at regular checkpoints all threads stop at a barrier and the engine's
//! full invariant check must pass (capacity, single offer/assignment, index consistency,
//! and work-conserving: nothing waits while an eligible agent is free). At the end every
//! agent drains its work and every submitted interaction must have finished exactly once.

mod common;

use common::*;
use omniroute_engine::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

const THREADS: usize = 6;
const AGENTS: usize = 40;
const ROUNDS: usize = 60;
const OPS_PER_ROUND: usize = 400;

fn config() -> CenterConfig {
    let skills = ["billing", "tech", "sales", "english", "spanish"];
    let mut rng = SeededRng::new(7);
    let agents = (0..AGENTS)
        .map(|n| {
            let mut held: Vec<(&str, u8)> = Vec::new();
            for s in skills {
                if rng.below(3) != 0 {
                    held.push((s, 1 + rng.below(10) as u8));
                }
            }
            let capacity = match n % 3 {
                0 => CapacityProfile::simple(10, &["voice", "chat", "email"]),
                1 => CapacityProfile::simple(9, &["chat", "email", "sms"]),
                _ => {
                    let mut p = CapacityProfile::simple(12, &["voice", "chat"]);
                    p.channels[0].units = Some(6);
                    p.blocking = vec![ChannelBlock {
                        while_on: "voice".into(),
                        blocks: vec!["chat".into()],
                    }];
                    p
                }
            };
            agent(&format!("a{n}"), &held, capacity)
        })
        .collect();
    let mut config = CenterConfig {
        channels: ChannelDef::builtin(),
        skills: skills.iter().map(|s| skill(s)).collect(),
        agents,
        ..Default::default()
    };
    let policies = AssignmentPolicy::ALL;
    config.queues = skills
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let mut q = QueueDef::new(&format!("q-{s}"), &[(s, 4)]);
            q.policy = policies[n % 4];
            q.offer_timeout_ms = 2_000;
            q.wrap_up_ms = if n % 2 == 0 { 500 } else { 0 };
            q.aging_millipoints_per_second = 100 * n as u32;
            q.relaxation = vec![
                RelaxationStep {
                    after_ms: 1_000,
                    action: RelaxationAction::LowerProficiency {
                        skill: (*s).into(),
                        to: 1,
                    },
                },
                RelaxationStep {
                    after_ms: 3_000,
                    action: RelaxationAction::Overflow {
                        queue: format!("q-{}", skills[(n + 1) % skills.len()]),
                    },
                },
            ];
            q
        })
        .collect();
    config.routing.default_queue = Some("q-billing".into());
    config.settings.max_consecutive_misses = 0;
    config
}

#[test]
fn concurrent_routing_keeps_every_invariant() {
    let engine = Arc::new(Engine::new(config()).unwrap());
    let clock = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let submitted = Arc::new(Mutex::new(BTreeSet::new()));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let channels = ["voice", "chat", "email", "sms"];
    let queues: Vec<String> = engine
        .config()
        .queues
        .iter()
        .map(|q| q.id.clone())
        .collect();

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let clock = clock.clone();
            let barrier = barrier.clone();
            let submitted = submitted.clone();
            let violations = violations.clone();
            let queues = queues.clone();
            std::thread::spawn(move || {
                let mut rng = SeededRng::new(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let mut scheduler = Scheduler::new();
                let mut events = Vec::new();
                let mut my_submitted = Vec::new();
                let mut broken = false;
                for round in 0..ROUNDS {
                    for _ in 0..OPS_PER_ROUND {
                        if broken {
                            break;
                        }
                        // A panic (an engine assertion) must fail the test, not leave the
                        // other threads waiting at the barrier forever.
                        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let now = clock.fetch_add(1 + rng.below(20) as u64, Ordering::Relaxed);
                            events.clear();
                            let agent = &format!("a{}", rng.below(AGENTS));
                            match rng.below(100) {
                                0..=24 => {
                                    let mut request =
                                        NewInteraction::new(channels[rng.below(4)], "c")
                                            .to_queue(&queues[rng.below(queues.len())]);
                                    request.priority = Some(rng.below(5) as i32);
                                    if rng.below(4) == 0 {
                                        request.preferred_agent =
                                            Some(format!("a{}", rng.below(AGENTS)));
                                        request.preferred_fallback_ms = 500;
                                    }
                                    if let Ok(id) = engine.submit(request, now, &mut events) {
                                        my_submitted.push(id);
                                    }
                                }
                                25..=31 => {
                                    let presence = match rng.below(4) {
                                        0 => Presence::Away {
                                            reason: "break".into(),
                                        },
                                        1 => Presence::Offline,
                                        _ => Presence::Available,
                                    };
                                    engine
                                        .set_presence(agent, presence, now, &mut events)
                                        .unwrap();
                                }
                                32..=36 => {
                                    if !my_submitted.is_empty() {
                                        let id = my_submitted[rng.below(my_submitted.len())];
                                        let _ = engine.abandon(id, now, &mut events);
                                    }
                                }
                                37..=45 => {
                                    while let Some((_, timer)) = scheduler.pop_due(now) {
                                        engine.on_timer(timer, now, &mut events);
                                    }
                                }
                                46 if rng.below(15) == 0 => {
                                    // A configuration change while the others route: some
                                    // retire routing targets (aging, a skill minimum), some
                                    // move an agent between queues.
                                    let mut c = engine.config();
                                    let q = rng.below(c.queues.len());
                                    match rng.below(5) {
                                        0 => {
                                            let w = &mut c.queues[q].wrap_up_ms;
                                            *w = if *w == 0 { 500 } else { 0 };
                                        }
                                        1 => c.queues[q].aging_millipoints_per_second ^= 50,
                                        2 => c.queues[q].base_priority ^= 1,
                                        3 => {
                                            let r =
                                                &mut c.queues[q].required_skills[0].min_proficiency;
                                            *r = if *r == 4 { 5 } else { 4 };
                                        }
                                        _ => {
                                            let a = rng.below(c.agents.len());
                                            if let Some(skill) = c.agents[a].skills.first_mut() {
                                                skill.proficiency = 1 + (skill.proficiency % 10);
                                            }
                                        }
                                    }
                                    engine.reconfigure(c, now, &mut events).unwrap();
                                }
                                roll => {
                                    let snapshot = engine.agent(agent).unwrap();
                                    if let Some(w) =
                                        snapshot.work.get(rng.below(snapshot.work.len().max(1)))
                                    {
                                        let id = w.interaction;
                                        // Errors are expected: another thread may have moved it.
                                        let _ = match (w.phase.as_str(), roll % 10) {
                                            ("offered", 0) => {
                                                engine.reject(agent, id, now, &mut events)
                                            }
                                            ("offered", _) => {
                                                engine.accept(agent, id, now, &mut events)
                                            }
                                            ("assigned", 1) => engine.transfer(
                                                agent,
                                                id,
                                                TransferTarget::Agent(format!(
                                                    "a{}",
                                                    rng.below(AGENTS)
                                                )),
                                                now,
                                                &mut events,
                                            ),
                                            ("assigned", 0) => engine.transfer(
                                                agent,
                                                id,
                                                TransferTarget::Queue(
                                                    queues[rng.below(queues.len())].clone(),
                                                ),
                                                now,
                                                &mut events,
                                            ),
                                            ("assigned", _) => {
                                                engine.complete(agent, id, None, now, &mut events)
                                            }
                                            _ => Ok(()),
                                        };
                                    }
                                }
                            }
                            scheduler.arm_from(&events);
                        }));
                        if let Err(panic) = step {
                            let message = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("thread {t} panicked in round {round}: {message}"));
                            broken = true;
                        }
                    }
                    // Checkpoint: every thread stops; one checks the whole engine.
                    if barrier.wait().is_leader() {
                        let now = clock.load(Ordering::Relaxed);
                        for v in engine.check_invariants(now) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("round {round}: {v}"));
                        }
                    }
                    barrier.wait();
                }
                submitted.lock().unwrap().extend(my_submitted);
                scheduler
            })
        })
        .collect();
    let mut schedulers: Vec<Scheduler> = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect();
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "invariants violated under concurrency: {violations:#?}"
    );

    // Drain: everyone available, all timers fired, all work accepted and completed.
    let mut now = clock.load(Ordering::Relaxed) + 1;
    let mut events = Vec::new();
    for a in 0..AGENTS {
        engine
            .set_presence(&format!("a{a}"), Presence::Available, now, &mut events)
            .unwrap();
    }
    let mut scheduler = Scheduler::new();
    for s in &mut schedulers {
        while let Some((due, timer)) = s.pop_due(u64::MAX) {
            scheduler.arm(due, timer);
        }
    }
    scheduler.arm_from(&events);
    for _ in 0..10_000 {
        events.clear();
        let mut progressed = false;
        for a in 0..AGENTS {
            let id = format!("a{a}");
            for w in engine.agent(&id).unwrap().work {
                progressed = true;
                match w.phase.as_str() {
                    "offered" => engine.accept(&id, w.interaction, now, &mut events).unwrap(),
                    "assigned" => engine
                        .complete(&id, w.interaction, None, now, &mut events)
                        .unwrap(),
                    _ => {}
                }
            }
        }
        now += 10_000;
        while let Some((_, timer)) = scheduler.pop_due(now) {
            engine.on_timer(timer, now, &mut events);
        }
        scheduler.arm_from(&events);
        if !progressed && scheduler.is_empty() {
            break;
        }
    }
    let violations = engine.check_invariants(now);
    assert!(violations.is_empty(), "after drain: {violations:#?}");
    let submitted = submitted.lock().unwrap();
    assert!(
        submitted.len() > 1_000,
        "the test submitted too little work: {}",
        submitted.len()
    );
    let mut outcome = BTreeMap::<String, usize>::new();
    for id in submitted.iter() {
        let snapshot = engine
            .interaction(*id)
            .expect("every submitted interaction is known");
        *outcome.entry(format!("{:?}", snapshot.state)).or_default() += 1;
        // Queued leftovers would mean no agent of the center can ever serve it (skills).
        if snapshot.state == InteractionState::Queued {
            let explanation = engine.explain(*id, now).unwrap();
            assert!(
                explanation.winner.is_none(),
                "{id} waits although {:?} could take it",
                explanation.winner
            );
        } else {
            assert!(
                snapshot.state.is_terminal(),
                "{id} left in {:?}",
                snapshot.state
            );
        }
    }
    assert!(
        outcome.get("Completed").copied().unwrap_or(0) > 500,
        "too little completed: {outcome:?}"
    );
}
