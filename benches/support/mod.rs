//! The bench centers and drivers, shared by `dispatch` (criterion, wall time) and
//! `instructions` (instruction counts under callgrind).
#![allow(dead_code)]

use omniroute_engine::*;
use std::collections::VecDeque;
use std::hint::black_box;

/// The shape of a center: agents, queues, skills.
#[derive(Clone, Copy)]
pub struct Shape {
    pub agents: usize,
    pub queues: usize,
    pub skills: usize,
}

/// The realistic center: 1,000 queues and 200 skills.
pub const fn realistic(agents: usize) -> Shape {
    Shape {
        agents,
        queues: 1_000,
        skills: 200,
    }
}

/// Queues and skills grow with the agents, so each queue keeps ~10 members' worth of
/// agents per channel and each agent the same number of queues.
pub const fn proportional(agents: usize) -> Shape {
    Shape {
        agents,
        queues: agents / 10,
        skills: agents / 50,
    }
}
const CHANNELS: [&str; 3] = ["voice", "chat", "email"];

pub fn center(shape: Shape, seed: u64) -> CenterConfig {
    let Shape {
        agents,
        queues: queue_count,
        skills: skill_count,
    } = shape;
    let mut rng = SeededRng::new(seed);
    let skills: Vec<SkillDef> = (0..skill_count)
        .map(|n| SkillDef {
            name: format!("s{n}"),
            is_language: n < 10,
        })
        .collect();
    let policies = AssignmentPolicy::ALL;
    let queues: Vec<QueueDef> = (0..queue_count)
        .map(|n| {
            let mut q = QueueDef::new(
                &format!("q{n}"),
                &[(&format!("s{}", n % skill_count), 1 + rng.below(5) as u8)],
            );
            for _ in 0..rng.below(3) {
                let optional = format!("s{}", rng.below(skill_count));
                if optional != q.required_skills[0].skill
                    && !q.optional_skills.iter().any(|o| o.skill == optional)
                {
                    q.optional_skills.push(SkillRequirement {
                        skill: optional,
                        min_proficiency: 1 + rng.below(8) as u8,
                    });
                }
            }
            q.channels = vec![CHANNELS[n % 3].to_string()];
            q.policy = policies[n % 4];
            q.aging_millipoints_per_second = (n % 3) as u32 * 100;
            q.max_waiting = 1_000_000;
            q
        })
        .collect();
    let agents: Vec<AgentDef> = (0..agents)
        .map(|n| {
            let count = 3 + rng.below(6);
            let mut held: Vec<SkillLevel> = Vec::with_capacity(count);
            while held.len() < count {
                let skill = format!("s{}", rng.below(skill_count));
                if !held.iter().any(|s| s.skill == skill) {
                    held.push(SkillLevel {
                        skill,
                        proficiency: 1 + rng.below(10) as u8,
                    });
                }
            }
            let capacity = match n % 3 {
                0 => CapacityProfile::simple(10, &["voice"]),
                1 => {
                    let mut p = CapacityProfile::simple(10, &["voice", "chat"]);
                    p.blocking = vec![ChannelBlock {
                        while_on: "voice".into(),
                        blocks: vec!["chat".into()],
                    }];
                    p
                }
                _ => CapacityProfile::simple(10, &["chat", "email", "whatsapp", "sms"]),
            };
            AgentDef {
                id: format!("a{n}"),
                name: String::new(),
                skills: held,
                capacity,
            }
        })
        .collect();
    CenterConfig {
        channels: ChannelDef::builtin(),
        skills,
        agents,
        queues,
        routing: RoutingConfig::default(),
        settings: Settings::default(),
    }
}

/// An engine with every agent available.
pub fn engine(shape: Shape) -> Engine {
    let agents = shape.agents;
    let config = center(shape, 42);
    let engine = Engine::new(config).expect("valid center");
    let mut events = Vec::new();
    for n in 0..agents {
        engine
            .set_presence(&format!("a{n}"), Presence::Available, 0, &mut events)
            .unwrap();
        events.clear();
    }
    engine
}

/// A request for a random queue on that queue's channel.
pub fn request(rng: &mut SeededRng, queues: usize) -> NewInteraction {
    let q = rng.below(queues);
    NewInteraction::new(CHANNELS[q % 3], "customer").to_queue(&format!("q{q}"))
}

/// Accepts every offer in `events` at once and records the work as in hand.
fn accept_offers(
    engine: &Engine,
    events: &[Event],
    now: TimeMs,
    active: &mut VecDeque<(InteractionId, std::sync::Arc<str>)>,
) {
    for e in events {
        if let Event::Offered {
            interaction, agent, ..
        } = e
        {
            engine
                .accept(agent, *interaction, now, &mut Vec::new())
                .unwrap();
            active.push_back((*interaction, agent.clone()));
        }
    }
}

/// Arrival-side driver at ~50 % occupancy. `step` submits one interaction (timed by the
/// caller through `timed`) and does the untimed bookkeeping.
pub struct ArrivalDriver {
    queues: usize,
    engine: Engine,
    rng: SeededRng,
    now: TimeMs,
    active: VecDeque<(InteractionId, std::sync::Arc<str>)>,
    requests: Vec<NewInteraction>,
    events: Vec<Event>,
    target_active: usize,
}

impl ArrivalDriver {
    pub fn new(shape: Shape) -> Self {
        let agents = shape.agents;
        let mut d = ArrivalDriver {
            queues: shape.queues,
            engine: engine(shape),
            rng: SeededRng::new(7),
            now: 1,
            active: VecDeque::new(),
            requests: Vec::new(),
            events: Vec::with_capacity(64),
            target_active: agents / 2,
        };
        d.refill_requests();
        while d.active.len() < d.target_active {
            d.step(|f| f());
        }
        d
    }

    fn refill_requests(&mut self) {
        // Requests are built ahead of time so the timed call does not include it.
        while self.requests.len() < 4_096 {
            let r = request(&mut self.rng, self.queues);
            self.requests.push(r);
        }
    }

    /// One arrival; `time` wraps the submit call.
    pub fn step(&mut self, time: impl FnOnce(&mut dyn FnMut())) {
        if self.requests.is_empty() {
            self.refill_requests();
        }
        let request = self.requests.pop().unwrap();
        self.now += 1;
        self.events.clear();
        let (engine, now, events) = (&self.engine, self.now, &mut self.events);
        let mut request = Some(request);
        time(&mut || {
            black_box(engine.submit(request.take().unwrap(), now, events).unwrap());
        });
        accept_offers(&self.engine, &self.events, now, &mut self.active);
        while self.active.len() > self.target_active {
            let (id, agent) = self.active.pop_front().unwrap();
            let mut events = Vec::new();
            self.engine
                .complete(&agent, id, None, self.now, &mut events)
                .unwrap();
            // The actor layer forgets finished work (its history is in the log).
            self.engine.forget(id).unwrap();
            // A completion may pull waiting work: accept it too.
            accept_offers(&self.engine, &events, self.now, &mut self.active);
        }
    }
}

/// Pull-side driver: all agents busy, work waiting everywhere.
pub struct PullDriver {
    queues: usize,
    engine: Engine,
    rng: SeededRng,
    now: TimeMs,
    active: VecDeque<(InteractionId, std::sync::Arc<str>)>,
    events: Vec<Event>,
}

impl PullDriver {
    pub fn new(shape: Shape) -> Self {
        let agents = shape.agents;
        let mut d = PullDriver {
            queues: shape.queues,
            engine: engine(shape),
            rng: SeededRng::new(11),
            now: 1,
            active: VecDeque::new(),
            events: Vec::with_capacity(64),
        };
        // Submit until every queue has a backlog: 4 interactions per agent.
        for _ in 0..agents * 4 {
            let r = request(&mut d.rng, d.queues);
            d.submit(r);
        }
        d
    }

    fn submit(&mut self, r: NewInteraction) {
        let mut events = Vec::new();
        self.engine.submit(r, self.now, &mut events).unwrap();
        self.accept_offers(&events);
    }

    fn accept_offers(&mut self, events: &[Event]) {
        accept_offers(&self.engine, events, self.now, &mut self.active);
    }

    pub fn step(&mut self, time: impl FnOnce(&mut dyn FnMut())) {
        let (id, agent) = self.active.pop_front().expect("work in hand");
        self.now += 1;
        self.events.clear();
        let (engine, now, events) = (&self.engine, self.now, &mut self.events);
        time(&mut || engine.complete(&agent, id, None, now, events).unwrap());
        self.engine.forget(id).unwrap();
        let events = std::mem::take(&mut self.events);
        self.accept_offers(&events);
        self.events = events;
        // Restock the queues.
        let r = request(&mut self.rng, self.queues);
        self.submit(r);
    }
}
