//! The actors' timers (offer time-outs, wrap-up ends, reconnect grace, relaxation
//! steps, preferred-agent fallbacks) in one place: a map ordered by due time and one
//! driver task that sleeps until the earliest. Arming or cancelling a timer is a map
//! insert or removal under a short lock — not a tokio task spawned per timer, woken and
//! torn down when the timer is cancelled, which is what most timers are (an offer is
//! usually answered before it times out).
//!
//! Timers due at the same instant fire in the order they were armed. On tokio's paused
//! clock the driver's sleep is what moves virtual time to the next due timer, as a
//! task's sleep would.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

type Fire = Box<dyn FnOnce() + Send>;

/// The timers of one runtime.
#[derive(Default)]
pub(crate) struct Timers {
    inner: Mutex<Inner>,
    /// Wakes the driver when the earliest due time moves earlier.
    earlier: Notify,
}

#[derive(Default)]
struct Inner {
    next: u64,
    due: BTreeMap<(Instant, u64), Fire>,
}

/// A timer armed with [`Timers::arm`]; [`TimerHandle::cancel`] disarms it. Dropping the
/// handle leaves the timer armed.
#[derive(Debug)]
pub(crate) struct TimerHandle {
    key: (Instant, u64),
    timers: std::sync::Weak<Timers>,
}

impl TimerHandle {
    /// Disarms the timer (nothing happens if it has fired already).
    pub fn cancel(self) {
        if let Some(t) = self.timers.upgrade() {
            t.inner.lock().due.remove(&self.key);
        }
    }
}

impl Timers {
    /// Runs `fire` at `at` (at once on the driver's next turn if `at` has passed).
    pub fn arm(self: &Arc<Self>, at: Instant, fire: impl FnOnce() + Send + 'static) -> TimerHandle {
        let key = {
            let mut inner = self.inner.lock();
            inner.next += 1;
            let key = (at, inner.next);
            let earliest = inner.due.first_key_value().is_none_or(|(k, _)| key < *k);
            inner.due.insert(key, Box::new(fire));
            if earliest {
                self.earlier.notify_one();
            }
            key
        };
        TimerHandle {
            key,
            timers: Arc::downgrade(self),
        }
    }

    /// Timers armed and not yet fired.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().due.len()
    }

    /// Fires timers as they fall due (the runtime aborts this task when it stops).
    pub async fn drive(self: Arc<Self>) {
        loop {
            let next = self.inner.lock().due.first_key_value().map(|(k, _)| k.0);
            let earlier = self.earlier.notified();
            match next {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = earlier => {}
                },
                None => earlier.await,
            }
            let now = Instant::now();
            loop {
                // One at a time, the lock released while it fires (a timer may arm
                // another).
                let fire = {
                    let mut inner = self.inner.lock();
                    match inner.due.first_entry() {
                        Some(e) if e.key().0 <= now => Some(e.remove()),
                        _ => None,
                    }
                };
                match fire {
                    Some(f) => f(),
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_due_order_and_cancelled_ones_never() {
        let timers = Arc::new(Timers::default());
        tokio::spawn(timers.clone().drive());
        let fired = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let arm = |ms: u64, name: &'static str| {
            let fired = fired.clone();
            timers.arm(start + Duration::from_millis(ms), move || {
                fired.lock().push((name, start.elapsed().as_millis()))
            })
        };
        let _late = arm(3_000, "c");
        let _a = arm(1_000, "a");
        let cancelled = arm(2_000, "never");
        let _b = arm(2_000, "b");
        let _b2 = arm(2_000, "b2"); // same instant: in arming order
        cancelled.cancel();
        assert_eq!(timers.len(), 4);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        // One armed while the driver sleeps towards a later one still fires first.
        let _early = arm(2_600, "early");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            *fired.lock(),
            vec![
                ("a", 1_000),
                ("b", 2_000),
                ("b2", 2_000),
                ("early", 2_600),
                ("c", 3_000)
            ]
        );
        assert_eq!(timers.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_due_already_fires_at_once() {
        let timers = Arc::new(Timers::default());
        tokio::spawn(timers.clone().drive());
        let fired = Arc::new(Mutex::new(0));
        let f = fired.clone();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        timers.arm(start, move || *f.lock() += 1);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(*fired.lock(), 1);
        assert_eq!(start.elapsed(), Duration::from_millis(10), "no time passed");
    }
}
