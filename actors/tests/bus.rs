//! The event bus over a real journal: ordered, durable-only, bounded with a lag signal.

use omniroute_actors::bus::{Delivery, EventBus};
use omniroute_engine::journal::{Command, Journal, JournalConfig, MemoryStore};
use omniroute_engine::*;
use std::sync::Arc;

mod common;
use common::one_queue_center as center;

fn submit(j: &Journal<Arc<MemoryStore>>, n: u64) -> u64 {
    j.execute(
        Command::Submit {
            request: NewInteraction::new("chat", &format!("c{n}")),
        },
        n,
    )
    .unwrap()
    .seq
    .unwrap()
}

#[tokio::test]
async fn subscribers_get_every_durable_record_in_order() {
    let store = Arc::new(MemoryStore::new());
    let (j, _) = Journal::open(store, Some(center()), JournalConfig::default(), 0).unwrap();
    let bus = EventBus::new(64);
    j.observe(bus.observer());
    let mut sub = bus.subscribe();
    let seqs: Vec<u64> = (0..10).map(|n| submit(&j, n)).collect();
    for seq in seqs {
        match sub.next().await {
            Delivery::Record(r) => {
                assert_eq!(r.seq, seq);
                assert_eq!(r.command, "submit");
                assert!(
                    matches!(r.events[0], Event::Created { .. }),
                    "{:?}",
                    r.events
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sub.try_next(), None);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
    let store = Arc::new(MemoryStore::new());
    let (j, _) = Journal::open(store, Some(center()), JournalConfig::default(), 0).unwrap();
    let bus = EventBus::new(4);
    j.observe(bus.observer());
    let mut slow = bus.subscribe();
    let seqs: Vec<u64> = (0..10).map(|n| submit(&j, n)).collect();
    assert_eq!(slow.next().await, Delivery::Lagged { missed: 6 });
    for seq in &seqs[6..] {
        match slow.next().await {
            Delivery::Record(r) => assert_eq!(r.seq, *seq),
            other => panic!("{other:?}"),
        }
    }
    drop(bus);
    drop(j); // the journal holds the last sender through its observer
    assert_eq!(slow.next().await, Delivery::Closed);
}
