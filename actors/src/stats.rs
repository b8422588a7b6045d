//! Waiting-work statistics per queue over sliding windows, computed from the engine's
//! events: service level, average speed of answer, abandon rate, plus the live depth and
//! longest wait read from the engine when asked.
//!
//! Definitions (the usual contact-center ones; stated so reports can be compared):
//! * an interaction's **wait** runs from its enqueue time (its creation; transfers and
//!   relaxation keep it) to its first acceptance, or to its abandonment;
//! * it counts for the queue it was in when it was **answered** (first accepted) or
//!   **abandoned**, at that moment; a window holds the outcomes of the last `window_ms`;
//! * **service level** = answered within the queue's threshold ÷ (answered + abandoned);
//! * **average speed of answer** = mean wait of the answered;
//! * **abandon rate** = abandoned ÷ (answered + abandoned).
//!
//! Everything takes `now_ms` (no clock reads), so it runs on virtual time.

use omniroute_engine::{Event, InteractionId, TimeMs, TransferTarget};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How one interaction's wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// First accepted after waiting this long.
    Answered {
        /// Wait, ms.
        wait_ms: u64,
    },
    /// The customer left after waiting this long.
    Abandoned {
        /// Wait, ms.
        wait_ms: u64,
    },
}

/// One queue's outcomes over the longest window kept: what a queue actor owns. Outcomes
/// are counted per second (answered, answered within the service-level threshold in
/// force when they happened, abandoned, total wait), so memory is bounded by the window
/// (at most 3,600 buckets for an hour) whatever the traffic; windows are exact to the
/// second.
#[derive(Debug)]
pub struct QueueWindow {
    retain_ms: u64,
    threshold_ms: u64,
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    answered: u64,
    answered_in_threshold: u64,
    abandoned: u64,
    wait_sum_ms: u64,
}

impl QueueWindow {
    /// Keeps outcomes for `retain_ms`; counts answers within `threshold_ms`.
    pub fn new(retain_ms: u64, threshold_ms: u64) -> Self {
        QueueWindow {
            retain_ms,
            threshold_ms,
            buckets: VecDeque::new(),
        }
    }

    /// The service-level threshold for outcomes recorded from now on.
    pub fn set_threshold(&mut self, threshold_ms: u64) {
        self.threshold_ms = threshold_ms;
    }

    /// Records an outcome at `at_ms` (in time order).
    pub fn record(&mut self, at_ms: TimeMs, outcome: Outcome) {
        let second = at_ms / 1000;
        if self.buckets.back().is_none_or(|b| b.second < second) {
            self.buckets.push_back(Bucket {
                second,
                ..Bucket::default()
            });
        }
        let threshold = self.threshold_ms;
        let b = self.buckets.back_mut().expect("just pushed");
        match outcome {
            Outcome::Answered { wait_ms } => {
                b.answered += 1;
                b.wait_sum_ms += wait_ms;
                if wait_ms <= threshold {
                    b.answered_in_threshold += 1;
                }
            }
            Outcome::Abandoned { .. } => b.abandoned += 1,
        }
        let horizon = at_ms.saturating_sub(self.retain_ms) / 1000;
        while self.buckets.front().is_some_and(|b| b.second < horizon) {
            self.buckets.pop_front();
        }
    }

    /// Figures over the last `window_ms` (at most the retention) before `now_ms`.
    pub fn window(&self, now_ms: TimeMs, window_ms: u64) -> WindowStats {
        let window_ms = window_ms.min(self.retain_ms);
        let from = now_ms.saturating_sub(window_ms) / 1000;
        let (mut answered, mut in_threshold, mut abandoned, mut wait_sum) = (0, 0, 0, 0);
        for b in self.buckets.iter().rev().take_while(|b| b.second >= from) {
            answered += b.answered;
            in_threshold += b.answered_in_threshold;
            abandoned += b.abandoned;
            wait_sum += b.wait_sum_ms;
        }
        WindowStats::from_counts(window_ms, answered, in_threshold, abandoned, wait_sum)
    }
}

/// One queue's outcomes, oldest first, kept for the longest window asked of it.
#[derive(Debug, Default)]
struct QueueOutcomes {
    outcomes: VecDeque<(TimeMs, Outcome)>,
}

/// A queue's figures over one window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Window length.
    pub window_ms: u64,
    /// Answered in the window.
    pub answered: u64,
    /// Of those, answered within the service-level threshold.
    pub answered_in_threshold: u64,
    /// Abandoned in the window.
    pub abandoned: u64,
    /// Answered within threshold ÷ (answered + abandoned); `None` with no outcome.
    pub service_level: Option<f64>,
    /// Mean wait of the answered, ms; `None` with none answered.
    pub average_speed_of_answer_ms: Option<f64>,
    /// Abandoned ÷ (answered + abandoned); `None` with no outcome.
    pub abandon_rate: Option<f64>,
}

/// Per-interaction bookkeeping while it may still be answered or abandoned.
#[derive(Clone, Debug)]
struct Open {
    queue: Arc<str>,
    enqueued_ms: TimeMs,
}

/// Outcomes of every queue, fed with the engine's events in order.
#[derive(Debug)]
pub struct QueueStatsBook {
    retain_ms: u64,
    open: HashMap<InteractionId, Open>,
    queues: HashMap<Arc<str>, QueueOutcomes>,
}

impl QueueStatsBook {
    /// A book that can answer windows up to `retain_ms` long.
    pub fn new(retain_ms: u64) -> Self {
        QueueStatsBook {
            retain_ms,
            open: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    /// Interactions created and neither answered nor abandoned yet.
    pub fn open_interactions(&self) -> usize {
        self.open.len()
    }

    /// Takes one event that happened at `now_ms`.
    pub fn observe(&mut self, event: &Event, now_ms: TimeMs) {
        match event {
            Event::Created {
                interaction, queue, ..
            } => {
                self.open.insert(
                    *interaction,
                    Open {
                        queue: queue.clone(),
                        enqueued_ms: now_ms,
                    },
                );
            }
            Event::Queued {
                interaction, queue, ..
            }
            | Event::Offered {
                interaction, queue, ..
            } => {
                if let Some(open) = self.open.get_mut(interaction) {
                    open.queue = queue.clone();
                }
            }
            Event::Transferred {
                interaction,
                to: TransferTarget::Queue(queue),
                ..
            } => {
                if let Some(open) = self.open.get_mut(interaction) {
                    open.queue = Arc::from(queue.as_str());
                }
            }
            Event::Accepted { interaction, .. } => {
                if let Some(open) = self.open.remove(interaction) {
                    let wait_ms = now_ms.saturating_sub(open.enqueued_ms);
                    self.record(open.queue, now_ms, Outcome::Answered { wait_ms });
                }
            }
            Event::Abandoned {
                interaction, queue, ..
            } => {
                if let Some(open) = self.open.remove(interaction) {
                    let wait_ms = now_ms.saturating_sub(open.enqueued_ms);
                    self.record(queue.clone(), now_ms, Outcome::Abandoned { wait_ms });
                }
            }
            _ => {}
        }
    }

    fn record(&mut self, queue: Arc<str>, now_ms: TimeMs, outcome: Outcome) {
        let q = self.queues.entry(queue).or_default();
        q.outcomes.push_back((now_ms, outcome));
        let horizon = now_ms.saturating_sub(self.retain_ms);
        while q.outcomes.front().is_some_and(|(at, _)| *at < horizon) {
            q.outcomes.pop_front();
        }
    }

    /// `queue`'s figures over the last `window_ms` (at most the retention) before
    /// `now_ms`, with `threshold_ms` the service-level threshold.
    pub fn window(
        &self,
        queue: &str,
        now_ms: TimeMs,
        window_ms: u64,
        threshold_ms: u64,
    ) -> WindowStats {
        summarise(
            self.queues.get(queue),
            now_ms,
            window_ms.min(self.retain_ms),
            threshold_ms,
        )
    }
}

fn summarise(
    q: Option<&QueueOutcomes>,
    now_ms: TimeMs,
    window_ms: u64,
    threshold_ms: u64,
) -> WindowStats {
    let from = now_ms.saturating_sub(window_ms);
    let (mut answered, mut in_threshold, mut abandoned, mut total_wait) = (0, 0, 0, 0);
    if let Some(q) = q {
        for (_, outcome) in q.outcomes.iter().rev().take_while(|(at, _)| *at >= from) {
            match *outcome {
                Outcome::Answered { wait_ms } => {
                    answered += 1;
                    total_wait += wait_ms;
                    if wait_ms <= threshold_ms {
                        in_threshold += 1;
                    }
                }
                Outcome::Abandoned { .. } => abandoned += 1,
            }
        }
    }
    WindowStats::from_counts(window_ms, answered, in_threshold, abandoned, total_wait)
}

impl WindowStats {
    /// The figures from the window's counts (ratios `None` when nothing ended).
    fn from_counts(
        window_ms: u64,
        answered: u64,
        answered_in_threshold: u64,
        abandoned: u64,
        wait_sum_ms: u64,
    ) -> WindowStats {
        let ended = answered + abandoned;
        let ratio = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        WindowStats {
            window_ms,
            answered,
            answered_in_threshold,
            abandoned,
            service_level: ratio(answered_in_threshold, ended),
            average_speed_of_answer_ms: ratio(wait_sum_ms, answered),
            abandon_rate: ratio(abandoned, ended),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omniroute_engine::InteractionState;

    fn created(id: u64, queue: &str) -> Event {
        Event::Created {
            interaction: InteractionId(id),
            queue: Arc::from(queue),
            channel: Arc::from("chat"),
            priority: 0,
            rule: None,
        }
    }

    fn accepted(id: u64) -> Event {
        Event::Accepted {
            interaction: InteractionId(id),
            agent: Arc::from("a"),
        }
    }

    fn abandoned(id: u64, queue: &str) -> Event {
        Event::Abandoned {
            interaction: InteractionId(id),
            queue: Arc::from(queue),
            previous_state: InteractionState::Queued,
        }
    }

    #[test]
    fn service_level_speed_of_answer_and_abandon_rate_over_a_window() {
        let mut book = QueueStatsBook::new(3_600_000);
        book.observe(&created(1, "q"), 0);
        book.observe(&created(2, "q"), 0);
        book.observe(&created(3, "q"), 0);
        book.observe(&created(4, "q"), 0);
        book.observe(&accepted(1), 10_000); // within 20 s
        book.observe(&accepted(2), 30_000); // late
        book.observe(&accepted(2), 31_000); // a second acceptance (after a transfer) does not count
        book.observe(&abandoned(3, "q"), 40_000);
        let w = book.window("q", 60_000, 900_000, 20_000);
        assert_eq!(
            (w.answered, w.answered_in_threshold, w.abandoned),
            (2, 1, 1)
        );
        assert_eq!(w.service_level, Some(1.0 / 3.0));
        assert_eq!(w.average_speed_of_answer_ms, Some(20_000.0));
        assert_eq!(w.abandon_rate, Some(1.0 / 3.0));
        assert_eq!(book.open_interactions(), 1);
        // A 25-second window at 60 s sees only the abandon at 40 s.
        let w = book.window("q", 60_000, 25_000, 20_000);
        assert_eq!((w.answered, w.abandoned), (0, 1));
        assert_eq!(w.average_speed_of_answer_ms, None);
        assert_eq!(
            book.window("other", 60_000, 900_000, 20_000).service_level,
            None
        );
    }

    #[test]
    fn outcomes_count_in_the_queue_the_interaction_was_in_and_keep_its_age() {
        let mut book = QueueStatsBook::new(3_600_000);
        book.observe(&created(1, "sales"), 1_000);
        book.observe(
            &Event::Transferred {
                interaction: InteractionId(1),
                from_agent: None,
                to: TransferTarget::Queue("billing".into()),
            },
            5_000,
        );
        book.observe(&accepted(1), 8_000);
        assert_eq!(book.window("sales", 9_000, 60_000, 20_000).answered, 0);
        let w = book.window("billing", 9_000, 60_000, 20_000);
        assert_eq!(w.answered, 1);
        assert_eq!(w.average_speed_of_answer_ms, Some(7_000.0));
    }

    #[test]
    fn old_outcomes_are_dropped_past_the_retention() {
        let mut book = QueueStatsBook::new(60_000);
        for n in 0..100 {
            book.observe(&created(n, "q"), n * 10_000);
            book.observe(&accepted(n), n * 10_000 + 1);
        }
        let kept = book.queues["q" as &str].outcomes.len();
        assert!(kept <= 7, "{kept} outcomes kept for a 60 s retention");
        // Windows longer than the retention are cut to it.
        assert_eq!(book.window("q", 990_001, 3_600_000, 1).window_ms, 60_000);
    }
}
