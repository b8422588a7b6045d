//! The hot path does not allocate per decision.
//!
//! A counting global allocator (per thread) measures the allocations of routing
//! operations in a warmed-up center. A pull decision (an agent completes work and takes
//! the best waiting interaction) must not allocate at all beyond the occasional B-tree
//! node split; an arrival allocates the new interaction's record (its shared cell and
//! its history buffer) and nothing per decision.

mod common;

use common::*;
use omniroute_engine::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

fn config() -> CenterConfig {
    let skills = ["billing", "tech", "english", "spanish"];
    let agents = (0..60)
        .map(|n| {
            let held = [(skills[n % 4], 5), (skills[(n + 1) % 4], 7)];
            voice_chat_agent(&format!("a{n}"), &held)
        })
        .collect();
    let mut config = center(agents);
    config.queues = skills
        .iter()
        .map(|s| {
            let mut q = QueueDef::new(s, &[(s, 3)]);
            q.channels = vec!["chat".into()];
            q.max_waiting = 100_000;
            q
        })
        .collect();
    config
}

#[test]
fn decisions_do_not_allocate() {
    let engine = Engine::new(config()).unwrap();
    let mut events = Vec::with_capacity(256);
    let mut scratch = Vec::with_capacity(256);
    for n in 0..60 {
        engine
            .set_presence(&format!("a{n}"), Presence::Available, 0, &mut events)
            .unwrap();
    }
    let queues = ["billing", "tech", "english", "spanish"];
    let mut now = 1;
    let mut active: VecDeque<(InteractionId, String)> = VecDeque::new();
    let requests: Vec<NewInteraction> = (0..20_000)
        .map(|n| NewInteraction::new("chat", "c").to_queue(queues[n % 4]))
        .collect();
    let mut requests = requests.into_iter();
    // Oversubscribe: 60 agents × 3 chats, 400 submitted; the rest wait.
    let accept_all = |engine: &Engine, events: &[Event], active: &mut VecDeque<_>, now| {
        for e in events {
            if let Event::Offered {
                interaction, agent, ..
            } = e
            {
                engine
                    .accept(agent, *interaction, now, &mut Vec::new())
                    .unwrap();
                active.push_back((*interaction, agent.to_string()));
            }
        }
    };
    for _ in 0..400 {
        events.clear();
        engine
            .submit(requests.next().unwrap(), now, &mut events)
            .unwrap();
        accept_all(&engine, &events, &mut active, now);
    }

    // Pull decisions: complete the oldest work; the agent takes the best waiting chat.
    let rounds = 2_000;
    let mut pull_allocations = 0;
    let mut pulls = 0;
    for _ in 0..rounds {
        now += 1;
        let (id, agent) = active.pop_front().unwrap();
        events.clear();
        let before = allocations();
        engine.complete(&agent, id, None, now, &mut events).unwrap();
        pull_allocations += allocations() - before;
        pulls += events
            .iter()
            .filter(|e| matches!(e, Event::Offered { .. }))
            .count();
        scratch.clear();
        scratch.append(&mut events);
        accept_all(&engine, &scratch, &mut active, now);
        engine.forget(id).unwrap();
        // Restock (untimed, uncounted).
        events.clear();
        engine
            .submit(requests.next().unwrap(), now, &mut events)
            .unwrap();
        accept_all(&engine, &events, &mut active, now);
    }
    assert!(
        pulls >= rounds * 9 / 10,
        "most completions should pull work: {pulls}"
    );
    let per_pull = pull_allocations as f64 / pulls as f64;
    println!("pull decision: {per_pull:.3} allocations on average ({pull_allocations} in {pulls})");
    assert!(
        per_pull < 0.05,
        "the pull path allocates: {per_pull:.3} per decision"
    );

    // Arrivals into free agents: drain the backlog first.
    while let Some((id, agent)) = active.pop_front() {
        now += 1;
        events.clear();
        engine.complete(&agent, id, None, now, &mut events).unwrap();
        scratch.clear();
        scratch.append(&mut events);
        accept_all(&engine, &scratch, &mut active, now);
        if active.len() <= 30 {
            break;
        }
    }
    let mut arrival_allocations = 0;
    let mut arrivals = 0;
    for _ in 0..1_000 {
        now += 1;
        events.clear();
        let request = requests.next().unwrap();
        let before = allocations();
        let id = engine.submit(request, now, &mut events).unwrap();
        arrival_allocations += allocations() - before;
        let offered = events.iter().any(|e| matches!(e, Event::Offered { .. }));
        assert!(offered, "free agents exist: the arrival must be offered");
        arrivals += 1;
        let agent = match &events[..] {
            [Event::Created { .. }, Event::Offered { agent, .. }, ..] => agent.to_string(),
            other => panic!("unexpected {other:?}"),
        };
        engine.accept(&agent, id, now, &mut Vec::new()).unwrap();
        engine
            .complete(&agent, id, None, now, &mut Vec::new())
            .unwrap();
        engine.forget(id).unwrap();
    }
    let per_arrival = arrival_allocations as f64 / arrivals as f64;
    // The interaction's record: its cell, its history's buffer, and the two shares
    // snapshot images take instead of copies (the request, the history).
    println!("arrival: {per_arrival:.3} allocations on average (the interaction record is 4)");
    assert!(
        per_arrival <= 4.1,
        "an arrival should allocate only the interaction's record (4): {per_arrival:.3}"
    );
}
