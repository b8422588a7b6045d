//! Random small centers and operation sequences for property tests.

use super::agent;
use super::skill;
use omniroute_engine::*;
use proptest::prelude::*;

pub const CHANNELS: [&str; 3] = ["voice", "chat", "email"];
pub const QUEUES: [&str; 3] = ["q0", "q1", "q2"];

#[derive(Clone, Debug)]
pub enum Op {
    Presence {
        agent: usize,
        kind: u8,
    },
    Submit {
        channel: usize,
        queue: usize,
        priority: i8,
        /// A preferred agent (index) for a quarter of submissions.
        preferred: Option<usize>,
    },
    Accept {
        agent: usize,
        pick: usize,
    },
    Reject {
        agent: usize,
        pick: usize,
    },
    Complete {
        agent: usize,
        pick: usize,
        code: usize,
    },
    Abandon {
        pick: usize,
    },
    TransferQueue {
        agent: usize,
        pick: usize,
        queue: usize,
    },
    TransferAgent {
        agent: usize,
        pick: usize,
        to: usize,
    },
    Advance {
        ms: u64,
    },
    Reconfigure {
        variant: u8,
    },
}

pub fn op_strategy(agents: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..agents, 0u8..4).prop_map(|(agent, kind)| Op::Presence { agent, kind }),
        5 => (0..3usize, 0..3usize, -2i8..5, prop::option::weighted(0.25, 0..agents))
            .prop_map(|(channel, queue, priority, preferred)| Op::Submit { channel, queue, priority, preferred }),
        4 => (0..agents, 0..4usize).prop_map(|(agent, pick)| Op::Accept { agent, pick }),
        1 => (0..agents, 0..4usize).prop_map(|(agent, pick)| Op::Reject { agent, pick }),
        3 => (0..agents, 0..4usize, 0..3usize).prop_map(|(agent, pick, code)| Op::Complete { agent, pick, code }),
        1 => (0..64usize).prop_map(|pick| Op::Abandon { pick }),
        1 => (0..agents, 0..4usize, 0..3usize).prop_map(|(agent, pick, queue)| Op::TransferQueue { agent, pick, queue }),
        1 => (0..agents, 0..4usize, 0..agents).prop_map(|(agent, pick, to)| Op::TransferAgent { agent, pick, to }),
        3 => (1u64..8_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0u8..4).prop_map(|variant| Op::Reconfigure { variant }),
    ]
}

#[derive(Clone, Debug)]
pub struct Shape {
    pub agent_skills: Vec<[u8; 3]>,
    pub agent_profiles: Vec<u8>,
    pub policies: [u8; 3],
    pub min_q0: u8,
    pub wrap_up_ms: u64,
    pub aging: u32,
    pub email_auto_accept: bool,
    pub max_offers_q2: u32,
}

pub fn shape_strategy() -> impl Strategy<Value = Shape> {
    (
        prop::collection::vec(prop::array::uniform3(0u8..=10), 3..6),
        prop::collection::vec(0u8..4, 6),
        prop::array::uniform3(0u8..4),
        2u8..=9,
        prop_oneof![Just(0u64), Just(2_000u64)],
        prop_oneof![Just(0u32), Just(500u32)],
        any::<bool>(),
        prop_oneof![Just(0u32), Just(2u32)],
    )
        .prop_map(
            |(
                agent_skills,
                agent_profiles,
                policies,
                min_q0,
                wrap_up_ms,
                aging,
                email_auto_accept,
                max_offers_q2,
            )| Shape {
                agent_skills,
                agent_profiles,
                policies,
                min_q0,
                wrap_up_ms,
                aging,
                email_auto_accept,
                max_offers_q2,
            },
        )
}

pub fn policy(n: u8) -> AssignmentPolicy {
    AssignmentPolicy::ALL[n as usize % 4]
}

pub fn profile(kind: u8) -> CapacityProfile {
    match kind {
        0 => CapacityProfile::simple(10, &["voice", "chat", "email"]),
        1 => {
            let mut p = CapacityProfile::simple(12, &["voice", "chat", "email"]);
            p.channels[0].units = Some(6);
            p.channels[1].max_concurrent = Some(2);
            p.blocking = vec![ChannelBlock {
                while_on: "voice".into(),
                blocks: vec!["chat".into(), "email".into()],
            }];
            p
        }
        2 => CapacityProfile::simple(9, &["chat", "email"]),
        _ => CapacityProfile::simple(10, &["voice"]),
    }
}

pub fn build(shape: &Shape) -> CenterConfig {
    let skills = ["s0", "s1", "s2"];
    let agents = shape
        .agent_skills
        .iter()
        .enumerate()
        .map(|(n, levels)| {
            let held: Vec<(&str, u8)> = skills
                .iter()
                .zip(levels)
                .filter(|(_, l)| **l > 0)
                .map(|(s, l)| (*s, *l))
                .collect();
            agent(&format!("a{n}"), &held, profile(shape.agent_profiles[n]))
        })
        .collect();
    let mut config = CenterConfig {
        channels: ChannelDef::builtin(),
        skills: skills.iter().map(|s| skill(s)).collect(),
        agents,
        ..Default::default()
    };
    config
        .channels
        .iter_mut()
        .find(|c| c.name == "email")
        .unwrap()
        .auto_accept = shape.email_auto_accept;
    let mut q0 = QueueDef::new("q0", &[("s0", shape.min_q0)]);
    q0.relaxation = build_relaxation_q0();
    q0.offer_timeout_ms = 4_000;
    let mut q1 = QueueDef::new("q1", &[("s1", 3)]);
    q1.relaxation = vec![RelaxationStep {
        after_ms: 10_000,
        action: RelaxationAction::Overflow { queue: "q0".into() },
    }];
    q1.wrap_up_codes = vec!["ok".into(), "ko".into()];
    q1.offer_timeout_ms = 6_000;
    let mut q2 = QueueDef::new("q2", &[("s0", 2), ("s2", 2)]);
    q2.optional_skills = vec![SkillRequirement {
        skill: "s1".into(),
        min_proficiency: 5,
    }];
    q2.relaxation = vec![RelaxationStep {
        after_ms: 3_000,
        action: RelaxationAction::DropOptionalSkills,
    }];
    q2.max_offers = shape.max_offers_q2;
    q2.on_offer_limit = OfferLimitAction::Transfer { queue: "q0".into() };
    q2.offer_timeout_ms = 3_000;
    q2.max_waiting = 15;
    for (n, q) in [&mut q0, &mut q1, &mut q2].into_iter().enumerate() {
        q.policy = policy(shape.policies[n]);
        q.wrap_up_ms = shape.wrap_up_ms;
        q.aging_millipoints_per_second = shape.aging;
    }
    config.queues = vec![q0, q1, q2];
    config.routing.default_queue = Some("q0".into());
    config.settings.max_consecutive_misses = 3;
    config
}

pub fn build_relaxation_q0() -> Vec<RelaxationStep> {
    vec![RelaxationStep {
        after_ms: 5_000,
        action: RelaxationAction::LowerProficiency {
            skill: "s0".into(),
            to: 1,
        },
    }]
}
/// The configuration after one of four runtime changes (`variant` 0–3): toggle q0's
/// relaxation, lengthen or drop q1's overflow, rotate q2's policy, add or remove agent
/// `x`.
pub fn reconfigured(config: &CenterConfig, variant: u8) -> CenterConfig {
    let mut config = config.clone();
    match variant {
        0 => {
            let q0 = &mut config.queues[0];
            if q0.relaxation.is_empty() {
                q0.required_skills[0].min_proficiency = 2;
                q0.relaxation = build_relaxation_q0();
            } else {
                q0.required_skills[0].min_proficiency = 1;
                q0.relaxation.clear();
            }
        }
        1 => {
            let q1 = &mut config.queues[1];
            if q1.relaxation.is_empty() {
                q1.relaxation = vec![RelaxationStep {
                    after_ms: 10_000,
                    action: RelaxationAction::Overflow { queue: "q0".into() },
                }];
            } else if q1.relaxation[0].after_ms > 20_000 {
                q1.relaxation.clear();
            } else {
                q1.relaxation[0].after_ms += 3_000;
            }
        }
        2 => {
            let q2 = &mut config.queues[2];
            q2.policy = policy(q2.policy as u8 + 1);
        }
        _ => {
            // Add or remove the extra agent `x` (removal refused while busy).
            if let Some(pos) = config.agents.iter().position(|a| a.id == "x") {
                config.agents.remove(pos);
            } else {
                config
                    .agents
                    .push(agent("x", &[("s0", 9), ("s1", 9), ("s2", 9)], profile(0)));
            }
        }
    }
    config
}
