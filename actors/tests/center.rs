//! The center on tokio's paused clock: timers fire as virtual time passes, and every
//! event reaches the bus in order.

use omniroute_actors::bus::Delivery;
use omniroute_actors::center::{Center, Clock};
use omniroute_engine::journal::{Command, Journal, JournalConfig, MemoryStore};
use omniroute_engine::*;
use std::sync::Arc;
use std::time::Duration;

mod common;

fn center() -> CenterConfig {
    let mut config = common::one_queue_center();
    config.queues[0].offer_timeout_ms = 30_000;
    config.queues[0].wrap_up_ms = 60_000;
    config.agents = vec![AgentDef {
        id: "ana".into(),
        name: "Ana".into(),
        skills: vec![SkillLevel {
            skill: "s".into(),
            proficiency: 5,
        }],
        capacity: CapacityProfile::simple(10, &["chat"]),
    }];
    config
}

#[tokio::test(start_paused = true)]
async fn an_hour_of_offer_timeouts_and_wrap_ups_runs_on_virtual_time() {
    let base = 1_764_000_000_000;
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(center()),
        JournalConfig::default(),
        base,
    )
    .unwrap();
    let center = Center::start(journal, Clock::starting_at(base), 1_024);
    let mut events = center.bus().subscribe();
    center
        .execute(Command::SetPresence {
            agent: "ana".into(),
            presence: Presence::Available,
        })
        .unwrap();
    // The offer times out after 30 s of virtual time; ana missed it (the interaction
    // goes back to her: she is the only agent).
    let id = center
        .execute(Command::Submit {
            request: NewInteraction::new("chat", "c1"),
        })
        .unwrap()
        .interaction
        .unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let timed_out = center.read(|e| {
        e.interaction(id)
            .unwrap()
            .history
            .iter()
            .any(|h| matches!(h, HistoryEntry::OfferEnded { how, .. } if &**how == "timed_out"))
    });
    assert!(timed_out, "the offer timer fired on virtual time");
    // Accept the new offer, complete: the 60 s wrap-up ends by itself.
    center
        .execute(Command::Accept {
            agent: "ana".into(),
            interaction: id,
        })
        .unwrap();
    center
        .execute(Command::Complete {
            agent: "ana".into(),
            interaction: id,
            wrap_up_code: None,
        })
        .unwrap();
    assert_eq!(
        center.read(|e| e.interaction(id).unwrap().state),
        InteractionState::WrapUp
    );
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        center.read(|e| e.interaction(id).unwrap().state),
        InteractionState::Completed
    );
    // Everything reached the bus, in log order.
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    while let Some(d) = events.try_next() {
        match d {
            Delivery::Record(r) => {
                seqs.push(r.seq);
                kinds.extend(r.events.iter().map(|e| {
                    format!("{e:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string()
                }));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for kind in [
        "Created",
        "Offered",
        "OfferTimedOut",
        "Accepted",
        "Completed",
        "WrapUpEnded",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}
