//! Small centers for the engine's tests.
#![allow(dead_code)]

pub mod random;

use omniroute_engine::*;

pub fn skill(name: &str) -> SkillDef {
    SkillDef {
        name: name.to_string(),
        is_language: false,
    }
}

pub fn agent(id: &str, skills: &[(&str, u8)], capacity: CapacityProfile) -> AgentDef {
    AgentDef {
        id: id.to_string(),
        name: id.to_string(),
        skills: skills
            .iter()
            .map(|(s, p)| SkillLevel {
                skill: s.to_string(),
                proficiency: *p,
            })
            .collect(),
        capacity,
    }
}

/// Voice costs 10 of 10 units; chat 3; email 2.
pub fn voice_chat_agent(id: &str, skills: &[(&str, u8)]) -> AgentDef {
    agent(
        id,
        skills,
        CapacityProfile::simple(10, &["voice", "chat", "email"]),
    )
}

/// A center with skills `billing`, `tech`, `english`, `spanish`, one queue per skill
/// plus `billing-es`, default queue `billing`.
pub fn center(agents: Vec<AgentDef>) -> CenterConfig {
    let mut config = CenterConfig {
        channels: ChannelDef::builtin(),
        skills: ["billing", "tech", "english", "spanish"]
            .iter()
            .map(|s| skill(s))
            .collect(),
        agents,
        ..Default::default()
    };
    config.queues = vec![
        QueueDef::new("billing", &[("billing", 1)]),
        QueueDef::new("tech", &[("tech", 1)]),
        QueueDef::new("billing-es", &[("billing", 1), ("spanish", 5)]),
    ];
    config.routing.default_queue = Some("billing".to_string());
    config
}

pub struct Harness {
    pub engine: Engine,
    pub events: Vec<Event>,
    pub scheduler: Scheduler,
    pub now: TimeMs,
}

impl Harness {
    pub fn new(config: CenterConfig) -> Self {
        Harness {
            engine: Engine::new(config).expect("valid config"),
            events: Vec::new(),
            scheduler: Scheduler::new(),
            now: 0,
        }
    }

    /// Runs `f`, arms the timers its events ask for, returns the events.
    pub fn step<T>(
        &mut self,
        f: impl FnOnce(&Engine, TimeMs, &mut Vec<Event>) -> T,
    ) -> (T, Vec<Event>) {
        let mut events = Vec::new();
        let result = f(&self.engine, self.now, &mut events);
        self.scheduler.arm_from(&events);
        self.events.extend(events.iter().cloned());
        (result, events)
    }

    pub fn available(&mut self, agent: &str) {
        self.step(|e, now, out| e.set_presence(agent, Presence::Available, now, out))
            .0
            .expect("set presence");
    }

    pub fn submit(&mut self, request: NewInteraction) -> (InteractionId, Vec<Event>) {
        let (id, events) = self.step(|e, now, out| e.submit(request, now, out));
        (id.expect("submit"), events)
    }

    /// Advances the clock to `to`, firing due timers in order.
    pub fn advance_to(&mut self, to: TimeMs) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some((due, timer)) = self.scheduler.pop_due(to) {
            self.now = self.now.max(due);
            let (_, events) = self.step(|e, now, out| e.on_timer(timer, now, out));
            all.extend(events);
        }
        self.now = to;
        all
    }

    pub fn assert_invariants(&self) {
        let violations = self.engine.check_invariants(self.now);
        assert!(
            violations.is_empty(),
            "invariants violated: {violations:#?}"
        );
    }
}

/// The agent an interaction was offered to in these events, if any.
pub fn offered_to(events: &[Event], interaction: InteractionId) -> Option<String> {
    events.iter().rev().find_map(|e| match e {
        Event::Offered {
            interaction: i,
            agent,
            ..
        } if *i == interaction => Some(agent.to_string()),
        _ => None,
    })
}
