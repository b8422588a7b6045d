//! `omniroute drive`: the demo center on real time through the durable journal, with
//! random traffic from several writer threads, printing one line per acknowledgement.
//! The crash test kills it with SIGKILL at random moments and checks that everything it
//! printed survived. `omniroute repair` is the documented fix for a damaged log.
//!
//! Output (stdout, one line each, flushed):
//! ```text
//! RECOVERED snapshot=<seq|-> replayed=<n> tail_cut=<key|-> offers_requeued=<n> in_grace=<n> last_seq=<seq>
//! ACK <seq> <op> <interaction|-> <at_ms>
//! DONE acks=<n>
//! ```
//! A line is printed only after its record is durable under the chosen mode.

use omniroute_engine::journal::{Command, Durability, Journal, JournalConfig, SledStore};
use omniroute_engine::*;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> TimeMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimeMs)
}

/// What `drive` runs with.
pub struct DriveOptions {
    pub seed: u64,
    pub writers: usize,
    pub ops: u64,
    pub journal: JournalConfig,
}

pub fn open(
    dir: &Path,
    config: CenterConfig,
    journal: JournalConfig,
) -> Result<Journal<SledStore>, String> {
    let (journal, report) =
        Journal::open_dir(dir, Some(config), journal, wall_ms()).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "RECOVERED snapshot={} replayed={} tail_cut={} offers_requeued={} in_grace={} last_seq={}",
        report
            .snapshot_seq
            .map_or("-".to_string(), |s| s.to_string()),
        report.replayed,
        report
            .tail_cut
            .as_ref()
            .map_or("-".to_string(), |c| c.key.to_string()),
        report.offers_requeued,
        report.agents_in_grace.len(),
        report.last_seq,
    );
    let _ = out.flush();
    Ok(journal)
}

pub fn drive(dir: &Path, config: CenterConfig, options: DriveOptions) -> Result<(), String> {
    let agents: Vec<String> = config.agents.iter().map(|a| a.id.clone()).collect();
    let journal = open(dir, config, options.journal)?;
    let acks = AtomicU64::new(0);
    let failure = std::sync::Mutex::new(None::<String>);
    std::thread::scope(|s| {
        for w in 0..options.writers.max(1) {
            let (journal, agents, acks, failure) = (&journal, &agents, &acks, &failure);
            let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(w as u64);
            s.spawn(move || {
                if let Err(e) = writer(journal, agents, seed, options.ops, acks) {
                    failure.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let _ = writeln!(
        std::io::stdout(),
        "DONE acks={}",
        acks.load(Ordering::Relaxed)
    );
    Ok(())
}

fn print_ack(seq: Option<u64>, op: &str, interaction: Option<InteractionId>, at: TimeMs) {
    if let Some(seq) = seq {
        let id = interaction.map_or("-".to_string(), |i| i.0.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ACK {seq} {op} {id} {at}");
        let _ = out.flush();
    }
}

fn writer(
    journal: &Journal<SledStore>,
    agents: &[String],
    seed: u64,
    ops: u64,
    acks: &AtomicU64,
) -> Result<(), String> {
    let mut rng = SeededRng::new(seed);
    let channels = ["voice", "chat", "email", "whatsapp"];
    let attributes = [("language", "es"), ("intent", "wifi"), ("intent", "bill")];
    while acks.load(Ordering::Relaxed) < ops {
        let now = wall_ms();
        for ack in journal.fire_due(now).map_err(|e| e.to_string())? {
            acks.fetch_add(1, Ordering::Relaxed);
            print_ack(ack.seq, "timer", None, now);
        }
        let agent = agents[rng.below(agents.len())].clone();
        let roll = rng.below(100);
        let command = if roll < 35 {
            let mut request = NewInteraction::new(channels[rng.below(channels.len())], "customer");
            let (k, v) = attributes[rng.below(attributes.len())];
            request.attributes.insert(k.into(), v.into());
            Command::Submit { request }
        } else if roll < 50 {
            Command::SetPresence {
                agent,
                presence: match rng.below(10) {
                    0 => Presence::Offline,
                    1 => Presence::Away {
                        reason: "break".into(),
                    },
                    _ => Presence::Available,
                },
            }
        } else {
            let work = journal.read(|e| e.agent(&agent).map(|a| a.work).unwrap_or_default());
            let mut pick = |phase: &str| {
                let held: Vec<_> = work.iter().filter(|w| w.phase == phase).collect();
                (!held.is_empty()).then(|| held[rng.below(held.len())].interaction)
            };
            match roll {
                50..75 => match pick("offered") {
                    Some(interaction) => Command::Accept { agent, interaction },
                    None => continue,
                },
                75..80 => match pick("offered") {
                    Some(interaction) => Command::Reject { agent, interaction },
                    None => continue,
                },
                80..95 => match pick("assigned") {
                    Some(interaction) => Command::Complete {
                        agent,
                        interaction,
                        wrap_up_code: Some("resolved".into()),
                    },
                    None => continue,
                },
                _ => {
                    let queued = journal.read(|e| {
                        ["billing", "tech", "billing-es"]
                            .iter()
                            .flat_map(|q| e.queue(q, now).map(|q| q.waiting).unwrap_or_default())
                            .map(|w| w.interaction)
                            .collect::<Vec<_>>()
                    });
                    if queued.is_empty() {
                        continue;
                    }
                    Command::Abandon {
                        interaction: queued[rng.below(queued.len())],
                    }
                }
            }
        };
        let op = command.name();
        let subject = match &command {
            Command::Accept { interaction, .. }
            | Command::Reject { interaction, .. }
            | Command::Complete { interaction, .. }
            | Command::Abandon { interaction } => Some(*interaction),
            _ => None,
        };
        match journal.execute(command, now) {
            Ok(ack) => {
                acks.fetch_add(1, Ordering::Relaxed);
                print_ack(ack.seq, op, ack.interaction.or(subject), now);
            }
            // Refused by the engine (a full queue, an offer that timed out meanwhile):
            // nothing was logged and nothing is acknowledged.
            Err(omniroute_engine::journal::JournalError::Engine(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Parses `--durability`.
pub fn durability(s: &str) -> Result<Durability, String> {
    s.parse()
}
