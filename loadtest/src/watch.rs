//! The simulator's own view of the center, built only from what it sent and received:
//! each agent's presence and the capacity its offers and work hold (from the agent's
//! push stream, which is in the engine's order), and which interactions wait. From it,
//! two checks: no offer beyond an agent's capacity, and **work conservation** — no
//! interaction waiting while an eligible agent sat available with room for it.
//!
//! Work conservation is checked on a tick (every few seconds of the run): a breach is
//! an interaction that has waited at least `grace_ms` while an agent, unchanged for at
//! least `grace_ms`, was available, eligible (skills, channel) and had the units free.
//! The grace covers what is in flight (a push not read yet, a reply on its way). An
//! agent who declined (rejected, or let time out) an interaction is not counted free for
//! it while another available agent handles its queue's channel (the engine sends it
//! elsewhere first, as it should).

use crate::report::Violation;
use crate::scenario::{AgentProfile, Scenario};
use omniroute_transport::actors::Push;
use omniroute_transport::actors::engine::Presence;
use rustc_hash::{FxHashMap as HashMap, FxHashSet};

/// An agent as the simulator sees it.
#[derive(Clone, Debug)]
struct AgentView {
    id: String,
    /// Group index (eligibility and costs are per group).
    group: usize,
    /// Presence is `available`.
    available: bool,
    /// Units held by offers and work (until completion, or the end of wrap-up).
    held: u16,
    total: u16,
    /// When presence or held units last changed (ms).
    since_ms: u64,
    /// Interaction → (units, since when, channel), for what this agent holds.
    holds: HashMap<u64, (u16, u64, usize)>,
    /// Its session dropped pushes: its view is unknown from then on.
    blind: bool,
}

/// Where an interaction is, as far as the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Waiting since (ms).
    Waiting(u64),
    /// Offered to an agent (index).
    Offered(usize),
    /// Accepted or gone (abandoned): no longer watched once its arrival is known.
    Done,
}

#[derive(Clone, Debug)]
struct Watched {
    queue: usize,
    channel: usize,
    phase: Phase,
    /// Agents (indices) who rejected it or let an offer time out.
    declined: Vec<usize>,
    /// Its submit's reply has come (an offer may be pushed before it does).
    arrived: bool,
}

/// The simulator's view and its checks.
pub struct Watch {
    /// How long a breach must last to count, ms.
    pub grace_ms: u64,
    agents: Vec<AgentView>,
    /// Group × queue × channel → units one interaction costs, if the group is eligible.
    costs: Vec<Vec<Vec<Option<u16>>>>,
    /// Group × channel → units one interaction costs, if the group handles it.
    channel_costs: Vec<Vec<Option<u16>>>,
    /// Group × channel → most at once (`u16::MAX`: no limit but the units).
    max_concurrent: Vec<Vec<u16>>,
    /// Group × channel → the channels its work blocks.
    blocks: Vec<Vec<Vec<usize>>>,
    queue_ids: Vec<String>,
    channel_names: Vec<String>,
    watched: HashMap<u64, Watched>,
    /// Queue × channel → the agents (indices) eligible for its work.
    eligible: Vec<Vec<Vec<usize>>>,
    /// Interaction → the agents (indices) holding it (offered or working on it).
    holders: HashMap<u64, Vec<usize>>,
    /// Interactions held by more than one agent right now (a re-offer and the end of
    /// the previous one read in either order, or a double assignment).
    shared: std::collections::BTreeSet<u64>,
    /// Interactions already reported as waiting beside a free agent (once each).
    reported: FxHashSet<u64>,
    /// Breaches found, to be moved into the records.
    pub found: Vec<Violation>,
}

impl Watch {
    /// A view of `scenario`'s agents, all logged out, with `grace_ms` for conservation.
    pub fn new(scenario: &Scenario, grace_ms: u64) -> Self {
        let channel_names: Vec<String> = scenario
            .channel_defs()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let agents_defs = scenario.agents();
        let groups = scenario.agent_groups.len();
        let mut costs: Vec<Vec<Vec<Option<u16>>>> = vec![Vec::new(); groups];
        let mut max_concurrent = vec![Vec::new(); groups];
        let mut channel_costs = vec![Vec::new(); groups];
        let mut blocks = vec![Vec::new(); groups];
        for (group, def) in &agents_defs {
            if !costs[*group].is_empty() {
                continue;
            }
            let profile = AgentProfile::of(def);
            channel_costs[*group] = channel_names
                .iter()
                .map(|c| profile.costs.get(c).copied())
                .collect();
            max_concurrent[*group] = channel_names
                .iter()
                .map(|c| profile.max_concurrent.get(c).copied().unwrap_or(u16::MAX))
                .collect();
            blocks[*group] = channel_names
                .iter()
                .map(|c| {
                    profile.blocking.get(c).map_or(Vec::new(), |b| {
                        b.iter()
                            .filter_map(|x| channel_names.iter().position(|n| n == x))
                            .collect()
                    })
                })
                .collect();
            costs[*group] = scenario
                .queues
                .iter()
                .map(|q| {
                    channel_names
                        .iter()
                        .map(|c| profile.eligible(Some(q), c).then(|| profile.cost(c)))
                        .collect()
                })
                .collect();
        }
        let eligible: Vec<Vec<Vec<usize>>> = (0..scenario.queues.len())
            .map(|q| {
                (0..channel_names.len())
                    .map(|c| {
                        agents_defs
                            .iter()
                            .enumerate()
                            .filter(|(_, (group, _))| costs[*group][q][c].is_some())
                            .map(|(n, _)| n)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Watch {
            grace_ms,
            agents: agents_defs
                .into_iter()
                .map(|(group, def)| AgentView {
                    id: def.id.clone(),
                    group,
                    available: false,
                    held: 0,
                    total: def.capacity.total_units,
                    since_ms: 0,
                    holds: HashMap::default(),
                    blind: false,
                })
                .collect(),
            costs,
            channel_costs,
            max_concurrent,
            blocks,
            queue_ids: scenario.queues.iter().map(|q| q.id.clone()).collect(),
            channel_names,
            watched: HashMap::default(),
            eligible,
            holders: HashMap::default(),
            shared: Default::default(),
            reported: Default::default(),
            found: Vec::new(),
        }
    }

    /// Why agent `n` has no room for work of `queue` on `channel` (None: it has):
    /// units, the channel's maximum, or a channel whose work blocks it.
    fn no_room(&self, n: usize, queue: usize, channel: usize) -> Option<String> {
        let a = &self.agents[n];
        let Some(cost) = self.costs[a.group][queue][channel] else {
            return Some("not eligible".into());
        };
        if a.held + cost > a.total {
            return Some(format!("{} units held of {}", a.held, a.total));
        }
        let on = a.holds.values().filter(|h| h.2 == channel).count();
        let max = self.max_concurrent[a.group][channel];
        if on >= usize::from(max) {
            return Some(format!(
                "{on} on `{}` already, its maximum",
                self.channel_names[channel]
            ));
        }
        a.holds.values().find_map(|h| {
            self.blocks[a.group][h.2].contains(&channel).then(|| {
                format!(
                    "work on `{}` blocks `{}`",
                    self.channel_names[h.2], self.channel_names[channel]
                )
            })
        })
    }

    fn breach(&mut self, kind: &str, interaction: u64, agent: usize, at_ms: u64, detail: String) {
        self.found.push(Violation {
            kind: kind.into(),
            interaction,
            agent: self.agents[agent].id.clone(),
            at_ms,
            detail,
        });
    }

    /// The submit of interaction `id` (queue and channel indices) returned at `at_ms`.
    pub fn arrived(&mut self, id: u64, queue: usize, channel: usize, at_ms: u64) {
        match self.watched.get_mut(&id) {
            // Offered (or even taken) before the reply came.
            Some(w) if w.phase == Phase::Done => {
                self.watched.remove(&id);
            }
            Some(w) => w.arrived = true,
            None => {
                self.watched.insert(
                    id,
                    Watched {
                        queue,
                        channel,
                        phase: Phase::Waiting(at_ms),
                        declined: Vec::new(),
                        arrived: true,
                    },
                );
            }
        }
    }

    /// Interaction `id` no longer waits for anyone: accepted, or its customer left.
    pub fn finished(&mut self, id: u64) {
        if let Some(w) = self.watched.get_mut(&id) {
            if w.arrived {
                self.watched.remove(&id);
            } else {
                w.phase = Phase::Done;
            }
        }
    }

    fn hold(&mut self, agent: usize, id: u64, cost: u16, channel: usize, at_ms: u64) {
        let a = &mut self.agents[agent];
        if let Some((old, _, _)) = a.holds.insert(id, (cost, at_ms, channel)) {
            a.held -= old; // offered again (after a rebuild): one hold
        } else {
            let holders = self.holders.entry(id).or_default();
            holders.push(agent);
            if holders.len() > 1 {
                self.shared.insert(id);
            }
        }
        a.held += cost;
        a.since_ms = at_ms;
    }

    /// What agent `agent` already holds when its session opens (connect mode: work
    /// left from an earlier run on the same server): (interaction, channel, units).
    pub fn seed(&mut self, agent: usize, work: &[(u64, String, u16)]) {
        for (id, channel, units) in work {
            match self.channel_names.iter().position(|c| c == channel) {
                Some(ch) => self.hold(agent, *id, *units, ch, 0),
                // Work on a channel the scenario does not know: its view is unknown.
                None => self.agents[agent].blind = true,
            }
        }
    }

    fn release(&mut self, agent: usize, id: u64, at_ms: u64) {
        let a = &mut self.agents[agent];
        if let Some((units, _, _)) = a.holds.remove(&id) {
            a.held = a.held.saturating_sub(units);
            a.since_ms = at_ms;
            if let Some(holders) = self.holders.get_mut(&id) {
                holders.retain(|n| *n != agent);
                match holders.len() {
                    0 => {
                        self.holders.remove(&id);
                    }
                    1 => {
                        self.shared.remove(&id);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A push read from agent `agent`'s session at `at_ms`.
    pub fn push(&mut self, agent: usize, push: &Push, at_ms: u64) {
        match push {
            Push::Offer(offer) => {
                let id = offer.interaction.0;
                let queue = self.queue_ids.iter().position(|q| *q == offer.queue);
                let Some(channel) = self.channel_names.iter().position(|c| *c == offer.channel)
                else {
                    return; // a channel the scenario's agents do not handle
                };
                let group = self.agents[agent].group;
                let Some(queue) = queue else {
                    // Another queue of the server's (connect mode): not the scenario's
                    // to judge, but its units are held all the same.
                    let cost = self.channel_costs[group][channel].unwrap_or(1);
                    self.hold(agent, id, cost, channel, at_ms);
                    return;
                };
                let eligible = self.costs[group][queue][channel];
                // Offers go to agents with the skills and the channel, and available
                // ones only: an agent set away or logged out (its presence as last
                // pushed, in the log's order) takes none.
                let why = if eligible.is_none() {
                    Some("the agent lacks a required skill or the channel")
                } else if !self.agents[agent].blind && !self.agents[agent].available {
                    Some("the agent's presence was not available")
                } else {
                    None
                };
                if let Some(why) = why {
                    self.breach(
                        "offer_to_ineligible_agent",
                        id,
                        agent,
                        at_ms,
                        format!("queue `{}` on `{}`: {why}", offer.queue, offer.channel),
                    );
                }
                let cost = eligible.unwrap_or(1);
                if eligible.is_some()
                    && !self.agents[agent].blind
                    && !self.agents[agent].holds.contains_key(&id)
                    && let Some(why) = self.no_room(agent, queue, channel)
                {
                    self.breach(
                        "agent_over_capacity",
                        id,
                        agent,
                        at_ms,
                        format!("offered with no room: {why}"),
                    );
                }
                self.hold(agent, id, cost, channel, at_ms);
                let w = self.watched.entry(id).or_insert(Watched {
                    queue,
                    channel,
                    phase: Phase::Offered(agent),
                    declined: Vec::new(),
                    arrived: false,
                });
                if w.phase != Phase::Done {
                    w.phase = Phase::Offered(agent);
                }
            }
            Push::OfferEnded {
                interaction,
                reason,
            } => {
                let id = interaction.0;
                self.release(agent, id, at_ms);
                match reason.as_str() {
                    "customer_left" => self.finished(id),
                    _ => {
                        // Back to waiting only if this agent's offer was the live
                        // one (a re-offer to another may have been read first).
                        if let Some(w) = self.watched.get_mut(&id)
                            && w.phase == Phase::Offered(agent)
                        {
                            w.phase = Phase::Waiting(at_ms);
                            if (reason == "rejected" || reason == "timed_out")
                                && !w.declined.contains(&agent)
                            {
                                w.declined.push(agent);
                            }
                        }
                    }
                }
            }
            Push::Assigned { interaction } => self.finished(interaction.0),
            Push::Completed {
                interaction,
                wrap_up_until_ms: None,
            }
            | Push::WrapUpEnded { interaction }
            | Push::TransferredAway { interaction, .. } => {
                self.release(agent, interaction.0, at_ms)
            }
            Push::Presence { presence } => {
                let a = &mut self.agents[agent];
                a.available = *presence == Presence::Available;
                a.since_ms = at_ms;
            }
            Push::Lagged { .. } | Push::Resync(_) => self.agents[agent].blind = true,
            _ => {}
        }
    }

    /// Checks work conservation at `now_ms` (see the module's comment); breaches go to
    /// `found`, at most one per queue and channel per check.
    pub fn check(&mut self, now_ms: u64) {
        let Some(cutoff) = now_ms.checked_sub(self.grace_ms) else {
            return;
        };
        // One interaction held (offered or assigned) by two agents at once, for longer
        // than the grace (a re-offer and the end of the previous one are read from two
        // sessions, in either order).
        let mut twice = Vec::new();
        for id in &self.shared {
            if self.reported.contains(id) {
                continue;
            }
            let mut agents: Vec<usize> = self.holders[id]
                .iter()
                .copied()
                .filter(|n| {
                    let a = &self.agents[*n];
                    !a.blind && a.holds.get(id).is_some_and(|h| h.1 <= cutoff)
                })
                .collect();
            if agents.len() > 1 {
                agents.sort_unstable();
                twice.push((*id, agents));
            }
        }
        for (id, agents) in twice {
            self.reported.insert(id);
            let names: Vec<&str> = agents.iter().map(|n| self.agents[*n].id.as_str()).collect();
            let detail = format!("offered to or held by {} at once", names.join(" and "));
            self.breach("assigned_twice", id, agents[1], now_ms, detail);
        }
        // Keys (queue, channel) with something waiting long enough: the oldest.
        let mut oldest: HashMap<(usize, usize), (u64, u64)> = HashMap::default();
        // Only work this run submitted (an offer of another run's leftover work, say,
        // is never judged).
        for (id, w) in &self.watched {
            if let Phase::Waiting(since) = w.phase
                && since <= cutoff
                && w.arrived
            {
                let e = oldest.entry((w.queue, w.channel)).or_insert((since, *id));
                if (since, *id) < *e {
                    *e = (since, *id);
                }
            }
        }
        if oldest.is_empty() {
            return;
        }
        let mut keys: Vec<((usize, usize), (u64, u64))> = oldest.into_iter().collect();
        keys.sort_unstable();
        for ((queue, channel), _) in keys {
            // Agents available for this key (busy or not), and those free for it now.
            let mut available = Vec::new();
            let mut free = Vec::new();
            for &n in &self.eligible[queue][channel] {
                let a = &self.agents[n];
                if !a.available || a.blind {
                    continue;
                }
                available.push(n);
                if a.since_ms <= cutoff && self.no_room(n, queue, channel).is_none() {
                    free.push(n);
                }
            }
            if free.is_empty() {
                continue;
            }
            // The oldest waiting interaction of the key some free agent may take.
            let mut waiting: Vec<(u64, u64)> = self
                .watched
                .iter()
                .filter(|(_, w)| w.queue == queue && w.channel == channel && w.arrived)
                .filter_map(|(id, w)| match w.phase {
                    Phase::Waiting(since) if since <= cutoff && !self.reported.contains(id) => {
                        Some((since, *id))
                    }
                    _ => None,
                })
                .collect();
            waiting.sort_unstable();
            let hit = waiting.iter().find_map(|(since, id)| {
                let w = &self.watched[id];
                let others = available.iter().any(|n| !w.declined.contains(n));
                free.iter()
                    .find(|n| !(w.declined.contains(n) && others))
                    .map(|n| (*since, *id, *n))
            });
            if let Some((since, id, agent)) = hit {
                let a = &self.agents[agent];
                let detail = format!(
                    "waiting in queue `{}` on `{}` since {since} ms while the agent was available with {} of {} units free since {} ms",
                    self.queue_ids[queue],
                    self.channel_names[channel],
                    a.total - a.held,
                    a.total,
                    a.since_ms
                );
                self.reported.insert(id);
                self.breach("waiting_while_agent_free", id, agent, now_ms, detail);
            }
        }
    }

    /// Agents whose view is unknown (their sessions dropped pushes or were
    /// resynchronised, or they held work on channels the scenario does not know).
    pub fn blind_agents(&self) -> usize {
        self.agents.iter().filter(|a| a.blind).count()
    }

    /// Agent `n`'s id.
    pub fn agent_id(&self, n: usize) -> &str {
        &self.agents[n].id
    }

    /// Whether some agent is available, eligible and has room for work of `queue` on
    /// `channel` now, as far as the simulator knows.
    pub fn free_for(&self, queue: usize, channel: usize) -> bool {
        self.eligible[queue][channel].iter().any(|&n| {
            let a = &self.agents[n];
            a.available && !a.blind && self.no_room(n, queue, channel).is_none()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omniroute_transport::actors::OfferPush;
    use omniroute_transport::actors::engine::InteractionId;
    use std::sync::Arc;

    /// Three single-unit voice agents (`a-0`, `a-1`, `a-2`; all logged out until told)
    /// and one voice queue.
    fn watch() -> Watch {
        let s = crate::scenario::test_scenario(
            "",
            "count = 3\nskills = { general = 5 }\nchannels = { voice = 1 }",
        );
        Watch::new(&s, 1_000)
    }

    fn voice(w: &Watch) -> usize {
        w.channel_names.iter().position(|c| c == "voice").unwrap()
    }

    fn offer(id: u64) -> Push {
        Push::Offer(Arc::new(OfferPush {
            interaction: InteractionId(id),
            queue: "q".into(),
            channel: "voice".into(),
            offer_seq: 1,
            deadline_ms: 0,
            auto_accepted: false,
            customer: "c".into(),
            attributes: Default::default(),
            transcript: Vec::new(),
        }))
    }

    fn available() -> Push {
        Push::Presence {
            presence: Presence::Available,
        }
    }

    fn kinds(w: &Watch) -> Vec<(&str, u64, &str)> {
        w.found
            .iter()
            .map(|v| (v.kind.as_str(), v.interaction, v.agent.as_str()))
            .collect()
    }

    #[test]
    fn an_offer_to_an_agent_away_or_logged_out_is_a_breach() {
        let mut w = watch();
        w.push(0, &offer(1), 10); // never logged in
        w.push(1, &available(), 0);
        w.push(1, &offer(2), 10); // available: fine
        w.push(2, &available(), 0);
        w.push(
            2,
            &Push::Presence {
                presence: Presence::Away {
                    reason: "break".into(),
                },
            },
            20,
        );
        w.push(2, &offer(3), 30);
        assert_eq!(
            kinds(&w),
            vec![
                ("offer_to_ineligible_agent", 1, "a-0"),
                ("offer_to_ineligible_agent", 3, "a-2")
            ]
        );
    }

    #[test]
    fn work_left_waiting_beside_a_free_agent_is_a_breach_once_the_grace_is_over() {
        let mut w = watch();
        let ch = voice(&w);
        w.push(0, &available(), 0);
        w.arrived(7, 0, ch, 500);
        w.check(1_400); // within the grace: in flight, not a breach
        assert!(w.found.is_empty());
        w.check(1_600);
        assert_eq!(kinds(&w), vec![("waiting_while_agent_free", 7, "a-0")]);
        w.check(5_000); // reported once
        assert_eq!(w.found.len(), 1);
    }

    #[test]
    fn busy_away_or_declining_agents_are_not_free() {
        let mut w = watch();
        let ch = voice(&w);
        // a-0 is busy with 1; 2 waits; a-1 is logged out.
        w.push(0, &available(), 0);
        w.push(0, &offer(1), 10);
        w.push(
            0,
            &Push::Assigned {
                interaction: InteractionId(1),
            },
            20,
        );
        w.arrived(1, 0, ch, 10);
        w.arrived(2, 0, ch, 30);
        w.check(10_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        // a-0 completes with wrap-up: still held until the wrap-up ends.
        w.push(
            0,
            &Push::Completed {
                interaction: InteractionId(1),
                wrap_up_until_ms: Some(20_000),
            },
            11_000,
        );
        w.check(15_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        w.push(
            0,
            &Push::WrapUpEnded {
                interaction: InteractionId(1),
            },
            20_000,
        );
        // Set away by the engine at once: not free.
        w.push(
            0,
            &Push::Presence {
                presence: Presence::Away {
                    reason: "missed offers".into(),
                },
            },
            20_000,
        );
        w.check(30_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        // Back, and it gets 2 but rejects it; a-1 logs in: 2 must go to a-1, not
        // back to a-0.
        w.push(0, &available(), 30_000);
        w.push(0, &offer(2), 30_000);
        w.push(
            0,
            &Push::OfferEnded {
                interaction: InteractionId(2),
                reason: "rejected".into(),
            },
            31_000,
        );
        w.push(1, &available(), 31_000);
        w.push(1, &offer(3), 31_000); // a-1 busy with something else
        w.check(40_000);
        assert!(
            w.found.is_empty(),
            "a-0 declined 2 while a-1 is available: {:?}",
            w.found
        );
        // a-1 frees up and 2 is still left waiting: a breach, named with a-1.
        w.push(
            1,
            &Push::OfferEnded {
                interaction: InteractionId(3),
                reason: "customer_left".into(),
            },
            41_000,
        );
        w.check(43_000);
        assert_eq!(kinds(&w), vec![("waiting_while_agent_free", 2, "a-1")]);
    }

    #[test]
    fn work_this_run_did_not_submit_is_never_judged() {
        let mut w = watch();
        w.push(0, &available(), 0);
        w.push(1, &available(), 0);
        // Another run's leftover work, offered to a-0, left to time out.
        w.push(0, &offer(99), 10);
        w.push(
            0,
            &Push::OfferEnded {
                interaction: InteractionId(99),
                reason: "timed_out".into(),
            },
            30_000,
        );
        w.check(60_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
    }

    #[test]
    fn an_offer_to_an_ineligible_agent_is_a_breach() {
        let s = crate::scenario::test_scenario(
            "[[queues]]\nid = \"expert\"\nchannels = [\"voice\"]\nskills = { general = 8 }\nhandle_time = { dist = \"fixed\", s = 60 }",
            "count = 1\nskills = { general = 5 }\nchannels = { voice = 1 }",
        );
        let mut w = Watch::new(&s, 1_000);
        w.push(0, &available(), 0);
        let Push::Offer(o) = offer(5) else {
            unreachable!()
        };
        let mut o = (*o).clone();
        o.queue = "expert".into();
        w.push(0, &Push::Offer(Arc::new(o)), 10);
        assert_eq!(kinds(&w), vec![("offer_to_ineligible_agent", 5, "a-0")]);
    }

    #[test]
    fn one_interaction_held_by_two_agents_is_a_breach_once_the_grace_is_over() {
        let mut w = watch();
        let ch = voice(&w);
        w.push(0, &available(), 0);
        w.push(1, &available(), 0);
        w.arrived(1, 0, ch, 0);
        w.push(0, &offer(1), 10);
        // a-1 reads its offer of 1 before a-0 reads the end of its own: in flight.
        w.push(1, &offer(1), 20);
        w.check(500);
        assert!(w.found.is_empty(), "{:?}", w.found);
        w.check(2_000);
        assert_eq!(kinds(&w), vec![("assigned_twice", 1, "a-1")]);
    }

    #[test]
    fn channel_maxima_and_blocking_are_capacity_too() {
        let s = crate::scenario::test_scenario(
            "",
            "count = 1\nskills = { general = 5 }\ntotal_units = 3\nchannels = { voice = 1, chat = 1 }\nmax_concurrent = { chat = 2 }\nblocking = { voice = [\"chat\"] }",
        );
        let mut w = Watch::new(&s, 1_000);
        let on = |id: u64, channel: &str| {
            let Push::Offer(o) = offer(id) else {
                unreachable!()
            };
            let mut o = (*o).clone();
            o.channel = channel.into();
            Push::Offer(Arc::new(o))
        };
        w.push(0, &available(), 0);
        w.push(0, &on(1, "chat"), 10);
        w.push(0, &on(2, "chat"), 20);
        assert!(w.found.is_empty(), "{:?}", w.found);
        w.push(0, &on(3, "chat"), 30); // a third chat: over the maximum of 2
        assert_eq!(kinds(&w), vec![("agent_over_capacity", 3, "a-0")]);
        w.found.clear();
        for id in [1, 2, 3] {
            w.push(
                0,
                &Push::Completed {
                    interaction: InteractionId(id),
                    wrap_up_until_ms: None,
                },
                40,
            );
        }
        w.push(0, &on(4, "voice"), 50);
        // A chat waits while the agent is on a call: blocked, not free.
        let chat = w.channel_names.iter().position(|c| c == "chat").unwrap();
        w.arrived(5, 0, chat, 60);
        w.check(10_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        w.push(0, &on(5, "chat"), 10_000);
        assert_eq!(kinds(&w), vec![("agent_over_capacity", 5, "a-0")]);
        assert!(
            w.found[0].detail.contains("blocks"),
            "{}",
            w.found[0].detail
        );
    }

    #[test]
    fn the_end_of_an_old_offer_read_after_the_new_one_leaves_it_offered() {
        let mut w = watch();
        let ch = voice(&w);
        for a in 0..3 {
            w.push(a, &available(), 0);
        }
        w.arrived(1, 0, ch, 0);
        w.push(0, &offer(1), 10);
        // Re-offered to a-1 (a-0 rejected); a-1's session is read first.
        w.push(1, &offer(1), 20);
        w.push(
            0,
            &Push::OfferEnded {
                interaction: InteractionId(1),
                reason: "rejected".into(),
            },
            25,
        );
        // a-1 rings for a while, a-2 sits free: 1 is offered, not waiting.
        w.check(10_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
    }

    #[test]
    fn work_of_other_queues_and_work_held_before_the_run_take_room() {
        let mut w = watch();
        let ch = voice(&w);
        w.push(0, &available(), 0);
        w.push(1, &available(), 0);
        // a-0 holds a call of another queue of the server's; a-1 one from before.
        let Push::Offer(o) = offer(50) else {
            unreachable!()
        };
        let mut o = (*o).clone();
        o.queue = "elsewhere".into();
        w.push(0, &Push::Offer(Arc::new(o)), 5);
        w.seed(1, &[(60, "voice".into(), 1)]);
        w.arrived(7, 0, ch, 10);
        w.check(10_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        assert!(!w.free_for(0, ch));
        // Work on a channel the scenario does not know: that agent is not judged.
        w.seed(2, &[(61, "carrier-pigeon".into(), 1)]);
        assert!(w.agents[2].blind);
        assert_eq!(w.blind_agents(), 1);
    }

    #[test]
    fn an_offer_beyond_capacity_is_a_breach() {
        let mut w = watch();
        let ch = voice(&w);
        w.push(0, &available(), 0);
        w.push(0, &offer(1), 10);
        w.arrived(1, 0, ch, 10);
        w.push(0, &offer(2), 20);
        assert_eq!(kinds(&w), vec![("agent_over_capacity", 2, "a-0")]);
    }

    #[test]
    fn an_offer_pushed_before_the_submit_returns_is_not_waiting() {
        let mut w = watch();
        let ch = voice(&w);
        w.push(0, &available(), 0);
        w.push(1, &available(), 0);
        w.push(0, &offer(1), 10);
        w.push(
            0,
            &Push::Assigned {
                interaction: InteractionId(1),
            },
            10,
        );
        w.arrived(1, 0, ch, 10);
        w.check(60_000);
        assert!(w.found.is_empty(), "{:?}", w.found);
        assert!(w.watched.is_empty());
    }
}
