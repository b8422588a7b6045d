//! Property tests: long random sequences of operations against random small centers.
//!
//! After every operation the engine's own full check (`check_invariants`: capacity,
//! one offer/assignment per interaction, index consistency, work-conserving) must pass,
//! and the event stream is checked from outside: offers only to available agents holding
//! the required skills, at most one live offer and one assignment per interaction, and
//! every pull takes the best waiting interaction the agent could take. Running the same
//! sequence twice must give the same events (determinism).
//!
//! `PROPTEST_CASES=1000 cargo test -p omniroute-engine --test invariants` for a longer run.

mod common;

use common::random::*;
use common::*;
use omniroute_engine::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Minimum proficiency per skill an agent needs for `queue` after `steps` relaxation
/// steps, plus the overflow queues reached.
fn requirement(config: &CenterConfig, queue: &str, steps: u16) -> (Vec<(String, u8)>, Vec<String>) {
    let q = config.queues.iter().find(|q| q.id == queue).unwrap();
    let mut required: Vec<(String, u8)> = q
        .required_skills
        .iter()
        .map(|r| (r.skill.clone(), r.min_proficiency))
        .collect();
    let mut overflow = Vec::new();
    for step in q.relaxation.iter().take(steps as usize) {
        match &step.action {
            RelaxationAction::LowerProficiency { skill, to } => {
                required.iter_mut().find(|(s, _)| s == skill).unwrap().1 = *to;
            }
            RelaxationAction::Overflow { queue } => overflow.push(queue.clone()),
            RelaxationAction::DropOptionalSkills => {}
        }
    }
    (required, overflow)
}

fn qualifies(config: &CenterConfig, agent: &str, required: &[(String, u8)]) -> bool {
    let a = config.agents.iter().find(|a| a.id == agent).unwrap();
    required.iter().all(|(skill, min)| {
        a.skills
            .iter()
            .any(|s| &s.skill == skill && s.proficiency >= *min)
    })
}

fn eligible(config: &CenterConfig, agent: &str, snapshot: &InteractionSnapshot) -> bool {
    let (required, overflow) =
        requirement(config, &snapshot.queue, snapshot.relaxation_steps_applied);
    qualifies(config, agent, &required)
        || overflow
            .iter()
            .any(|q| qualifies(config, agent, &requirement(config, q, 0).0))
}

struct Run {
    h: Harness,
    config: CenterConfig,
    presence: BTreeMap<String, Presence>,
    live_offer: BTreeMap<InteractionId, String>,
    assigned: BTreeMap<InteractionId, String>,
    submitted: Vec<InteractionId>,
}

impl Run {
    fn new(shape: &Shape) -> Run {
        let config = build(shape);
        Run {
            h: Harness::new(config.clone()),
            presence: config
                .agents
                .iter()
                .map(|a| (a.id.clone(), Presence::Offline))
                .collect(),
            config,
            live_offer: BTreeMap::new(),
            assigned: BTreeMap::new(),
            submitted: Vec::new(),
        }
    }

    fn agent_id(&self, n: usize) -> String {
        self.config.agents[n % self.config.agents.len()].id.clone()
    }

    fn work(&self, agent: &str, phase: &str, pick: usize) -> Option<InteractionId> {
        let work: Vec<_> = self
            .h
            .engine
            .agent(agent)
            .unwrap()
            .work
            .into_iter()
            .filter(|w| w.phase == phase)
            .collect();
        (!work.is_empty()).then(|| work[pick % work.len()].interaction)
    }

    fn waiting(&self) -> Vec<(InteractionSnapshot, f64, TimeMs)> {
        let mut all = Vec::new();
        let mut seen = BTreeSet::new();
        for q in QUEUES {
            for w in self.h.engine.queue(q, self.h.now).unwrap().waiting {
                if seen.insert(w.interaction) {
                    let snapshot = self.h.engine.interaction(w.interaction).unwrap();
                    all.push((snapshot, w.effective_priority, w.enqueued_ms));
                }
            }
        }
        all
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if std::env::var_os("OMNIROUTE_TRACE").is_some() {
            eprintln!("t={} {op:?}", self.h.now);
        }
        if let Op::Advance { ms } = op {
            let to = self.h.now + ms;
            while let Some((due, timer)) = self.h.scheduler.pop_due(to) {
                self.h.now = self.h.now.max(due);
                if std::env::var_os("OMNIROUTE_TRACE").is_some() {
                    eprintln!("  t={} timer {timer:?}", self.h.now);
                }
                let before = self.waiting();
                let (_, events) = self.h.step(|e, now, out| e.on_timer(timer, now, out));
                self.observe(&before, &events)?;
            }
            self.h.now = to;
            return Ok(());
        }
        let before = self.waiting();
        let (result, events): (Result<()>, Vec<Event>) = match op.clone() {
            Op::Presence { agent, kind } => {
                let id = self.agent_id(agent);
                let presence = match kind {
                    0 => Presence::Offline,
                    1 => Presence::Away {
                        reason: "break".into(),
                    },
                    _ => Presence::Available,
                };
                self.h
                    .step(|e, now, out| e.set_presence(&id, presence, now, out))
            }
            Op::Submit {
                channel,
                queue,
                priority,
                preferred,
            } => {
                let mut request =
                    NewInteraction::new(CHANNELS[channel], "c").to_queue(QUEUES[queue]);
                if let Some(p) = preferred {
                    request.preferred_agent = Some(self.agent_id(p));
                    request.preferred_fallback_ms = 4_000;
                }
                request.priority = Some(i32::from(priority));
                // Arrival side of the policy: the agent offered must be the one the
                // policy ranks first right now (true ranks, not the lazily refreshed
                // index), and if anyone is eligible the arrival must be offered.
                let explanation = self
                    .h
                    .engine
                    .explain_next(QUEUES[queue], CHANNELS[channel], self.h.now)
                    .unwrap();
                // With a preferred agent, only that agent may get it now (if eligible).
                let expected = match &request.preferred_agent {
                    None => explanation.winner,
                    Some(p) => explanation
                        .candidates
                        .iter()
                        .find(|c| &c.agent == p && c.excluded.is_none())
                        .map(|c| c.agent.clone()),
                };
                let (r, ev) = self.h.step(|e, now, out| e.submit(request, now, out));
                if let Ok(id) = &r {
                    self.submitted.push(*id);
                    prop_assert_eq!(
                        offered_to(&ev, *id),
                        expected,
                        "arrival {} in {} offered to the wrong agent",
                        id,
                        QUEUES[queue]
                    );
                }
                (r.map(|_| ()), ev)
            }
            Op::Accept { agent, pick } => {
                let id = self.agent_id(agent);
                let Some(i) = self.work(&id, "offered", pick) else {
                    return Ok(());
                };
                self.h.step(|e, now, out| e.accept(&id, i, now, out))
            }
            Op::Reject { agent, pick } => {
                let id = self.agent_id(agent);
                let Some(i) = self.work(&id, "offered", pick) else {
                    return Ok(());
                };
                self.h.step(|e, now, out| e.reject(&id, i, now, out))
            }
            Op::Complete { agent, pick, code } => {
                let id = self.agent_id(agent);
                let Some(i) = self.work(&id, "assigned", pick) else {
                    return Ok(());
                };
                let code = ["ok", "ko", "other"][code];
                self.h
                    .step(|e, now, out| e.complete(&id, i, Some(code), now, out))
            }
            Op::Abandon { pick } => {
                if self.submitted.is_empty() {
                    return Ok(());
                }
                let i = self.submitted[pick % self.submitted.len()];
                self.h.step(|e, now, out| e.abandon(i, now, out))
            }
            Op::TransferQueue { agent, pick, queue } => {
                let id = self.agent_id(agent);
                let Some(i) = self.work(&id, "assigned", pick) else {
                    return Ok(());
                };
                let to = TransferTarget::Queue(QUEUES[queue].into());
                self.h.step(|e, now, out| e.transfer(&id, i, to, now, out))
            }
            Op::TransferAgent { agent, pick, to } => {
                let id = self.agent_id(agent);
                let Some(i) = self.work(&id, "assigned", pick) else {
                    return Ok(());
                };
                let to = TransferTarget::Agent(self.agent_id(to));
                self.h.step(|e, now, out| e.transfer(&id, i, to, now, out))
            }
            Op::Reconfigure { variant } => {
                // Runtime configuration changes while work is in flight.
                let config = reconfigured(&self.config, variant);
                let (r, ev) = self
                    .h
                    .step(|e, now, out| e.reconfigure(config.clone(), now, out));
                if r.is_ok() {
                    for a in &config.agents {
                        self.presence
                            .entry(a.id.clone())
                            .or_insert(Presence::Offline);
                    }
                    self.config = config;
                }
                (r, ev)
            }
            Op::Advance { .. } => unreachable!(),
        };
        if result.is_err() {
            prop_assert!(
                events.is_empty(),
                "a refused {op:?} emitted events: {events:?}"
            );
        }
        self.observe(&before, &events)
    }

    /// Checks the events of one operation from outside, then the engine's own check.
    fn observe(
        &mut self,
        before: &[(InteractionSnapshot, f64, TimeMs)],
        events: &[Event],
    ) -> Result<(), TestCaseError> {
        let mut transferred_to_agent = BTreeSet::new();
        for event in events {
            match event {
                Event::PresenceChanged { agent, presence } => {
                    self.presence.insert(agent.to_string(), presence.clone());
                }
                Event::Transferred {
                    interaction, to, ..
                } => {
                    self.assigned.remove(interaction);
                    if matches!(to, TransferTarget::Agent(_)) {
                        transferred_to_agent.insert(*interaction);
                    }
                }
                Event::Offered {
                    interaction, agent, ..
                } => {
                    prop_assert!(
                        !self.live_offer.contains_key(interaction),
                        "interaction {interaction} offered to {agent} while offered to {:?}",
                        self.live_offer.get(interaction)
                    );
                    prop_assert!(
                        !self.assigned.contains_key(interaction),
                        "interaction {interaction} offered while assigned"
                    );
                    prop_assert_eq!(
                        self.presence.get(&**agent),
                        Some(&Presence::Available),
                        "offer of {} to {} who is not available",
                        interaction,
                        agent
                    );
                    if !transferred_to_agent.contains(interaction) {
                        let snapshot = self.h.engine.interaction(*interaction).unwrap();
                        prop_assert!(
                            eligible(&self.config, agent, &snapshot),
                            "offer of {} to {} who lacks the skills for {}",
                            interaction,
                            agent,
                            snapshot.queue
                        );
                        self.check_order(before, *interaction, agent)?;
                    }
                    self.live_offer.insert(*interaction, agent.to_string());
                }
                Event::Accepted { interaction, agent } => {
                    let offered = self.live_offer.remove(interaction);
                    prop_assert_eq!(offered.as_deref(), Some(&**agent));
                    prop_assert!(
                        self.assigned
                            .insert(*interaction, agent.to_string())
                            .is_none(),
                        "interaction {} assigned twice",
                        interaction
                    );
                }
                Event::Rejected { interaction, .. }
                | Event::OfferTimedOut { interaction, .. }
                | Event::OfferRescinded { interaction, .. } => {
                    prop_assert!(self.live_offer.remove(interaction).is_some());
                }
                Event::Completed { interaction, .. } => {
                    prop_assert!(self.assigned.remove(interaction).is_some());
                }
                _ => {}
            }
        }
        if std::env::var_os("OMNIROUTE_TRACE").is_some() {
            for e in events {
                eprintln!("    {e:?}");
            }
        }
        let violations = self.h.engine.check_invariants(self.h.now);
        if !violations.is_empty() && std::env::var_os("OMNIROUTE_TRACE").is_some() {
            for id in self.h.engine.interaction_ids() {
                eprintln!("{:?}", self.h.engine.interaction(id).unwrap());
            }
        }
        prop_assert!(violations.is_empty(), "after {events:#?}: {violations:#?}");
        Ok(())
    }

    /// An agent that pulled `taken` must not have left a better interaction waiting that
    /// it could take (same channel, eligible, not declined by it).
    fn check_order(
        &self,
        before: &[(InteractionSnapshot, f64, TimeMs)],
        taken: InteractionId,
        agent: &str,
    ) -> Result<(), TestCaseError> {
        let Some((x, x_priority, x_enqueued)) = before.iter().find(|(s, ..)| s.id == taken) else {
            return Ok(()); // arrived in this operation
        };
        for (y, y_priority, y_enqueued) in before {
            let better = (std::cmp::Reverse(*y_priority), *y_enqueued, y.id)
                < (std::cmp::Reverse(*x_priority), *x_enqueued, x.id);
            if !better || y.channel != x.channel || !eligible(&self.config, agent, y) {
                continue;
            }
            let now = self.h.engine.interaction(y.id).unwrap();
            if now.state != InteractionState::Queued || now.declined.iter().any(|d| d == agent) {
                continue;
            }
            if y.preferred_agent.as_ref().is_some_and(|p| p != agent)
                && y.preferred_until_ms
                    .is_some_and(|until| self.h.now <= until)
            {
                continue; // reserved for its preferred agent
            }
            prop_assert!(
                false,
                "agent {} took {} (priority {}, enqueued {}) while better {} (priority {}, enqueued {}) waited",
                agent,
                taken,
                x_priority,
                x_enqueued,
                y.id,
                y_priority,
                y_enqueued
            );
        }
        Ok(())
    }
}

fn run(shape: &Shape, ops: &[Op]) -> Result<Vec<Event>, TestCaseError> {
    let mut r = Run::new(shape);
    for op in ops {
        r.apply(op)?;
    }
    Ok(r.h.events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_operation_sequences(
        shape in shape_strategy(),
        ops in prop::collection::vec(op_strategy(6), 150..400),
    ) {
        let first = run(&shape, &ops)?;
        let second = run(&shape, &ops)?;
        prop_assert_eq!(first, second, "same inputs must give the same decisions");
    }
}
