//! The ordered stream of routing events for observers (supervisor dashboards, the
//! transport's subscribers).
//!
//! The bus is fed by [`Journal::observe`](omniroute_engine::journal::Journal::observe):
//! records arrive in log order when their writer is acknowledged — in `sync` mode only
//! once durable, so an observer never sees an event a restart could take back; in
//! `batched` mode at append, with the same loss window as the acknowledgements. Each subscriber has a bounded buffer of `capacity`
//! records; one that falls behind by more loses the oldest and is told how many it
//! missed ([`Delivery::Lagged`]) — the publisher never waits for a slow subscriber and
//! memory stays bounded.

use omniroute_engine::journal::Published;
use std::sync::Arc;
use tokio::sync::broadcast;

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// The next durable record's events.
    Record(Arc<Published>),
    /// The subscriber fell behind: this many records were dropped for it; the stream
    /// goes on with the oldest record still buffered. Re-read state (a snapshot) to
    /// resynchronise.
    Lagged {
        /// Records missed.
        missed: u64,
    },
    /// The bus is gone (the server is stopping).
    Closed,
}

/// The routing-event bus (see the module docs).
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl EventBus {
    /// A bus whose subscribers each buffer up to `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Publishes one record to every current subscriber (never blocks).
    pub fn publish(&self, record: &Published) {
        // No subscriber is not an error: nobody is watching (and nothing is copied).
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(record.clone()));
        }
    }

    /// The function to hand to `Journal::observe`.
    pub fn observer(&self) -> impl Fn(&Published) + Send + Sync + 'static {
        let bus = self.clone();
        move |record| bus.publish(record)
    }

    /// A new subscription, starting with the next record published.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// One subscriber's view of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Published>>,
}

impl Subscription {
    /// The next delivery; waits for one.
    pub async fn next(&mut self) -> Delivery {
        match self.rx.recv().await {
            Ok(record) => Delivery::Record(record),
            Err(broadcast::error::RecvError::Lagged(missed)) => Delivery::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => Delivery::Closed,
        }
    }

    /// The next delivery if one is ready.
    pub fn try_next(&mut self) -> Option<Delivery> {
        match self.rx.try_recv() {
            Ok(record) => Some(Delivery::Record(record)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(Delivery::Lagged { missed })
            }
            Err(broadcast::error::TryRecvError::Closed) => Some(Delivery::Closed),
            Err(broadcast::error::TryRecvError::Empty) => None,
        }
    }
}
