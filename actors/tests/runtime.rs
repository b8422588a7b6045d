//! The actor runtime on tokio's paused clock: whole journeys through agent, queue and
//! conversation actors, timers on virtual time, channel switching, the virtual agent,
//! admission limits, disconnect grace and supervision (actors made to panic
//! mid-interaction).

use omniroute_actors::center::Clock;
use omniroute_actors::engine::journal::Command;
use omniroute_actors::engine::journal::{
    Durability, Journal, JournalConfig, MemoryStore, RecoveryReport,
};
use omniroute_actors::engine::*;
use omniroute_actors::virtual_agent::{BotMemory, BotTurn, RuleBasedAgent, VirtualAgent};
use omniroute_actors::*;
use std::sync::Arc;
use std::time::Duration;

mod common;

const BASE: u64 = 1_764_000_000_000;

fn agent(id: &str) -> AgentDef {
    AgentDef {
        id: id.into(),
        name: id.into(),
        skills: vec![SkillLevel {
            skill: "s".into(),
            proficiency: 5,
        }],
        capacity: CapacityProfile::simple(10, &["chat", "sms", "email"]),
    }
}

fn center(agents: &[&str]) -> CenterConfig {
    let mut config = common::one_queue_center();
    config.queues[0].offer_timeout_ms = 30_000;
    config.queues[0].wrap_up_ms = 60_000;
    config.queues.push(QueueDef::new("billing", &[("s", 1)]));
    config.agents = agents.iter().map(|a| agent(a)).collect();
    config
}

async fn start(config: CenterConfig, rc: RuntimeConfig) -> Runtime {
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(config),
        JournalConfig {
            durability: Durability::Batched { flush_every_ms: 5 },
            external_timers: true,
            ..Default::default()
        },
        BASE,
    )
    .unwrap();
    Runtime::start(
        journal,
        Clock::starting_at(BASE),
        rc,
        vec![Arc::new(RuleBasedAgent::demo())],
    )
    .await
    .unwrap()
}

/// A runtime on `store` at `at` (sync durability, a 60 s reconnect grace): a server
/// started afresh (with `config`) or again after a crash (`None`).
async fn start_durable(
    store: &Arc<MemoryStore>,
    config: Option<CenterConfig>,
    at: u64,
) -> (Runtime, RecoveryReport) {
    let jc = JournalConfig {
        durability: Durability::Sync,
        external_timers: true,
        reconnect_grace_ms: 60_000,
        ..Default::default()
    };
    let (journal, report) = Journal::open(store.clone(), config, jc, at).unwrap();
    let rt = Runtime::start(
        journal,
        Clock::starting_at(at),
        RuntimeConfig::default(),
        vec![],
    )
    .await
    .unwrap();
    (rt, report)
}

/// Lets the actors drain their mailboxes (virtual time does not move while tasks run).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// The next push, skipping presence changes.
async fn next(s: &mut AgentSession) -> Push {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("a push within 5 s of virtual time")
            .expect("session open");
        if !matches!(p, Push::Presence { .. }) {
            return p;
        }
    }
}

async fn online(rt: &Runtime, id: &str) -> AgentSession {
    let s = rt.connect_agent(id).unwrap();
    s.set_presence(Presence::Available).await.unwrap();
    s
}

/// A new chat conversation from `customer`, offered to and accepted by `agent`.
async fn chat_accepted(
    rt: &Runtime,
    agent: &mut AgentSession,
    customer: &str,
    text: &str,
) -> InteractionId {
    let out = rt
        .inbound(Inbound::new("chat", customer, text))
        .await
        .unwrap();
    let InboundOutcome::Created { interaction } = out else {
        panic!("{out:?}")
    };
    let Push::Offer(_) = next(agent).await else {
        panic!("offer expected")
    };
    agent.accept(interaction).await.unwrap();
    interaction
}

/// `request` submitted, offered to and accepted by `agent` (its offer and assignment
/// pushes taken).
async fn submitted_and_accepted(
    rt: &Runtime,
    agent: &mut AgentSession,
    request: NewInteraction,
) -> InteractionId {
    let id = rt.submit(request).await.unwrap();
    let Push::Offer(_) = next(agent).await else {
        panic!("offer expected")
    };
    agent.accept(id).await.unwrap();
    assert_eq!(next(agent).await, Push::Assigned { interaction: id });
    id
}

/// `customer` writes again on chat and is returning: to which conversation and agent.
async fn returning(rt: &Runtime, customer: &str) -> (InteractionId, String) {
    let out = rt
        .inbound(Inbound::new("chat", customer, "one more thing"))
        .await
        .unwrap();
    let InboundOutcome::Returning {
        previous, agent, ..
    } = out
    else {
        panic!("{out:?}")
    };
    (previous, agent)
}

/// `interaction`'s conversation actor panics, then `customer` writes `text`: the
/// conversation is what it was (`before`) plus that line — nothing lost, nothing doubled.
async fn crashed_then_written_to(
    rt: &Runtime,
    interaction: InteractionId,
    customer: &str,
    text: &str,
    before: &ConversationViewAlias,
) {
    assert!(rt.inject_panic(&ActorKey::Conversation(interaction)));
    settle().await;
    rt.inbound(Inbound::new("chat", customer, text))
        .await
        .unwrap();
    settle().await;
    let after = rt.conversation(interaction).await.unwrap();
    let mut expected = texts(before);
    expected.push(text.into());
    assert_eq!(texts(&after), expected, "nothing lost, nothing doubled");
}

/// A chat message starting a conversation with the virtual agent `bot`.
fn to_bot(bot: &str, customer: &str, text: &str) -> Inbound {
    let mut inbound = Inbound::new("chat", customer, text);
    inbound.virtual_agent = Some(bot.into());
    inbound
}

fn texts(v: &ConversationViewAlias) -> Vec<String> {
    v.transcript.iter().map(|e| e.text.clone()).collect()
}

type ConversationViewAlias = omniroute_actors::conversation::ConversationView;

#[tokio::test(start_paused = true)]
async fn a_whole_journey_with_transfer_keeps_the_transcript_and_runs_wrap_up_on_virtual_time() {
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let out = rt
        .inbound(Inbound::new("chat", "cust-1", "hello, my router is broken"))
        .await
        .unwrap();
    let InboundOutcome::Created { interaction: id } = out else {
        panic!("{out:?}")
    };
    let Push::Offer(offer) = next(&mut ana).await else {
        panic!("offer expected")
    };
    assert_eq!(offer.interaction, id);
    assert_eq!(offer.customer, "cust-1");
    // The customer's first message is logged with the interaction's creation: the
    // offer carries it.
    assert_eq!(
        offer
            .transcript
            .iter()
            .filter(|e| e.text == "hello, my router is broken")
            .count(),
        1,
        "{:?}",
        offer.transcript
    );
    ana.accept(id).await.unwrap();
    assert_eq!(next(&mut ana).await, Push::Assigned { interaction: id });
    ana.send_message(id, "let me check", None).await.unwrap();
    let Push::Message { entry, .. } = next(&mut ana).await else {
        panic!()
    };
    assert_eq!(
        (entry.from, entry.text.as_str()),
        (Sender::Agent, "let me check")
    );
    // The customer writes again: it joins the open conversation.
    let out = rt
        .inbound(Inbound::new("chat", "cust-1", "thanks"))
        .await
        .unwrap();
    assert_eq!(out, InboundOutcome::Joined { interaction: id });
    assert!(matches!(next(&mut ana).await, Push::Message { .. }));

    // Transfer to bob: his offer carries the whole transcript.
    let mut bob = online(&rt, "bob").await;
    ana.transfer(id, TransferTarget::Agent("bob".into()))
        .await
        .unwrap();
    assert!(matches!(next(&mut ana).await, Push::TransferredAway { .. }));
    let Push::Offer(offer) = next(&mut bob).await else {
        panic!("bob gets the offer")
    };
    let lines: Vec<&str> = offer.transcript.iter().map(|e| e.text.as_str()).collect();
    for said in ["hello, my router is broken", "let me check", "thanks"] {
        assert!(lines.contains(&said), "{said} missing from {lines:?}");
    }
    assert!(
        lines.contains(&"transferred by ana to agent:bob"),
        "{lines:?}"
    );
    bob.accept(id).await.unwrap();
    assert_eq!(next(&mut bob).await, Push::Assigned { interaction: id });
    bob.complete(id, None).await.unwrap();
    let Push::Completed {
        wrap_up_until_ms: Some(until),
        ..
    } = next(&mut bob).await
    else {
        panic!()
    };
    assert!(
        bob.view()
            .await
            .unwrap()
            .work
            .iter()
            .any(|w| w.phase == "wrap_up")
    );
    // Wrap-up ends by the agent actor's timer, 60 s of virtual time later.
    tokio::time::sleep(Duration::from_millis(until - rt.clock().now_ms() + 10)).await;
    assert_eq!(next(&mut bob).await, Push::WrapUpEnded { interaction: id });
    settle().await;
    assert!(bob.view().await.unwrap().work.is_empty());
    assert_eq!(
        rt.conversation_actors(),
        0,
        "the conversation actor stops when done"
    );
    assert_eq!(rt.live_interactions(), 0);
    // The transcript outlives the actor (it is in the engine and the log).
    let v = rt.conversation(id).await.unwrap();
    assert_eq!(v.state, InteractionState::Completed);
    assert!(v.participants.contains("agent:ana") && v.participants.contains("agent:bob"));
    assert!(texts(&v).contains(&"thanks".to_string()));
    let stats = rt.queue_stats("q").await.unwrap();
    assert_eq!(stats.windows[0].answered, 1);
    assert_eq!(
        rt.read(|e| e.check_invariants(rt.clock().now_ms())),
        Vec::<String>::new()
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_offer_times_out_by_the_agent_actor_and_counts_a_miss() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = rt.submit(NewInteraction::new("chat", "c")).await.unwrap();
    assert!(matches!(next(&mut ana).await, Push::Offer(_)));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        next(&mut ana).await,
        Push::OfferEnded {
            interaction: id,
            reason: "timed_out".into()
        }
    );
    // Re-offered to her (the only agent) after the miss.
    assert!(matches!(next(&mut ana).await, Push::Offer(_)));
    assert_eq!(ana.view().await.unwrap().consecutive_misses, 1);
}

#[tokio::test(start_paused = true)]
async fn a_customer_with_two_live_conversations_keeps_the_older_after_the_newer_ends() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let older = chat_accepted(&rt, &mut ana, "cust-2", "first question").await;
    assert_eq!(next(&mut ana).await, Push::Assigned { interaction: older });
    // A second conversation of the same customer (an email, say) is submitted.
    let newer = submitted_and_accepted(&rt, &mut ana, NewInteraction::new("email", "cust-2")).await;
    ana.complete(newer, None).await.unwrap();
    settle().await;
    // The older one is still live: the customer's next message joins it.
    let out = rt
        .inbound(Inbound::new(
            "chat",
            "cust-2",
            "and about my first question",
        ))
        .await
        .unwrap();
    assert_eq!(out, InboundOutcome::Joined { interaction: older });
    // Past the switching window the customer is still known while it is live.
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let out = rt
        .inbound(Inbound::new("sms", "cust-2", "still there?"))
        .await
        .unwrap();
    assert_eq!(out, InboundOutcome::Joined { interaction: older });
}

#[tokio::test(start_paused = true)]
async fn a_customer_switching_channel_joins_the_open_conversation_then_returns_to_the_same_agent() {
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "cust-7", "hi on chat").await;
    // Same customer on SMS a minute later: same conversation, same agent.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let out = rt
        .inbound(Inbound::new("sms", "cust-7", "now on sms"))
        .await
        .unwrap();
    assert_eq!(out, InboundOutcome::Joined { interaction: id });
    let v = rt.conversation(id).await.unwrap();
    assert_eq!(v.channels, vec!["chat".to_string(), "sms".to_string()]);
    // The agent's reply goes out on the channel the customer last used.
    ana.send_message(id, "got it", None).await.unwrap();
    settle().await;
    let v = rt.conversation(id).await.unwrap();
    assert_eq!(v.transcript.last().unwrap().channel, "sms");
    ana.complete(id, None).await.unwrap();
    // Bob is available too, but the returning customer waits for ana first.
    let bob = online(&rt, "bob").await;
    tokio::time::sleep(Duration::from_secs(61)).await; // ana's wrap-up ends
    let out = rt
        .inbound(Inbound::new("email", "cust-7", "one more thing"))
        .await
        .unwrap();
    let InboundOutcome::Returning {
        interaction: again,
        previous,
        agent,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((previous, agent.as_str()), (id, "ana"));
    settle().await;
    let s = rt.read(|e| e.interaction(again).unwrap());
    assert_eq!(s.agent.as_deref(), Some("ana"), "offered to the same agent");
    rt.abandon(again).await.unwrap();
    // Another returning customer while ana is away: bob is not offered it while ana's
    // preference lasts (60 s); after it, anyone may take it.
    let away = || Presence::Away {
        reason: "break".into(),
    };
    bob.set_presence(away()).await.unwrap();
    settle().await;
    while ana.try_next().is_some() {}
    let id8 = chat_accepted(&rt, &mut ana, "cust-8", "hi").await;
    ana.complete(id8, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    ana.set_presence(away()).await.unwrap();
    bob.set_presence(Presence::Available).await.unwrap();
    let out = rt
        .inbound(Inbound::new("chat", "cust-8", "me again"))
        .await
        .unwrap();
    let InboundOutcome::Returning {
        interaction: back, ..
    } = out
    else {
        panic!("{out:?}")
    };
    settle().await;
    assert_eq!(
        rt.read(|e| e.interaction(back).unwrap().state),
        InteractionState::Queued,
        "bob is available but not offered it yet"
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(
        rt.read(|e| e.interaction(back).unwrap().agent),
        Some("bob".to_string()),
        "the preferred-agent fallback fired"
    );
    // Outside the window a message starts a fresh conversation.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    let out = rt
        .inbound(Inbound::new("chat", "cust-7", "hello again, much later"))
        .await
        .unwrap();
    assert!(matches!(out, InboundOutcome::Created { .. }), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn a_virtual_agent_collects_data_and_escalates_with_it_visible_to_the_agent() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let first = to_bot("order-bot", "cust-9", "I want a refund");
    let out = rt.inbound(first).await.unwrap();
    assert!(
        matches!(out, InboundOutcome::Bot { ref reply } if reply.contains("order number")),
        "{out:?}"
    );
    // Nothing reached an agent yet.
    assert!(
        ana.try_next().is_none() || matches!(ana.try_next(), Some(Push::Presence { .. }) | None)
    );
    let out = rt
        .inbound(Inbound::new("chat", "cust-9", "it is order 4455667"))
        .await
        .unwrap();
    let InboundOutcome::Escalated { interaction, .. } = out else {
        panic!("{out:?}")
    };
    let Push::Offer(offer) = next(&mut ana).await else {
        panic!()
    };
    assert_eq!(offer.interaction, interaction);
    assert_eq!(offer.attributes["intent"], "refund");
    assert_eq!(offer.attributes["order_number"], "4455667");
    assert_eq!(offer.attributes["virtual_agent"], "order-bot");
    // The offer carries the whole exchange, logged with the interaction's creation.
    let offered: Vec<&str> = offer.transcript.iter().map(|e| e.text.as_str()).collect();
    assert!(offered.contains(&"I want a refund"), "{offered:?}");
    assert!(offered.contains(&"it is order 4455667"), "{offered:?}");
    assert!(
        offered
            .iter()
            .any(|l| l.contains("collected: intent=refund")),
        "{offered:?}"
    );
    ana.accept(interaction).await.unwrap();
    settle().await;
    let v = rt.conversation(interaction).await.unwrap();
    let lines = texts(&v);
    assert!(lines.contains(&"I want a refund".to_string()), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("collected: intent=refund, order_number=4455667"))
    );
    assert!(v.participants.contains("virtual_agent:order-bot"));
    // A question it can answer is resolved without an agent.
    let q = to_bot("order-bot", "cust-10", "where is my order 1234567?");
    assert!(matches!(
        rt.inbound(q).await.unwrap(),
        InboundOutcome::Resolved { .. }
    ));
    let bad = to_bot("nobody", "cust-11", "hi");
    assert!(matches!(
        rt.inbound(bad).await,
        Err(RuntimeError::UnknownVirtualAgent(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn over_the_limits_callers_get_busy_and_nothing_is_admitted() {
    let mut config = center(&[]);
    config.queues[1].max_waiting = 1;
    let rt = start(
        config,
        RuntimeConfig {
            max_live_interactions: 3,
            ..Default::default()
        },
    )
    .await;
    rt.submit(NewInteraction::new("chat", "a").to_queue("billing"))
        .await
        .unwrap();
    let full = rt
        .submit(NewInteraction::new("chat", "b").to_queue("billing"))
        .await;
    assert!(
        matches!(full, Err(RuntimeError::Busy(ref m)) if m.contains("billing")),
        "{full:?}"
    );
    rt.submit(NewInteraction::new("chat", "c")).await.unwrap();
    rt.submit(NewInteraction::new("chat", "d")).await.unwrap();
    let over = rt.submit(NewInteraction::new("chat", "e")).await;
    assert!(
        matches!(over, Err(RuntimeError::Busy(ref m)) if m.contains("limit is 3")),
        "{over:?}"
    );
    assert_eq!(rt.live_interactions(), 3);
    assert_eq!(rt.read(|e| e.interaction_ids().len()), 3);
    assert!(matches!(
        rt.connect_agent("ghost"),
        Err(RuntimeError::UnknownAgent(_))
    ));
    assert!(matches!(
        rt.queue_stats("ghost").await,
        Err(RuntimeError::UnknownQueue(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn work_returns_to_its_queue_when_a_disconnected_agent_does_not_come_back() {
    let rt = start(
        center(&["ana", "bob"]),
        RuntimeConfig {
            disconnect_grace_ms: 20_000,
            ..Default::default()
        },
    )
    .await;
    let mut ana = online(&rt, "ana").await;
    let id = rt.submit(NewInteraction::new("chat", "c")).await.unwrap();
    let Push::Offer(_) = next(&mut ana).await else {
        panic!()
    };
    ana.accept(id).await.unwrap();
    drop(ana);
    // Back within the grace: nothing changes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ana = rt.connect_agent("ana").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        rt.read(|e| e.interaction(id).unwrap().state),
        InteractionState::Assigned
    );
    drop(ana);
    // Gone for good: offline, and the work goes back to be routed to bob.
    let mut bob = online(&rt, "bob").await;
    tokio::time::sleep(Duration::from_secs(21)).await;
    settle().await;
    assert_eq!(
        rt.read(|e| e.agent("ana").unwrap().presence),
        Presence::Offline
    );
    let Push::Offer(offer) = next(&mut bob).await else {
        panic!()
    };
    assert_eq!(offer.interaction, id);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_actor_is_restarted_from_the_engine_without_losing_or_duplicating_work() {
    let mut config = center(&["ana"]);
    config.queues[1] = QueueDef::new("billing", &[("s", 2)]);
    config.queues[1].relaxation = vec![RelaxationStep {
        after_ms: 30_000,
        action: RelaxationAction::LowerProficiency {
            skill: "s".into(),
            to: 1,
        },
    }];
    let rt = start(config, RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "c1", "first").await;
    ana.send_message(id, "hello from ana", None).await.unwrap();
    settle().await;
    let before = rt.conversation(id).await.unwrap();

    // The conversation actor panics mid-interaction.
    crashed_then_written_to(&rt, id, "c1", "second", &before).await;

    // The agent actor panics: its session survives and is resynchronised.
    while ana.try_next().is_some() {}
    assert!(rt.inject_panic(&ActorKey::Agent("ana".into())));
    settle().await;
    let Push::Resync(view) = next(&mut ana).await else {
        panic!("resync expected")
    };
    assert_eq!(view.work.len(), 1);
    assert_eq!(view.work[0].phase, "assigned");
    // It still serves: completion, then the wrap-up timer (re-armed) ends the work.
    ana.complete(id, None).await.unwrap();
    assert!(matches!(next(&mut ana).await, Push::Completed { .. }));
    assert!(rt.inject_panic(&ActorKey::Agent("ana".into())));
    settle().await;
    assert!(matches!(next(&mut ana).await, Push::Resync(_)));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(next(&mut ana).await, Push::WrapUpEnded { interaction: id });

    // The queue actor panics while work waits with a relaxation step due: the step
    // still happens (its timer is re-armed from the engine).
    ana.set_presence(Presence::Away {
        reason: "break".into(),
    })
    .await
    .unwrap();
    let waiting = rt
        .submit(NewInteraction::new("chat", "c2").to_queue("billing"))
        .await
        .unwrap();
    settle().await;
    assert!(rt.inject_panic(&ActorKey::Queue("billing".into())));
    settle().await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    let s = rt.read(|e| e.interaction(waiting).unwrap());
    assert_eq!(s.relaxation_steps_applied, 1, "{:?}", s.history);
    // No duplicated work anywhere: one interaction per submit, invariants hold.
    assert_eq!(rt.read(|e| e.interaction_ids().len()), 2);
    assert_eq!(
        rt.read(|e| e.check_invariants(rt.clock().now_ms())),
        Vec::<String>::new()
    );
    assert_eq!(
        rt.read(|e| e
            .interaction(id)
            .unwrap()
            .history
            .iter()
            .filter(|h| matches!(h, HistoryEntry::Accepted { .. }))
            .count()),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn queue_statistics_count_every_outcome_once_across_batches_and_a_queue_actor_restart() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    // Nobody is available: everything waits, then the customers leave.
    let mut ids = Vec::new();
    for n in 0..150 {
        let id = rt
            .submit(NewInteraction::new("chat", &format!("c{n}")).to_queue("q"))
            .await
            .unwrap();
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids[..40] {
        rt.abandon(*id).await.unwrap();
    }
    // Fewer than a batch so far: a read still sees them all.
    let stats = rt.queue_stats("q").await.unwrap();
    assert_eq!((stats.windows[0].abandoned, stats.depth), (40, 110));
    for id in &ids[40..100] {
        rt.abandon(*id).await.unwrap();
    }
    // Its actor fails with outcomes gathered for it: the restarted one rebuilds from
    // the engine and counts each once.
    assert!(rt.inject_panic(&ActorKey::Queue("q".into())));
    settle().await;
    for id in &ids[100..] {
        rt.abandon(*id).await.unwrap();
    }
    settle().await;
    let stats = rt.queue_stats("q").await.unwrap();
    assert_eq!((stats.windows[0].abandoned, stats.depth), (150, 0));
    assert_eq!(stats.windows[0].answered, 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_gathered_before_a_threshold_change_is_judged_by_the_old_threshold() {
    let mut config = center(&["ana"]);
    config.queues[0].service_level.threshold_ms = 20_000;
    let rt = start(config, RuntimeConfig::default()).await;
    let id = rt.submit(NewInteraction::new("chat", "c1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut ana = online(&rt, "ana").await;
    let Push::Offer(_) = next(&mut ana).await else {
        panic!("offer expected")
    };
    ana.accept(id).await.unwrap();
    settle().await;
    // Answered after ≈ 10 s, within 20 s; then the threshold drops to 5 s.
    let mut changed = rt.read(|e| e.config());
    changed.queues[0].service_level.threshold_ms = 5_000;
    rt.execute(Command::Configure { config: changed })
        .await
        .unwrap();
    settle().await;
    let stats = rt.queue_stats("q").await.unwrap();
    assert_eq!(stats.service_level_threshold_ms, 5_000);
    assert_eq!(
        (
            stats.windows[0].answered,
            stats.windows[0].answered_in_threshold
        ),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_returning_customer_goes_to_the_agent_of_the_conversation_that_ended_last() {
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let older = chat_accepted(&rt, &mut ana, "cust-3", "first").await;
    assert_eq!(next(&mut ana).await, Push::Assigned { interaction: older });
    ana.set_presence(Presence::Away {
        reason: "busy".into(),
    })
    .await
    .unwrap();
    let mut bob = online(&rt, "bob").await;
    let newer = submitted_and_accepted(&rt, &mut bob, NewInteraction::new("email", "cust-3")).await;
    // Bob's ends first, ana's last: the customer returns to ana.
    bob.complete(newer, None).await.unwrap();
    ana.complete(older, None).await.unwrap();
    settle().await;
    assert_eq!(returning(&rt, "cust-3").await, (older, "ana".to_string()));
}

#[tokio::test(start_paused = true)]
async fn the_event_stream_carries_routing_events_in_order() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut sub = rt.subscribe();
    let ana = online(&rt, "ana").await;
    let id = rt.submit(NewInteraction::new("chat", "c")).await.unwrap();
    ana.accept(id).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        match sub.next().await {
            omniroute_actors::bus::Delivery::Record(r) => {
                for e in &r.events {
                    kinds.push(match e {
                        Event::PresenceChanged { .. } => "presence",
                        Event::Created { .. } => "created",
                        Event::Offered { .. } => "offered",
                        Event::Accepted { .. } => "accepted",
                        Event::Queued { .. } => "queued",
                        _ => "other",
                    });
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kinds, ["presence", "created", "offered", "accepted"]);
}

#[tokio::test(start_paused = true)]
async fn after_a_server_restart_the_actors_rebuild_from_the_log_and_agents_get_their_grace() {
    let store = Arc::new(MemoryStore::new());
    let (rt, _) = start_durable(&store, Some(center(&["ana", "bob"])), BASE).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "c1", "before the restart").await;
    ana.send_message(id, "on it", None).await.unwrap();
    let waiting = rt
        .submit(NewInteraction::new("chat", "c2").to_queue("billing"))
        .await
        .unwrap();
    let before = rt.conversation(id).await.unwrap();
    drop(ana);
    drop(rt);
    // Power cut (sync mode: everything acknowledged is in the store), then a new server.
    store.crash();
    let (rt, report) = start_durable(&store, None, BASE + 5_000).await;
    assert!(report.agents_in_grace.contains(&"ana".to_string()));
    assert_eq!(rt.live_interactions(), 2);
    assert_eq!(rt.conversation_actors(), 2);
    let after = rt.conversation(id).await.unwrap();
    assert_eq!(
        texts(&after),
        texts(&before),
        "transcript kept across the restart"
    );
    // Ana comes back within the grace: her work is still hers; she finishes it.
    let mut ana = rt.connect_agent("ana").unwrap();
    ana.set_presence(Presence::Available).await.unwrap();
    let view = ana.view().await.unwrap();
    assert!(
        view.work
            .iter()
            .any(|w| w.interaction == id && w.phase == "assigned"),
        "{view:?}"
    );
    // The work that waited through the restart is routed again: offered to her.
    let Push::Offer(offer) = next(&mut ana).await else {
        panic!()
    };
    assert_eq!(offer.interaction, waiting);
    ana.accept(waiting).await.unwrap();
    assert_eq!(
        next(&mut ana).await,
        Push::Assigned {
            interaction: waiting
        }
    );
    ana.complete(id, None).await.unwrap();
    assert!(matches!(next(&mut ana).await, Push::Completed { .. }));
    // The wrap-up timer of ana's work was armed by her rebuilt actor.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(next(&mut ana).await, Push::WrapUpEnded { interaction: id });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_on_real_time_serves_many_agents_at_once() {
    let agents: Vec<String> = (0..20).map(|n| format!("a{n}")).collect();
    let names: Vec<&str> = agents.iter().map(String::as_str).collect();
    let mut config = center(&names);
    config.queues[0].wrap_up_ms = 0;
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(config),
        JournalConfig {
            external_timers: true,
            ..Default::default()
        },
        BASE,
    )
    .unwrap();
    let rt = Arc::new(
        Runtime::start(
            journal,
            Clock::starting_at(BASE),
            RuntimeConfig::default(),
            vec![],
        )
        .await
        .unwrap(),
    );
    let completed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for a in &agents {
        let mut s = online(&rt, a).await;
        let completed = completed.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(push) = s.next().await {
                match push {
                    Push::Offer(o) => {
                        s.accept(o.interaction).await.unwrap();
                    }
                    Push::Assigned { interaction } => {
                        s.complete(interaction, None).await.unwrap();
                    }
                    Push::Completed { .. } => {
                        completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        }));
    }
    for n in 0..200 {
        rt.submit(NewInteraction::new("chat", &format!("c{n}")))
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while completed.load(std::sync::atomic::Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every interaction completed");
    for t in &tasks {
        t.abort();
    }
    assert_eq!(rt.live_interactions(), 0);
    assert_eq!(rt.read(|e| e.check_invariants(BASE)), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn an_actor_failing_with_events_in_its_mailbox_loses_nothing() {
    // Completion routed to a conversation actor that panics before passing it on: the
    // agent is rebuilt from the engine, so its wrap-up timer still ends the work.
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "c1", "hi").await;
    settle().await;
    while ana.try_next().is_some() {}
    assert!(rt.inject_panic(&ActorKey::Conversation(id)));
    ana.complete(id, None).await.unwrap(); // no settle: queued behind the panic
    settle().await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(
        rt.read(|e| e.interaction(id).unwrap().state),
        InteractionState::Completed
    );
    assert_eq!(rt.conversation_actors(), 0);

    // An offer routed to a conversation actor that panics: the agent still hears of it
    // (resync, then the offer again) and its timeout still fires.
    ana.set_presence(Presence::Away { reason: "x".into() })
        .await
        .unwrap();
    let id = rt.submit(NewInteraction::new("chat", "c2")).await.unwrap();
    settle().await;
    assert!(rt.inject_panic(&ActorKey::Conversation(id)));
    ana.set_presence(Presence::Available).await.unwrap(); // offered now
    settle().await;
    let mut offered = false;
    while let Some(p) = ana.try_next() {
        offered |= matches!(&p, Push::Offer(o) if o.interaction == id);
    }
    assert!(offered, "the agent was told of the offer");
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    let s = rt.read(|e| e.interaction(id).unwrap());
    assert!(
        s.history
            .iter()
            .any(|h| matches!(h, HistoryEntry::OfferEnded { how, .. } if &**how == "timed_out")),
        "{:?}",
        s.history
    );
}

#[tokio::test(start_paused = true)]
async fn bad_inbound_requests_are_refused_and_create_nothing() {
    let rt = start(center(&[]), RuntimeConfig::default()).await;
    rt.inbound(Inbound::new("chat", "c1", "hello"))
        .await
        .unwrap();
    let big = "x".repeat(70_000);
    let too_long = rt.inbound(Inbound::new("chat", "c1", &big)).await;
    assert!(
        matches!(&too_long, Err(RuntimeError::BadRequest(m)) if m.contains("70000 bytes")),
        "{too_long:?}"
    );
    let anonymous = rt.inbound(Inbound::new("chat", " ", "who am I")).await;
    assert!(
        matches!(&anonymous, Err(RuntimeError::BadRequest(m)) if m.contains("`customer` is empty")),
        "{anonymous:?}"
    );
    let fax = rt.inbound(Inbound::new("fax", "zed", "hi")).await;
    assert!(
        matches!(&fax, Err(RuntimeError::BadRequest(m)) if m.contains("unknown channel `fax`")),
        "{fax:?}"
    );
    assert_eq!(rt.read(|e| e.interaction_ids().len()), 1);
    assert_eq!(rt.live_interactions(), 1);
    // A submit through `execute` is admitted and counted like any other.
    let ack = rt
        .execute(Command::Submit {
            request: NewInteraction::new("chat", "c2"),
        })
        .await
        .unwrap();
    assert_eq!(rt.live_interactions(), 2);
    rt.abandon(ack.interaction.unwrap()).await.unwrap();
    settle().await;
    assert_eq!(rt.live_interactions(), 1);
}

struct Boom;
impl VirtualAgent for Boom {
    fn name(&self) -> &str {
        "boom"
    }
    fn respond(&self, m: &mut BotMemory, _t: &str) -> BotTurn {
        m.turns += 1;
        if m.turns == 2 {
            panic!("bot bug")
        }
        BotTurn::Reply("ok".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_abandoned_virtual_agent_does_not_strand_its_customer() {
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(center(&["ana"])),
        JournalConfig {
            durability: Durability::Batched { flush_every_ms: 5 },
            external_timers: true,
            ..Default::default()
        },
        BASE,
    )
    .unwrap();
    let rt = Runtime::start(
        journal,
        Clock::starting_at(BASE),
        RuntimeConfig::default(),
        vec![Arc::new(Boom), Arc::new(RuleBasedAgent::demo())],
    )
    .await
    .unwrap();
    let first = to_bot("boom", "cx", "hi");
    assert!(matches!(
        rt.inbound(first).await.unwrap(),
        InboundOutcome::Bot { .. }
    ));
    // The bot panics on the second message; the caller gets an error, not a hang.
    assert!(
        rt.inbound(Inbound::new("chat", "cx", "again"))
            .await
            .is_err()
    );
    settle().await;
    // The customer's next message starts afresh.
    let out = rt
        .inbound(Inbound::new("chat", "cx", "hello?"))
        .await
        .unwrap();
    assert!(matches!(out, InboundOutcome::Created { .. }), "{out:?}");
    // A bot conversation the customer walks away from ends after the window.
    let q = to_bot("order-bot", "cy", "hmm");
    assert!(matches!(
        rt.inbound(q).await.unwrap(),
        InboundOutcome::Bot { .. }
    ));
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    settle().await;
    let out = rt
        .inbound(Inbound::new("chat", "cy", "back"))
        .await
        .unwrap();
    assert!(matches!(out, InboundOutcome::Created { .. }), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn a_session_that_falls_behind_is_told_how_many_pushes_it_missed() {
    let rt = start(
        center(&["ana"]),
        RuntimeConfig {
            session_buffer: 2,
            ..Default::default()
        },
    )
    .await;
    let mut ana = online(&rt, "ana").await;
    for n in 0..5 {
        rt.submit(NewInteraction::new("chat", &format!("c{n}")))
            .await
            .unwrap();
    }
    settle().await;
    let mut seen = Vec::new();
    while let Some(p) = ana.try_next() {
        seen.push(p);
    }
    // Buffer of 2 (presence + first offer); the other offers were dropped and counted.
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The view tells the session where things stand.
    let offers = ana.view().await.unwrap().offers;
    assert!(offers.len() >= 2, "{offers:?}");
    // The next push is preceded by the count of what was missed.
    ana.reject(offers[0].0).await.unwrap();
    settle().await;
    let p = ana.try_next().unwrap();
    assert!(matches!(p, Push::Lagged { missed } if missed >= 1), "{p:?}");
}

#[tokio::test(start_paused = true)]
async fn an_eight_hour_day_runs_through_the_actors_on_virtual_time() {
    let agents: Vec<String> = (0..10).map(|n| format!("a{n}")).collect();
    let names: Vec<&str> = agents.iter().map(String::as_str).collect();
    let mut config = center(&names);
    config.queues[0].wrap_up_ms = 20_000;
    let rt = Arc::new(start(config, RuntimeConfig::default()).await);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for a in &agents {
        let mut s = online(&rt, a).await;
        let done = done.clone();
        tokio::spawn(async move {
            while let Some(p) = s.next().await {
                match p {
                    Push::Offer(o) => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        s.accept(o.interaction).await.unwrap();
                    }
                    Push::Assigned { interaction } => {
                        tokio::time::sleep(Duration::from_secs(240)).await;
                        s.complete(interaction, None).await.unwrap();
                    }
                    Push::WrapUpEnded { .. } => {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
    }
    // One chat a minute, each four minutes long, for eight hours.
    let wall = std::time::Instant::now();
    for n in 0..480 {
        rt.inbound(Inbound::new("chat", &format!("c{n}"), "hi"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 480);
    assert_eq!(rt.live_interactions(), 0);
    let stats = rt.queue_stats("q").await.unwrap();
    assert_eq!(stats.windows[2].abandoned, 0);
    assert_eq!(stats.windows[2].service_level, Some(1.0));
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "virtual time, not wall time"
    );
    assert_eq!(
        rt.read(|e| e.check_invariants(rt.clock().now_ms())),
        Vec::<String>::new()
    );
}

#[tokio::test(start_paused = true)]
async fn a_virtual_agent_escalates_at_the_live_limit_its_slot_becomes_the_interaction() {
    let rt = start(
        center(&["ana"]),
        RuntimeConfig {
            max_live_interactions: 1,
            ..Default::default()
        },
    )
    .await;
    let first = to_bot("order-bot", "cx", "hi");
    assert!(matches!(
        rt.inbound(first).await.unwrap(),
        InboundOutcome::Bot { .. }
    ));
    // The bot's slot is taken: another customer is refused.
    let other = to_bot("order-bot", "cy", "hi");
    assert!(matches!(
        rt.inbound(other).await,
        Err(RuntimeError::Busy(_))
    ));
    let out = rt
        .inbound(Inbound::new("chat", "cx", "I want a human agent"))
        .await;
    assert!(
        matches!(out, Ok(InboundOutcome::Escalated { .. })),
        "{out:?}"
    );
    assert_eq!(rt.live_interactions(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_actor_failing_with_events_for_a_previous_agent_resyncs_that_agent() {
    // The offer is rejected (and goes to bob) while ana's conversation actor is failing.
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = rt.submit(NewInteraction::new("chat", "c1")).await.unwrap();
    let _bob = online(&rt, "bob").await;
    let Push::Offer(_) = next(&mut ana).await else {
        panic!()
    };
    settle().await;
    while ana.try_next().is_some() {}
    assert!(rt.inject_panic(&ActorKey::Conversation(id)));
    ana.reject(id).await.unwrap();
    settle().await;
    let view = ana.view().await.unwrap();
    assert!(view.work.is_empty() && view.offers.is_empty(), "{view:?}");
    let mut resynced = false;
    while let Some(p) = ana.try_next() {
        resynced |= matches!(&p, Push::Resync(v) if v.work.is_empty());
    }
    assert!(resynced, "ana's sessions learn the offer is gone");

    // Transferred away while failing: no phantom assigned work.
    let mut ana2 = online(&rt, "ana").await;
    let bob_session = rt.connect_agent("bob").unwrap();
    bob_session
        .set_presence(Presence::Away { reason: "x".into() })
        .await
        .unwrap();
    let id = chat_accepted(&rt, &mut ana2, "c2", "hi").await;
    bob_session.set_presence(Presence::Available).await.unwrap();
    settle().await;
    assert!(rt.inject_panic(&ActorKey::Conversation(id)));
    ana2.transfer(id, TransferTarget::Agent("bob".into()))
        .await
        .unwrap();
    settle().await;
    let view = ana2.view().await.unwrap();
    assert!(
        view.work.iter().all(|w| w.interaction != id),
        "phantom work after transfer: {view:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn while_an_actor_is_being_restarted_callers_hear_unavailable_not_unknown() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "c1", "hi").await;
    // Failing over and over: after 5 quick restarts the supervisor backs off.
    let mut failures = 0;
    while rt.inject_panic(&ActorKey::Queue("q".into())) {
        failures += 1;
        assert!(failures <= 6, "no back-off");
        settle().await;
    }
    assert_eq!(failures, 6);
    for _ in 0..7 {
        rt.inject_panic(&ActorKey::Conversation(id));
        settle().await;
    }
    // In its back-off: the queue is configured but its actor is away for a while.
    let stats = rt.queue_stats("q").await;
    assert!(
        matches!(stats, Err(RuntimeError::Unavailable(_))),
        "{stats:?}"
    );
    // Agent messages do not need the conversation actor.
    ana.send_message(id, "still there?", None).await.unwrap();
    // After the back-off both are back.
    tokio::time::sleep(Duration::from_secs(70)).await;
    settle().await;
    assert!(rt.queue_stats("q").await.is_ok());
    let v = rt.conversation(id).await.unwrap();
    assert!(texts(&v).contains(&"still there?".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_customers_history_outlives_the_switching_window_until_the_engine_purges_it() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let first = chat_accepted(&rt, &mut ana, "cust-9", "first question").await;
    ana.complete(first, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await; // wrap-up ends
    while ana.try_next().is_some() {}
    // Past the switching window: a new conversation, not a continuation.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    let second = chat_accepted(&rt, &mut ana, "cust-9", "second question").await;
    ana.complete(second, None).await.unwrap();
    // Long past the switching window (housekeeping runs every 10 s and forgets the
    // customer's switching state), the engine still holds both conversations.
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    settle().await;
    let history = rt.customer_history("cust-9");
    let ids: Vec<InteractionId> = history.iter().map(|v| v.interaction).collect();
    assert_eq!(ids, vec![first, second], "both conversations, oldest first");
    assert!(texts(&history[0]).contains(&"first question".to_string()));
    assert!(rt.customer_history("nobody").is_empty());
    // The engine forgets work finished before a cutoff: the first conversation goes,
    // from the history at once and from the index at the next housekeeping.
    let cutoff = rt.read(|e| e.interaction(second).unwrap().created_ms);
    rt.execute(Command::PurgeFinished {
        finished_before_ms: cutoff,
    })
    .await
    .unwrap();
    let ids: Vec<InteractionId> = rt
        .customer_history("cust-9")
        .iter()
        .map(|v| v.interaction)
        .collect();
    assert_eq!(ids, vec![second]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(rt.indexed_history("cust-9"), vec![second]);
    rt.execute(Command::PurgeFinished {
        finished_before_ms: u64::MAX,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert!(rt.customer_history("cust-9").is_empty());
    assert!(
        rt.indexed_history("cust-9").is_empty(),
        "the index forgot the customer"
    );
}

#[tokio::test(start_paused = true)]
async fn work_in_wrap_up_at_a_restart_stops_counting_as_live_when_its_wrap_up_ends() {
    let store = Arc::new(MemoryStore::new());
    let (rt, _) = start_durable(&store, Some(center(&["ana"])), BASE).await;
    let mut ana = online(&rt, "ana").await;
    let id = chat_accepted(&rt, &mut ana, "c9", "hello").await;
    ana.complete(id, None).await.unwrap(); // a 60 s wrap-up starts
    assert_eq!(rt.live_interactions(), 0);
    // Another customer's work stays live through it all (a miscount would show).
    ana.set_presence(Presence::Away {
        reason: "break".into(),
    })
    .await
    .unwrap();
    rt.submit(NewInteraction::new("chat", "c10").to_queue("billing"))
        .await
        .unwrap();
    assert_eq!(rt.live_interactions(), 1);
    drop(ana);
    drop(rt);
    store.crash();
    let (rt, _) = start_durable(&store, None, BASE + 5_000).await;
    // Held by ana (in wrap-up) through the restart.
    let mut ana = rt.connect_agent("ana").unwrap();
    assert_eq!(
        rt.live_interactions(),
        2,
        "the wrap-up and the waiting work"
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    loop {
        match next(&mut ana).await {
            Push::WrapUpEnded { interaction } if interaction == id => break,
            _ => {}
        }
    }
    settle().await;
    assert_eq!(
        rt.live_interactions(),
        1,
        "the wrap-up finished: only the waiting work is live (counted once)"
    );
    let history: Vec<InteractionId> = rt
        .customer_history("c9")
        .iter()
        .map(|v| v.interaction)
        .collect();
    assert_eq!(history, vec![id]);
    // Writing again within the switching window, the customer returns to ana.
    assert_eq!(returning(&rt, "c9").await, (id, "ana".to_string()));
}

#[tokio::test(start_paused = true)]
async fn customers_are_forgotten_once_idle_past_the_switching_window_and_not_before() {
    // The default switching window: 10 minutes; housekeeping every 10 s.
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let c1 = chat_accepted(&rt, &mut ana, "c1", "hello").await;
    let mut bob = online(&rt, "bob").await;
    let c2 = chat_accepted(&rt, &mut bob, "c2", "hi").await;
    // Accepts `id` at whichever agent it was offered to; returns which (0 ana, 1 bob).
    async fn take(desks: [&mut AgentSession; 2], id: InteractionId) -> usize {
        settle().await;
        for (n, desk) in desks.into_iter().enumerate() {
            let mut offered = false;
            while let Some(push) = desk.try_next() {
                offered |= matches!(&push, Push::Offer(o) if o.interaction == id);
            }
            if offered {
                desk.accept(id).await.unwrap();
                return n;
            }
        }
        panic!("{id} offered to nobody");
    }
    ana.complete(c1, None).await.unwrap();
    let first_end = tokio::time::Instant::now();
    // c2's first conversation ends too, and c2 comes straight back with new work that
    // stays live: its end must never make housekeeping forget a live customer.
    bob.complete(c2, None).await.unwrap();
    let c2_live = rt
        .submit(NewInteraction::new("chat", "c2").to_queue("q"))
        .await
        .unwrap();
    settle().await;
    assert_eq!(rt.tracked_customers(), 2);
    // Wrap-ups over (60 s): the new work reaches an agent, who keeps it.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let holder = take([&mut ana, &mut bob], c2_live).await;
    // Within the window c1 is kept (its switching state).
    tokio::time::sleep_until(first_end + Duration::from_secs(5 * 60)).await;
    settle().await;
    assert_eq!(rt.tracked_customers(), 2);
    // c1 comes back with new work before the window ends, which finishes soon: its
    // first end must not make housekeeping forget it early.
    let again = rt
        .submit(NewInteraction::new("chat", "c1").to_queue("q"))
        .await
        .unwrap();
    let other = take([&mut ana, &mut bob], again).await;
    assert_ne!(other, holder);
    let desk = if other == 0 { &ana } else { &bob };
    desk.complete(again, None).await.unwrap();
    let second_end = tokio::time::Instant::now();
    // Past the window after both first ends: c1 was active lately, c2 is live.
    tokio::time::sleep_until(first_end + Duration::from_secs(10 * 60 + 30)).await;
    settle().await;
    assert_eq!(rt.tracked_customers(), 2, "c1 active lately; c2 live");
    // Past the window after c1's last end: c1 is forgotten, live c2 is not.
    tokio::time::sleep_until(second_end + Duration::from_secs(10 * 60 + 11)).await;
    settle().await;
    assert_eq!(rt.tracked_customers(), 1, "c2 only");
    let desk = if holder == 0 { &ana } else { &bob };
    desk.complete(c2_live, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10 * 60 + 11)).await;
    settle().await;
    assert_eq!(rt.tracked_customers(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_finished_conversation_s_actor_serves_the_next_one_and_answers_only_for_it() {
    let rc = RuntimeConfig {
        idle_conversation_actors: 1,
        ..RuntimeConfig::default()
    };
    let rt = start(center(&["ana", "bob"]), rc).await;
    let mut ana = online(&rt, "ana").await;
    let first = chat_accepted(&rt, &mut ana, "c1", "first").await;
    ana.send_message(first, "from ana", None).await.unwrap();
    ana.complete(first, None).await.unwrap();
    settle().await;
    // In wrap-up: still live, its actor still holds it.
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (1, 0)
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (0, 1)
    );

    // The next interaction takes the idle actor, which starts clean.
    while ana.try_next().is_some() {}
    let second = chat_accepted(&rt, &mut ana, "c2", "second").await;
    settle().await;
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (1, 0)
    );
    let view = rt.conversation(second).await.unwrap();
    assert_eq!(view.customer, "c2");
    assert!(
        texts(&view).contains(&"second".to_string()),
        "{:?}",
        texts(&view)
    );
    assert!(!texts(&view).iter().any(|t| t == "first" || t == "from ana"));
    assert_eq!(view.participants.len(), 2, "{:?}", view.participants);
    // The first one is answered from the engine, not by the actor that now serves
    // the second.
    let old = rt.conversation(first).await.unwrap();
    assert_eq!(old.customer, "c1");
    assert!(texts(&old).contains(&"from ana".to_string()));
    assert!(!texts(&old).contains(&"second".to_string()));

    // A reused actor that fails is restarted for its interaction like any other.
    crashed_then_written_to(&rt, second, "c2", "again", &view).await;

    // Two finish at once: the pool keeps one, the other actor stops.
    let mut bob = online(&rt, "bob").await;
    let third = chat_accepted(&rt, &mut bob, "c3", "third").await;
    ana.complete(second, None).await.unwrap();
    bob.complete(third, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (0, 1)
    );
    assert_eq!(rt.live_interactions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_session_with_a_push_handler_gets_every_push_in_order_as_it_is_sent() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut ana = rt
        .connect_agent_with("ana", move |push| log.lock().unwrap().push(push))
        .unwrap();
    assert!(ana.take_pushes().is_none(), "no buffer to read");
    assert!(ana.try_next().is_none());
    assert!(matches!(
        rt.connect_agent_with("nobody", |_| {}),
        Err(RuntimeError::UnknownAgent(a)) if a == "nobody"
    ));
    ana.set_presence(Presence::Available).await.unwrap();
    let id = rt
        .submit(NewInteraction::new("chat", "c1").to_queue("q"))
        .await
        .unwrap();
    settle().await;
    ana.accept(id).await.unwrap();
    ana.complete(id, None).await.unwrap();
    settle().await;
    let kinds: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| !matches!(p, Push::Presence { .. }))
        .map(|p| match p {
            Push::Offer(o) => format!("offer {} {}", o.interaction, o.customer),
            Push::Assigned { interaction } => format!("assigned {interaction}"),
            Push::Completed { interaction, .. } => format!("completed {interaction}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            format!("offer {id} c1"),
            format!("assigned {id}"),
            format!("completed {id}")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_offer_s_context_from_the_router_is_what_the_conversation_holds() {
    let rt = start(center(&["ana", "bob"]), RuntimeConfig::default()).await;
    let mut ana = online(&rt, "ana").await;
    let mut request = NewInteraction::new("chat", "c1").to_queue("q");
    request
        .attributes
        .insert("order".to_string(), "A-17".to_string());
    let id = rt.submit(request).await.unwrap();
    let Push::Offer(first) = next(&mut ana).await else {
        panic!("offer expected")
    };
    settle().await;
    let held = rt.conversation(id).await.unwrap();
    assert_eq!(first.customer, "c1");
    assert_eq!(
        first.attributes.get("order").map(String::as_str),
        Some("A-17")
    );
    assert_eq!(first.transcript, held.transcript, "the transcript so far");
    assert_eq!(
        texts(&held),
        [
            "created in queue q".to_string(),
            "offered to ana".to_string()
        ]
    );
    // A re-offer's context comes from the conversation actor: the same, plus what
    // happened since.
    let mut bob = online(&rt, "bob").await;
    ana.reject(id).await.unwrap();
    let Push::Offer(again) = next(&mut bob).await else {
        panic!("offer expected")
    };
    assert_eq!(
        (again.customer.as_str(), &again.attributes),
        ("c1", &first.attributes)
    );
    assert_eq!(again.transcript[..2], first.transcript[..]);
    assert_eq!(
        again.transcript[2..]
            .iter()
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>(),
        ["offer to ana ended: rejected", "offered to bob"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fault_aimed_at_a_finishing_conversation_does_not_kill_its_pooled_actor() {
    let mut config = center(&["ana", "bob"]);
    config.queues[0].wrap_up_ms = 0;
    let rc = RuntimeConfig {
        idle_conversation_actors: 4,
        ..RuntimeConfig::default()
    };
    let rt = start(config, rc).await;
    let mut ana = online(&rt, "ana").await;
    let x = chat_accepted(&rt, &mut ana, "c1", "first").await;
    // Its end is routed; the fault is aimed at it before its actor reads the end.
    ana.complete(x, None).await.unwrap();
    assert!(rt.inject_panic(&ActorKey::Conversation(x)));
    settle().await;
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (0, 1)
    );

    // The next interaction gets that actor, alive and clean, and exactly one offer.
    while ana.try_next().is_some() {}
    let mut request = NewInteraction::new("chat", "c2").to_queue("q");
    request.attributes.insert("tier".into(), "gold".into());
    let y = rt.submit(request).await.unwrap();
    settle().await;
    assert_eq!(
        (rt.conversation_actors(), rt.idle_conversation_actors()),
        (1, 0)
    );
    let offers: Vec<Push> = std::iter::from_fn(|| ana.try_next())
        .filter(|p| matches!(p, Push::Offer(_)))
        .collect();
    assert_eq!(offers.len(), 1, "one offer push: {offers:?}");
    let view = rt.conversation(y).await.unwrap();
    assert_eq!(
        (
            view.customer.as_str(),
            view.queue.as_str(),
            view.channels.clone(),
            view.agent.as_deref()
        ),
        ("c2", "q", vec!["chat".to_string()], Some("ana"))
    );
    assert_eq!(view.attributes.len(), 1, "{:?}", view.attributes);
    assert_eq!(texts(&view), ["created in queue q", "offered to ana"]);
    // Its next offer's context comes from that actor.
    let mut bob = online(&rt, "bob").await;
    ana.reject(y).await.unwrap();
    let Push::Offer(again) = next(&mut bob).await else {
        panic!("offer expected")
    };
    assert_eq!((again.interaction, again.customer.as_str()), (y, "c2"));
}

#[tokio::test(start_paused = true)]
async fn a_push_handler_may_drop_its_own_session() {
    let rt = start(center(&["ana"]), RuntimeConfig::default()).await;
    let held: Arc<std::sync::Mutex<Option<AgentSession>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (slot, count) = (held.clone(), seen.clone());
    let ana = rt
        .connect_agent_with("ana", move |push| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if matches!(push, Push::Offer(_)) {
                // Hang up from inside the handler.
                drop(slot.lock().unwrap().take());
            }
        })
        .unwrap();
    ana.set_presence(Presence::Available).await.unwrap();
    *held.lock().unwrap() = Some(ana);
    rt.submit(NewInteraction::new("chat", "c1").to_queue("q"))
        .await
        .unwrap();
    settle().await;
    assert!(held.lock().unwrap().is_none(), "the handler dropped it");
    let calls = seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls >= 2, "presence and offer: {calls}");
    // The agent actor is alive and answers.
    let view = rt.agent_view("ana").await.unwrap();
    assert_eq!(view.sessions, 0);
}
