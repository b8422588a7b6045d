//! Routing semantics, one behaviour per test, as an administrator would observe them.

mod common;

use common::*;
use omniroute_engine::*;

fn queue_mut<'a>(config: &'a mut CenterConfig, id: &str) -> &'a mut QueueDef {
    config
        .queues
        .iter_mut()
        .find(|q| q.id == id)
        .expect("queue exists")
}

#[test]
fn arriving_chat_goes_to_the_longest_idle_available_agent() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
        voice_chat_agent("cy", &[("tech", 5)]),
    ]));
    h.available("ana");
    h.available("ben");
    h.available("cy");
    // ana finishes work at t=10s, ben at t=5s: ben has been idle longer.
    h.now = 1_000;
    let (a, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (b, ev) = h.submit(NewInteraction::new("voice", "c2"));
    assert_eq!(
        offered_to(&h.events, a).as_deref(),
        Some("ana"),
        "ties break by agent order"
    );
    assert_eq!(offered_to(&ev, b).as_deref(), Some("ben"));
    h.step(|e, _, out| e.accept("ben", b, 1_100, out))
        .0
        .unwrap();
    h.step(|e, _, out| e.accept("ana", a, 1_100, out))
        .0
        .unwrap();
    h.step(|e, _, out| e.complete("ben", b, None, 5_000, out))
        .0
        .unwrap();
    h.step(|e, _, out| e.complete("ana", a, None, 10_000, out))
        .0
        .unwrap();
    h.now = 11_000;
    let (c, ev) = h.submit(NewInteraction::new("voice", "c3"));
    assert_eq!(
        offered_to(&ev, c).as_deref(),
        Some("ben"),
        "ben idle since 5s beats ana idle since 10s"
    );
    h.assert_invariants();
}

#[test]
fn most_skilled_prefers_the_highest_proficiency_sum() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 3), ("english", 9)]),
        voice_chat_agent("ben", &[("billing", 9)]),
    ]);
    let q = queue_mut(&mut config, "billing");
    q.policy = AssignmentPolicy::MostSkilled;
    q.optional_skills = vec![SkillRequirement {
        skill: "english".into(),
        min_proficiency: 1,
    }];
    let mut h = Harness::new(config);
    h.available("ana");
    h.available("ben");
    let (id, ev) = h.submit(NewInteraction::new("voice", "c1"));
    // ana: 3 + 9 (optional english) = 12 > ben: 9.
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ana"));
    let explanation = h.engine.explain(id, h.now).unwrap();
    assert_eq!(explanation.policy, AssignmentPolicy::MostSkilled);
    h.assert_invariants();
}

#[test]
fn least_occupied_spreads_chats_across_agents() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]);
    queue_mut(&mut config, "billing").policy = AssignmentPolicy::LeastOccupied;
    let mut h = Harness::new(config);
    h.available("ana");
    h.available("ben");
    let mut per_agent = std::collections::BTreeMap::<String, u32>::new();
    for n in 0..6 {
        let (id, ev) = h.submit(NewInteraction::new("chat", &format!("c{n}")));
        *per_agent
            .entry(offered_to(&ev, id).expect("offered"))
            .or_default() += 1;
    }
    // 3 chats of 3 units each fit in 10 units: 3 each, alternating.
    assert_eq!(per_agent.get("ana"), Some(&3));
    assert_eq!(per_agent.get("ben"), Some(&3));
    let (seventh, ev) = h.submit(NewInteraction::new("chat", "c7"));
    assert!(
        offered_to(&ev, seventh).is_none(),
        "both agents are full (9 of 10 units)"
    );
    assert!(ev.iter().any(|e| matches!(e, Event::Queued { .. })));
    h.assert_invariants();
}

#[test]
fn round_robin_rotates_offers() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
        voice_chat_agent("cy", &[("billing", 5)]),
    ]);
    queue_mut(&mut config, "billing").policy = AssignmentPolicy::RoundRobin;
    let mut h = Harness::new(config);
    for a in ["ana", "ben", "cy"] {
        h.available(a);
    }
    let mut order = Vec::new();
    for n in 0..6 {
        let (id, ev) = h.submit(NewInteraction::new("email", &format!("c{n}")));
        order.push(offered_to(&ev, id).unwrap());
    }
    assert_eq!(order, ["ana", "ben", "cy", "ana", "ben", "cy"]);
}

#[test]
fn freed_agent_takes_highest_priority_then_oldest_across_its_queues() {
    let mut config = center(vec![voice_chat_agent(
        "ana",
        &[("billing", 5), ("tech", 5)],
    )]);
    queue_mut(&mut config, "tech").base_priority = 5;
    let mut h = Harness::new(config);
    h.available("ana");
    let (first, _) = h.submit(NewInteraction::new("voice", "busy-maker"));
    h.now = 1_000;
    let (old_billing, _) = h.submit(NewInteraction::new("voice", "c1").to_queue("billing"));
    h.now = 2_000;
    let (tech, _) = h.submit(NewInteraction::new("voice", "c2").to_queue("tech"));
    h.now = 3_000;
    let (new_billing, _) = h.submit(NewInteraction::new("voice", "c3").to_queue("billing"));
    let waiting: Vec<_> = h
        .engine
        .queue("billing", h.now)
        .unwrap()
        .waiting
        .iter()
        .map(|w| w.interaction)
        .collect();
    assert_eq!(
        waiting,
        vec![old_billing, new_billing],
        "same priority: oldest first"
    );
    h.step(|e, now, out| e.accept("ana", first, now, out))
        .0
        .unwrap();
    let (_, ev) = h.step(|e, now, out| e.complete("ana", first, None, now, out));
    assert_eq!(
        offered_to(&ev, tech).as_deref(),
        Some("ana"),
        "priority 5 beats older priority 0"
    );
    h.assert_invariants();
}

#[test]
fn aging_lets_an_old_low_priority_interaction_overtake() {
    let mut config = center(vec![voice_chat_agent("ana", &[("billing", 5)])]);
    // 1 point per second of waiting.
    queue_mut(&mut config, "billing").aging_millipoints_per_second = 1_000;
    let mut h = Harness::new(config);
    h.available("ana");
    let (blocker, _) = h.submit(NewInteraction::new("voice", "b"));
    h.now = 0;
    let (old_low, _) = h.submit(NewInteraction::new("voice", "low"));
    h.now = 8_000;
    let mut high = NewInteraction::new("voice", "high");
    high.priority = Some(5);
    let (new_high, _) = h.submit(high);
    // At t=8s: old_low has 0 + 8 = 8 points, new_high has 5 + 0.
    let order: Vec<_> = h
        .engine
        .queue("billing", h.now)
        .unwrap()
        .waiting
        .iter()
        .map(|w| w.interaction)
        .collect();
    assert_eq!(order, vec![old_low, new_high]);
    h.step(|e, now, out| e.accept("ana", blocker, now, out))
        .0
        .unwrap();
    let (_, ev) = h.step(|e, now, out| e.complete("ana", blocker, None, now, out));
    assert_eq!(offered_to(&ev, old_low).as_deref(), Some("ana"));
}

#[test]
fn reject_reoffers_to_the_next_agent_and_not_the_same_one() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ben");
    let (busy, _) = h.submit(NewInteraction::new("voice", "c0"));
    assert_eq!(offered_to(&h.events, busy).as_deref(), Some("ben"));
    h.step(|e, now, out| e.accept("ben", busy, now, out))
        .0
        .unwrap();
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    assert_eq!(offered_to(&h.events, id).as_deref(), Some("ana"));
    // Ben is available (on a call): Ana's reject must not bounce back to Ana.
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert!(
        offered_to(&ev, id).is_none(),
        "ben exists, so ana is not offered again"
    );
    assert_eq!(
        h.engine.interaction(id).unwrap().state,
        InteractionState::Queued
    );
    let explanation = h.engine.explain(id, h.now).unwrap();
    let ana = explanation
        .candidates
        .iter()
        .find(|c| c.agent == "ana")
        .unwrap();
    assert_eq!(ana.excluded, Some(Exclusion::AlreadyDeclined));
    h.assert_invariants();
    let (_, ev) = h.step(|e, now, out| e.complete("ben", busy, None, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ben"));
    h.assert_invariants();
}

#[test]
fn others_who_are_away_or_cannot_take_the_channel_do_not_hold_work_back() {
    // Ana handles voice only; Ben email only. The queue takes every channel.
    let mut h = Harness::new(center(vec![
        agent(
            "ana",
            &[("billing", 5)],
            CapacityProfile::simple(10, &["voice"]),
        ),
        agent(
            "ben",
            &[("billing", 5)],
            CapacityProfile::simple(10, &["email"]),
        ),
        voice_chat_agent("cy", &[("billing", 5)]),
    ]));
    h.available("ana");
    h.available("ben");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert_eq!(
        offered_to(&ev, id).as_deref(),
        Some("ana"),
        "ben cannot take voice: back to ana"
    );
    // Cy can take voice; while Cy is available Ana is skipped, once Cy goes away it
    // comes back to Ana at once.
    h.available("cy");
    let (busy, _) = h.submit(NewInteraction::new("voice", "c2"));
    assert_eq!(offered_to(&h.events, busy).as_deref(), Some("cy"));
    h.step(|e, now, out| e.accept("cy", busy, now, out))
        .0
        .unwrap();
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert!(
        offered_to(&ev, id).is_none(),
        "cy (busy but available) exists"
    );
    let (_, ev) = h.step(|e, now, out| {
        e.set_presence(
            "cy",
            Presence::Away {
                reason: "lunch".into(),
            },
            now,
            out,
        )
    });
    assert_eq!(
        offered_to(&ev, id).as_deref(),
        Some("ana"),
        "no available other: back to ana"
    );
    h.assert_invariants();
}

#[test]
fn a_lone_agent_who_rejected_is_offered_again() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 5)])]));
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert_eq!(
        offered_to(&ev, id).as_deref(),
        Some("ana"),
        "no other agent exists"
    );
}

#[test]
fn timeouts_reoffer_and_consecutive_misses_set_the_agent_away() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]);
    config.settings.max_consecutive_misses = 2;
    queue_mut(&mut config, "billing").offer_timeout_ms = 10_000;
    let mut h = Harness::new(config);
    h.available("ana");
    let (first, _) = h.submit(NewInteraction::new("email", "c1"));
    let (second, _) = h.submit(NewInteraction::new("email", "c2"));
    h.available("ben");
    let ev = h.advance_to(10_000);
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::OfferTimedOut { interaction, .. } if *interaction == first)
        )
    );
    assert!(
        ev.iter().any(|e| matches!(e, Event::PresenceChanged { agent, presence: Presence::Away { reason } } if &**agent == "ana" && reason == "missed offers")),
        "two misses in a row set ana away: {ev:#?}"
    );
    assert_eq!(offered_to(&h.events, first).as_deref(), Some("ben"));
    assert_eq!(offered_to(&h.events, second).as_deref(), Some("ben"));
    assert_eq!(h.engine.agent("ana").unwrap().status, AgentStatus::Away);
    h.assert_invariants();
}

#[test]
fn auto_accept_channel_assigns_immediately() {
    let mut config = center(vec![voice_chat_agent("ana", &[("billing", 5)])]);
    config
        .channels
        .iter_mut()
        .find(|c| c.name == "voice")
        .unwrap()
        .auto_accept = true;
    let mut h = Harness::new(config);
    h.available("ana");
    let (id, ev) = h.submit(NewInteraction::new("voice", "c1"));
    assert!(ev.iter().any(|e| matches!(e, Event::Accepted { .. })));
    assert_eq!(
        h.engine.interaction(id).unwrap().state,
        InteractionState::Assigned
    );
    assert!(
        h.scheduler.is_empty(),
        "no offer timeout for an auto-accepted offer"
    );
}

#[test]
fn abandon_while_queued_or_offered_rescinds_cleanly() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 5)])]));
    h.available("ana");
    let (offered, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (queued, _) = h.submit(NewInteraction::new("voice", "c2"));
    h.step(|e, now, out| e.abandon(queued, now, out)).0.unwrap();
    assert_eq!(h.engine.queue("billing", h.now).unwrap().waiting_count, 0);
    let (_, ev) = h.step(|e, now, out| e.abandon(offered, now, out));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OfferRescinded {
            reason: RescindReason::CustomerLeft,
            ..
        }
    )));
    assert_eq!(h.engine.agent("ana").unwrap().used_units, 0);
    assert!(matches!(
        h.engine.accept("ana", offered, h.now, &mut Vec::new()),
        Err(EngineError::NotOfferedToAgent { .. })
    ));
    h.assert_invariants();
}

#[test]
fn wrap_up_holds_capacity_then_frees_it_and_pulls_work() {
    let mut config = center(vec![voice_chat_agent("ana", &[("billing", 5)])]);
    let q = queue_mut(&mut config, "billing");
    q.wrap_up_ms = 30_000;
    q.wrap_up_codes = vec!["resolved".into(), "callback".into()];
    let mut h = Harness::new(config);
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    h.step(|e, now, out| e.accept("ana", id, now, out))
        .0
        .unwrap();
    let (next, _) = h.submit(NewInteraction::new("voice", "c2"));
    let bad = h
        .engine
        .complete("ana", id, Some("sold"), h.now, &mut Vec::new());
    assert!(
        matches!(bad, Err(EngineError::InvalidWrapUpCode { .. })),
        "{bad:?}"
    );
    let none = h.engine.complete("ana", id, None, h.now, &mut Vec::new());
    assert!(matches!(none, Err(EngineError::WrapUpCodeRequired { .. })));
    h.now = 60_000;
    h.step(|e, now, out| e.complete("ana", id, Some("resolved"), now, out))
        .0
        .unwrap();
    assert_eq!(h.engine.agent("ana").unwrap().status, AgentStatus::WrapUp);
    assert_eq!(
        h.engine.interaction(next).unwrap().state,
        InteractionState::Queued,
        "wrap-up still holds voice"
    );
    let twice = h
        .engine
        .complete("ana", id, Some("resolved"), h.now, &mut Vec::new());
    assert!(
        matches!(twice, Err(EngineError::InvalidState { .. })),
        "{twice:?}"
    );
    let ev = h.advance_to(90_000);
    assert!(ev.iter().any(|e| matches!(e, Event::WrapUpEnded { .. })));
    assert_eq!(offered_to(&ev, next).as_deref(), Some("ana"));
    assert_eq!(
        h.engine.interaction(id).unwrap().state,
        InteractionState::Completed
    );
    h.assert_invariants();
}

#[test]
fn an_agent_ends_its_wrap_up_early_and_the_capacity_pulls_work_at_once() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("tom", &[("tech", 5)]),
    ]);
    queue_mut(&mut config, "billing").wrap_up_ms = 30_000;
    let mut h = Harness::new(config);
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    h.step(|e, now, out| e.accept("ana", id, now, out))
        .0
        .unwrap();
    let (next, _) = h.submit(NewInteraction::new("voice", "c2"));
    // No such interaction.
    let unknown = h
        .engine
        .end_wrap_up_early("ana", InteractionId(999), h.now, &mut Vec::new());
    assert!(
        matches!(unknown, Err(EngineError::UnknownInteraction(_))),
        "{unknown:?}"
    );
    // Not in wrap-up yet: nothing to end.
    let early = h
        .engine
        .end_wrap_up_early("ana", id, h.now, &mut Vec::new());
    assert!(
        matches!(early, Err(EngineError::InvalidState { .. })),
        "{early:?}"
    );
    h.now = 60_000;
    h.step(|e, now, out| e.complete("ana", id, None, now, out))
        .0
        .unwrap();
    // Someone else's wrap-up is not theirs to end.
    let other = h
        .engine
        .end_wrap_up_early("tom", id, h.now, &mut Vec::new());
    assert!(
        matches!(other, Err(EngineError::NotAssignedToAgent { .. })),
        "{other:?}"
    );
    h.now = 65_000;
    let (done, ev) = h.step(|e, now, out| e.end_wrap_up_early("ana", id, now, out));
    done.unwrap();
    assert!(ev.iter().any(|e| matches!(e, Event::WrapUpEnded { .. })));
    assert_eq!(offered_to(&ev, next).as_deref(), Some("ana"), "{ev:?}");
    assert_eq!(
        h.engine.interaction(id).unwrap().state,
        InteractionState::Completed
    );
    // Over: a second end, and the wrap-up timer at its time, do nothing.
    let again = h
        .engine
        .end_wrap_up_early("ana", id, h.now, &mut Vec::new());
    assert!(
        matches!(again, Err(EngineError::InvalidState { .. })),
        "{again:?}"
    );
    let ev = h.advance_to(100_000);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::WrapUpEnded { .. })),
        "{ev:?}"
    );
    h.assert_invariants();
}

#[test]
fn transfer_to_queue_keeps_id_age_and_history() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("tom", &[("tech", 5)]),
    ]));
    h.available("ana");
    h.now = 1_000;
    let (id, _) = h.submit(NewInteraction::new("chat", "c1"));
    h.now = 2_000;
    h.step(|e, now, out| e.accept("ana", id, now, out))
        .0
        .unwrap();
    h.now = 50_000;
    let (_, ev) =
        h.step(|e, now, out| e.transfer("ana", id, TransferTarget::Queue("tech".into()), now, out));
    assert!(ev.iter().any(|e| matches!(e, Event::Transferred { .. })));
    let snapshot = h.engine.interaction(id).unwrap();
    assert_eq!(snapshot.queue, "tech");
    assert_eq!(snapshot.enqueued_ms, 1_000, "original age kept");
    assert_eq!(snapshot.state, InteractionState::Queued);
    assert_eq!(h.engine.agent("ana").unwrap().used_units, 0);
    let (_, ev) = h.step(|e, now, out| e.set_presence("tom", Presence::Available, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("tom"));
    let history = h.engine.interaction(id).unwrap().history;
    assert!(
        history
            .iter()
            .any(|e| matches!(e, HistoryEntry::Accepted { agent, .. } if &**agent == "ana"))
    );
    assert!(
        history
            .iter()
            .any(|e| matches!(e, HistoryEntry::Transferred { .. }))
    );
    h.assert_invariants();
}

#[test]
fn transfer_to_agent_offers_directly_or_fails_without_change() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("tom", &[("tech", 5)]),
    ]));
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    h.step(|e, now, out| e.accept("ana", id, now, out))
        .0
        .unwrap();
    let offline = h.engine.transfer(
        "ana",
        id,
        TransferTarget::Agent("tom".into()),
        h.now,
        &mut Vec::new(),
    );
    assert!(
        matches!(offline, Err(EngineError::AgentUnavailable { .. })),
        "{offline:?}"
    );
    assert_eq!(
        h.engine.interaction(id).unwrap().state,
        InteractionState::Assigned
    );
    assert_eq!(h.engine.agent("ana").unwrap().used_units, 10);
    h.available("tom");
    let (_, ev) =
        h.step(|e, now, out| e.transfer("ana", id, TransferTarget::Agent("tom".into()), now, out));
    assert_eq!(
        offered_to(&ev, id).as_deref(),
        Some("tom"),
        "skills are not required for a named agent"
    );
    h.step(|e, now, out| e.accept("tom", id, now, out))
        .0
        .unwrap();
    h.assert_invariants();
}

#[test]
fn relaxation_lowers_proficiency_then_overflows_keeping_age() {
    let mut config = center(vec![
        voice_chat_agent("junior", &[("billing", 3)]),
        voice_chat_agent("techie", &[("tech", 5)]),
    ]);
    let q = queue_mut(&mut config, "billing");
    q.required_skills[0].min_proficiency = 8;
    q.relaxation = vec![
        RelaxationStep {
            after_ms: 20_000,
            action: RelaxationAction::LowerProficiency {
                skill: "billing".into(),
                to: 3,
            },
        },
        RelaxationStep {
            after_ms: 60_000,
            action: RelaxationAction::Overflow {
                queue: "tech".into(),
            },
        },
    ];
    let mut h = Harness::new(config);
    h.available("junior");
    h.available("techie");
    let (first, ev) = h.submit(NewInteraction::new("voice", "c1"));
    assert!(offered_to(&ev, first).is_none(), "nobody has billing 8");
    let explanation = h.engine.explain(first, h.now).unwrap();
    let junior = explanation
        .candidates
        .iter()
        .find(|c| c.agent == "junior")
        .unwrap();
    assert!(matches!(
        junior.excluded,
        Some(Exclusion::ProficiencyTooLow {
            has: 3,
            needs: 8,
            ..
        })
    ));
    let ev = h.advance_to(20_000);
    assert_eq!(
        offered_to(&ev, first).as_deref(),
        Some("junior"),
        "step 1 lowers billing to 3"
    );
    // A second one: junior busy; at 60 s it overflows to tech where techie is free.
    let (second, _) = h.submit(NewInteraction::new("voice", "c2"));
    let ev = h.advance_to(79_999);
    assert!(offered_to(&ev, second).is_none());
    let ev = h.advance_to(80_000);
    assert_eq!(
        offered_to(&ev, second).as_deref(),
        Some("techie"),
        "overflow to tech after 60 s in queue"
    );
    assert_eq!(h.engine.interaction(second).unwrap().enqueued_ms, 20_000);
    h.assert_invariants();
}

#[test]
fn preferred_agent_waits_until_fallback() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ben");
    let mut request = NewInteraction::new("voice", "c1");
    request.preferred_agent = Some("ana".into());
    request.preferred_fallback_ms = 15_000;
    let (id, ev) = h.submit(request);
    assert!(
        offered_to(&ev, id).is_none(),
        "waits for ana although ben is free"
    );
    h.assert_invariants();
    let ev = h.advance_to(15_000);
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ben"));
}

#[test]
fn preferred_agent_gets_it_when_free() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ben");
    let mut request = NewInteraction::new("voice", "c1");
    request.preferred_agent = Some("ana".into());
    request.preferred_fallback_ms = 15_000;
    let (id, _) = h.submit(request);
    let (_, ev) = h.step(|e, now, out| e.set_presence("ana", Presence::Available, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ana"));
}

#[test]
fn voice_blocks_new_chats_and_chat_maximum_holds() {
    let mut capacity = CapacityProfile::simple(12, &["voice", "chat"]);
    capacity.channels[0].units = Some(6);
    capacity.channels[1].units = Some(2);
    capacity.channels[1].max_concurrent = Some(2);
    capacity.blocking = vec![ChannelBlock {
        while_on: "voice".into(),
        blocks: vec!["chat".into()],
    }];
    let mut h = Harness::new(center(vec![agent("ana", &[("billing", 5)], capacity)]));
    h.available("ana");
    let (call, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (chat, ev) = h.submit(NewInteraction::new("chat", "c2"));
    assert_eq!(offered_to(&h.events, call).as_deref(), Some("ana"));
    assert!(
        offered_to(&ev, chat).is_none(),
        "voice in hand blocks new chats"
    );
    let explanation = h.engine.explain(chat, h.now).unwrap();
    assert!(matches!(
        explanation.candidates[0].excluded,
        Some(Exclusion::Capacity {
            shortfall: CapacityShortfall::BlockedByChannel { .. }
        })
    ));
    h.step(|e, now, out| e.accept("ana", call, now, out))
        .0
        .unwrap();
    let (_, ev) = h.step(|e, now, out| e.complete("ana", call, None, now, out));
    assert_eq!(offered_to(&ev, chat).as_deref(), Some("ana"));
    let (_, _) = h.submit(NewInteraction::new("chat", "c3"));
    let (third, ev) = h.submit(NewInteraction::new("chat", "c4"));
    assert!(offered_to(&ev, third).is_none(), "max 2 chats");
    h.assert_invariants();
}

#[test]
fn routing_rules_pick_queue_and_priority_in_order() {
    let mut config = center(vec![voice_chat_agent(
        "ana",
        &[("billing", 5), ("spanish", 7)],
    )]);
    config.routing.rules = vec![
        RoutingRule {
            name: "spanish billing".into(),
            channels: vec![],
            conditions: vec![AttributeCondition::Equals {
                key: "language".into(),
                value: "es".into(),
            }],
            queue: "billing-es".into(),
            priority: Some(3),
        },
        RoutingRule {
            name: "tech intents".into(),
            channels: vec!["chat".into(), "web".into()],
            conditions: vec![AttributeCondition::OneOf {
                key: "intent".into(),
                values: vec!["wifi".into(), "router".into()],
            }],
            queue: "tech".into(),
            priority: None,
        },
    ];
    let mut h = Harness::new(config);
    let (es, _) = h.submit(NewInteraction::new("voice", "c1").with_attribute("language", "es"));
    let (tech, _) = h.submit(NewInteraction::new("chat", "c2").with_attribute("intent", "wifi"));
    let (voice_wifi, _) =
        h.submit(NewInteraction::new("voice", "c3").with_attribute("intent", "wifi"));
    assert_eq!(h.engine.interaction(es).unwrap().queue, "billing-es");
    assert_eq!(h.engine.interaction(es).unwrap().priority, 3);
    assert_eq!(h.engine.interaction(tech).unwrap().queue, "tech");
    assert_eq!(
        h.engine.interaction(voice_wifi).unwrap().queue,
        "billing",
        "rule is chat/web only: default"
    );
    let history = h.engine.interaction(es).unwrap().history;
    assert!(
        matches!(&history[0], HistoryEntry::Created { rule: Some(r), .. } if &**r == "spanish billing")
    );
}

#[test]
fn a_full_queue_rejects_with_a_clear_error() {
    let mut config = center(vec![]);
    queue_mut(&mut config, "billing").max_waiting = 2;
    let mut h = Harness::new(config);
    h.submit(NewInteraction::new("voice", "c1"));
    h.submit(NewInteraction::new("voice", "c2"));
    let full = h
        .engine
        .submit(NewInteraction::new("voice", "c3"), h.now, &mut Vec::new());
    assert_eq!(
        full,
        Err(EngineError::QueueFull {
            queue: "billing".into(),
            max_waiting: 2
        })
    );
    assert_eq!(
        full.unwrap_err().to_string(),
        "queue `billing` is full (2 waiting)"
    );
    h.assert_invariants();
}

#[test]
fn offer_limit_transfers_to_the_configured_queue() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("tom", &[("tech", 5)]),
    ]);
    let q = queue_mut(&mut config, "billing");
    q.max_offers = 1;
    q.on_offer_limit = OfferLimitAction::Transfer {
        queue: "tech".into(),
    };
    let mut h = Harness::new(config);
    h.available("ana");
    h.available("tom");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::OfferLimitReached { .. }))
    );
    assert_eq!(offered_to(&ev, id).as_deref(), Some("tom"));
    h.assert_invariants();
}

#[test]
fn going_offline_rescinds_offers_and_reroutes() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    h.available("ben");
    let (_, ev) = h.step(|e, now, out| e.set_presence("ana", Presence::Offline, now, out));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OfferRescinded {
            reason: RescindReason::AgentOffline,
            ..
        }
    )));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ben"));
    h.assert_invariants();
}

#[test]
fn reconfigure_adds_an_agent_who_pulls_waiting_work() {
    let mut h = Harness::new(center(vec![]));
    let (id, _) = h.submit(NewInteraction::new("chat", "c1"));
    let mut config = h.engine.config();
    config
        .agents
        .push(voice_chat_agent("new", &[("billing", 4)]));
    let (r, _) = h.step(|e, now, out| e.reconfigure(config, now, out));
    r.unwrap();
    let (_, ev) = h.step(|e, now, out| e.set_presence("new", Presence::Available, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("new"));
    h.assert_invariants();
}

#[test]
fn reconfigure_changing_a_queue_reroutes_its_waiting_work_in_order() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 2)])]));
    let mut config = h.engine.config();
    queue_mut(&mut config, "billing").required_skills[0].min_proficiency = 5;
    h.step(|e, now, out| e.reconfigure(config.clone(), now, out))
        .0
        .unwrap();
    h.available("ana");
    let (a, _) = h.submit(NewInteraction::new("voice", "c1"));
    h.now = 10;
    let (b, _) = h.submit(NewInteraction::new("voice", "c2"));
    assert!(offered_to(&h.events, a).is_none());
    queue_mut(&mut config, "billing").required_skills[0].min_proficiency = 1;
    let (_, ev) = h.step(|e, now, out| e.reconfigure(config, now, out));
    assert_eq!(
        offered_to(&ev, a).as_deref(),
        Some("ana"),
        "the older one first"
    );
    assert_eq!(
        h.engine.queue("billing", h.now).unwrap().waiting[0].interaction,
        b
    );
    h.assert_invariants();
}

#[test]
fn removing_things_in_use_is_refused() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 5)])]));
    h.available("ana");
    let (_id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let mut config = h.engine.config();
    config.agents.clear();
    let r = h.engine.reconfigure(config, h.now, &mut Vec::new());
    assert!(matches!(r, Err(EngineError::InUse { .. })), "{r:?}");
    let mut config = h.engine.config();
    config.queues.retain(|q| q.id != "billing");
    config.routing.default_queue = None;
    let r = h.engine.reconfigure(config, h.now, &mut Vec::new());
    assert!(matches!(r, Err(EngineError::InUse { .. })), "{r:?}");
    h.assert_invariants();
}

#[test]
fn an_agent_busy_from_another_queue_ranks_behind_an_idle_one() {
    // ana's offer from billing leaves her tech index entry stale (refreshed lazily):
    // the next tech chat must still go to ben, who has nothing in hand.
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5), ("tech", 5)]),
        voice_chat_agent("ben", &[("billing", 5), ("tech", 5)]),
    ]));
    h.available("ana");
    h.available("ben");
    let (first, ev) = h.submit(NewInteraction::new("chat", "c1").to_queue("billing"));
    assert_eq!(offered_to(&ev, first).as_deref(), Some("ana"));
    let (second, ev) = h.submit(NewInteraction::new("chat", "c2").to_queue("tech"));
    assert_eq!(offered_to(&ev, second).as_deref(), Some("ben"));
    let (third, ev) = h.submit(NewInteraction::new("chat", "c3").to_queue("tech"));
    assert_eq!(
        offered_to(&ev, third).as_deref(),
        Some("ana"),
        "1 in hand each: ana by order"
    );
    h.assert_invariants();
}

#[test]
fn reconfigure_removing_relaxation_steps_repairs_offered_work() {
    let mut config = center(vec![
        voice_chat_agent("ana", &[("billing", 3)]),
        voice_chat_agent("tom", &[("tech", 5)]),
    ]);
    let q = queue_mut(&mut config, "billing");
    q.required_skills[0].min_proficiency = 8;
    q.relaxation = vec![
        RelaxationStep {
            after_ms: 1_000,
            action: RelaxationAction::LowerProficiency {
                skill: "billing".into(),
                to: 2,
            },
        },
        RelaxationStep {
            after_ms: 2_000,
            action: RelaxationAction::Overflow {
                queue: "tech".into(),
            },
        },
    ];
    let mut h = Harness::new(config.clone());
    h.available("ana");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let ev = h.advance_to(2_000);
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ana"));
    // While it is offered, the queue loses its relaxation steps.
    queue_mut(&mut config, "billing").relaxation.clear();
    queue_mut(&mut config, "billing").required_skills[0].min_proficiency = 1;
    h.step(|e, now, out| e.reconfigure(config, now, out))
        .0
        .unwrap();
    let (_, ev) = h.step(|e, now, out| e.reject("ana", id, now, out));
    assert_eq!(
        offered_to(&ev, id).as_deref(),
        Some("ana"),
        "routes under the new definition"
    );
    h.engine.explain(id, h.now).unwrap();
    h.assert_invariants();
}

#[test]
fn finished_work_of_a_removed_queue_is_forgotten_not_a_panic() {
    let mut h = Harness::new(center(vec![voice_chat_agent("tom", &[("tech", 5)])]));
    h.available("tom");
    let (id, _) = h.submit(NewInteraction::new("voice", "c1").to_queue("tech"));
    h.step(|e, now, out| e.accept("tom", id, now, out))
        .0
        .unwrap();
    h.step(|e, now, out| e.complete("tom", id, None, now, out))
        .0
        .unwrap();
    let mut config = h.engine.config();
    config.queues.retain(|q| q.id != "tech");
    h.step(|e, now, out| e.reconfigure(config, now, out))
        .0
        .unwrap();
    assert_eq!(
        h.engine.interaction(id),
        Err(EngineError::UnknownInteraction(id))
    );
    assert!(h.engine.abandon(id, h.now, &mut Vec::new()).is_err());
    h.assert_invariants();
}

#[test]
fn a_preferred_agent_who_declines_releases_the_interaction_to_others() {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ana");
    h.available("ben");
    let mut request = NewInteraction::new("voice", "c1");
    request.preferred_agent = Some("ben".into());
    request.preferred_fallback_ms = 60_000;
    let (id, ev) = h.submit(request);
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ben"));
    let (_, ev) = h.step(|e, now, out| e.reject("ben", id, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("ana"));
    h.assert_invariants();
}

#[test]
fn explanations_include_agents_reached_through_overflow() {
    let mut config = center(vec![voice_chat_agent("techie", &[("tech", 5)])]);
    let q = queue_mut(&mut config, "billing");
    q.relaxation = vec![RelaxationStep {
        after_ms: 10_000,
        action: RelaxationAction::Overflow {
            queue: "tech".into(),
        },
    }];
    let mut h = Harness::new(config);
    h.available("techie");
    let (busy, _) = h.submit(NewInteraction::new("voice", "c0").to_queue("tech"));
    h.step(|e, now, out| e.accept("techie", busy, now, out))
        .0
        .unwrap();
    let (id, _) = h.submit(NewInteraction::new("voice", "c1"));
    let before = h.engine.explain(id, h.now).unwrap();
    assert!(matches!(
        before.candidates[0].excluded,
        Some(Exclusion::MissingSkill { .. })
    ));
    h.advance_to(10_000);
    let after = h.engine.explain(id, h.now).unwrap();
    assert!(
        matches!(
            after.candidates[0].excluded,
            Some(Exclusion::Capacity { .. })
        ),
        "after overflow, techie is a candidate held back only by capacity: {after:?}"
    );
    let (_, ev) = h.step(|e, now, out| e.complete("techie", busy, None, now, out));
    assert_eq!(offered_to(&ev, id).as_deref(), Some("techie"));
}

#[test]
fn a_purge_forgets_work_finished_before_its_cutoff_and_a_restored_engine_purges_the_same() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 5)])]));
    h.available("ana");
    let mut finished = Vec::new();
    let mut live = Vec::new();
    for n in 0..6u64 {
        h.advance_to(n * 1_000);
        let (id, _) = h.submit(NewInteraction::new("chat", &format!("c{n}")));
        if n % 3 == 2 {
            live.push(id); // offered to ana, never answered
        } else {
            h.step(|e, now, out| e.abandon(id, now, out)).0.unwrap();
            finished.push((n * 1_000, id));
        }
    }
    assert_eq!(h.engine.check_invariants(h.now), Vec::<String>::new());
    let restored = Engine::restore_from(&h.engine.export()).unwrap();
    assert_eq!(restored.check_invariants(h.now), Vec::<String>::new());
    for engine in [&h.engine, &restored] {
        // Finished at 0, 1,000 and 3,000 ms: a cutoff of 3,000 forgets the first two.
        assert_eq!(engine.purge_finished_before(3_000), 2);
        let ids = engine.interaction_ids();
        for (at, id) in &finished {
            assert_eq!(ids.contains(id), *at >= 3_000, "{id} finished at {at}");
        }
        for id in &live {
            assert!(ids.contains(id), "live {id} kept");
        }
        assert_eq!(
            engine.purge_finished_before(3_000),
            0,
            "nothing left to purge"
        );
        assert_eq!(engine.purge_finished_before(u64::MAX), 2);
        assert_eq!(engine.interaction_ids(), live);
        assert_eq!(engine.check_invariants(h.now), Vec::<String>::new());
    }
}

#[test]
fn the_forget_epoch_moves_only_when_the_engine_forgets_work() {
    let mut h = Harness::new(center(vec![voice_chat_agent("ana", &[("billing", 5)])]));
    let start = h.engine.forget_epoch();
    let (a, _) = h.submit(NewInteraction::new("chat", "c1"));
    let (b, _) = h.submit(NewInteraction::new("chat", "c2"));
    h.step(|e, now, out| e.abandon(a, now, out)).0.unwrap();
    assert_eq!(
        h.engine.forget_epoch(),
        start,
        "new and finished work forget nothing"
    );
    // A purge that removes nothing leaves it; one that removes something moves it.
    assert_eq!(h.engine.purge_finished_before(0), 0);
    assert_eq!(h.engine.forget_epoch(), start);
    assert_eq!(h.engine.purge_finished(), 1);
    let after_purge = h.engine.forget_epoch();
    assert_ne!(after_purge, start);
    h.step(|e, now, out| e.abandon(b, now, out)).0.unwrap();
    h.engine.forget(b).unwrap();
    assert_ne!(h.engine.forget_epoch(), after_purge, "forget moves it too");
    // Removing a queue forgets its finished work: the epoch moves.
    let (c, _) = h.submit(NewInteraction::new("chat", "c3").to_queue("tech"));
    h.step(|e, now, out| e.abandon(c, now, out)).0.unwrap();
    let before_removal = h.engine.forget_epoch();
    let mut config = h.engine.config();
    config.queues.retain(|q| q.id != "tech");
    h.step(|e, now, out| e.reconfigure(config, now, out))
        .0
        .unwrap();
    assert!(!h.engine.holds(c));
    assert_ne!(
        h.engine.forget_epoch(),
        before_removal,
        "reconfigure moves it"
    );
    // Another engine (a snapshot's restore) never shares an epoch, even with the same
    // count of forgets (none yet).
    let restored = Engine::restore(h.engine.export()).unwrap();
    assert_eq!(restored.forget_epoch().1, start.1);
    assert_ne!(restored.forget_epoch(), start);
}
