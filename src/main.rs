//! `omniroute`: the command line.
//!
//! `serve` runs the QUIC server (docs/PROTOCOL.md) over the actor runtime and the durable
//! log, from a TOML file (docs/CONFIG.md) or the built-in demo center; `admin`, `agent`,
//! `submit` and `stats` are its command-line clients; `demo` runs a small omnichannel
//! center through the engine on virtual time, printing every routing decision; `drive`
//! runs it on real time through the durable log; `repair` fixes a damaged log.

mod cli;
mod drive;
mod serve;

/// mimalloc (`omniroute_actors::alloc`; why: the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: omniroute_actors::alloc::MiMalloc = omniroute_actors::alloc::MiMalloc;

use clap::{Parser, Subcommand};
use omniroute_engine::journal::{Journal, JournalConfig, SledStore};
use omniroute_engine::*;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "omniroute",
    version,
    about = "Real-time omnichannel routing engine for contact centers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a small simulated center through the real engine on virtual time.
    Demo {
        /// Simulated minutes of traffic.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Random seed (same seed, same run).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Customers arriving per minute, all channels together.
        #[arg(long, default_value_t = 2.0)]
        arrivals_per_minute: f64,
        /// Print every routing event.
        #[arg(long)]
        verbose: bool,
    },
    /// Run the demo center on real time through the durable log, with random traffic
    /// from several writers, printing each acknowledgement once it is durable (the
    /// crash test kills it and checks what it printed survived).
    Drive {
        /// Data directory (created if missing; locked while running).
        #[arg(long)]
        data_dir: PathBuf,
        /// Random seed for the traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Concurrent writer threads.
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Stop after this many acknowledged operations.
        #[arg(long, default_value_t = 10_000)]
        ops: u64,
        /// `sync` (fsync before each acknowledgement, shared by concurrent writers) or
        /// `batched:<ms>` (flushed at least every <ms>).
        #[arg(long, default_value = "sync", value_parser = drive::durability)]
        durability: journal::Durability,
        /// Records between snapshots (0: never).
        #[arg(long, default_value_t = 100_000)]
        snapshot_every: u64,
        /// After a restart, how long agents' assigned work waits for them (ms).
        #[arg(long, default_value_t = 120_000)]
        reconnect_grace_ms: u64,
    },
    /// Run the QUIC server (see docs/PROTOCOL.md). An empty data directory starts the
    /// built-in demo center and prints a token per role and agent (shown once).
    Serve {
        /// The configuration file (TOML, docs/CONFIG.md). Without it an empty data
        /// directory starts the built-in demo center.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (created if missing; locked while running). Default: the
        /// file's `[server] data_dir`, else `omniroute-data`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// UDP address to listen on. Default: the file's `[server] listen`, else
        /// 127.0.0.1:4433.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// PEM certificate chain (default: a self-signed one kept in the data directory).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// PEM private key for --cert.
        #[arg(long)]
        key: Option<PathBuf>,
        /// `sync` or `batched:<ms>` (default: the file's `[durability]`, else sync).
        #[arg(long, value_parser = drive::durability)]
        durability: Option<journal::Durability>,
    },
    /// Administer a running server (admin token; `explain` needs a supervisor's).
    Admin {
        #[command(flatten)]
        conn: cli::Conn,
        #[command(subcommand)]
        command: cli::AdminCmd,
    },
    /// An interactive agent console (agent token): pushes print as they arrive,
    /// commands are read from the standard input (`help` lists them).
    Agent {
        #[command(flatten)]
        conn: cli::Conn,
    },
    /// Send a customer's message as a channel adapter would (channel token).
    Submit {
        #[command(flatten)]
        conn: cli::Conn,
        #[command(flatten)]
        args: cli::SubmitArgs,
    },
    /// Live center statistics (supervisor token).
    Stats {
        #[command(flatten)]
        conn: cli::Conn,
        #[command(flatten)]
        args: cli::StatsArgs,
    },
    /// Repair a data directory the server refused to start on (it prints the command).
    /// What a repair removes is lost: restore from a backup instead if you have one.
    Repair {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// A damaged record in the middle of the log: remove it and every record after it.
        #[arg(long)]
        cut_at: Option<u64>,
        /// The log ends before the last acknowledged record (the store's files were
        /// damaged): accept the loss and lower the acknowledged high-water mark.
        #[arg(long)]
        accept_loss: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            cert,
            key,
            durability,
        } => {
            let options = serve::ServeOptions {
                config,
                data_dir,
                listen,
                cert,
                key,
                durability,
            };
            if let Err(e) = serve::serve(options, demo_center()) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        Command::Admin { conn, command } => exit_on_error(cli::admin(conn, command)),
        Command::Agent { conn } => exit_on_error(cli::agent(conn)),
        Command::Submit { conn, args } => exit_on_error(cli::submit(conn, args)),
        Command::Stats { conn, args } => exit_on_error(cli::stats(conn, args)),
        Command::Drive {
            data_dir,
            seed,
            writers,
            ops,
            durability,
            snapshot_every,
            reconnect_grace_ms,
        } => {
            let options = drive::DriveOptions {
                seed,
                writers,
                ops,
                journal: JournalConfig {
                    durability,
                    snapshot_every,
                    reconnect_grace_ms,
                    ..JournalConfig::default()
                },
            };
            if let Err(e) = drive::drive(&data_dir, demo_center(), options) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        Command::Repair {
            data_dir,
            cut_at,
            accept_loss,
        } => {
            let result = match (cut_at, accept_loss) {
                (Some(key), false) => Journal::<SledStore>::cut_at(&data_dir, key).map(|removed| {
                    format!(
                        "removed {removed} record(s) from key {key} on; the log now ends at {}",
                        key.saturating_sub(1)
                    )
                }),
                (None, true) => Journal::<SledStore>::accept_loss(&data_dir).map(|(old, new)| {
                    format!(
                        "the acknowledged high-water mark was {old}; it is now {new}, the last record present"
                    )
                }),
                _ => {
                    eprintln!("error: give exactly one of --cut-at <key> and --accept-loss");
                    std::process::exit(2);
                }
            };
            match result {
                Ok(done) => println!("{done}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Demo {
            minutes,
            seed,
            arrivals_per_minute,
            verbose,
        } => {
            if arrivals_per_minute <= 0.0 || !arrivals_per_minute.is_finite() {
                eprintln!("error: --arrivals-per-minute must be a positive number");
                std::process::exit(2);
            }
            demo(minutes, seed, arrivals_per_minute, verbose)
        }
    }
}

fn demo_center() -> CenterConfig {
    let skill = |name: &str, language: bool| SkillDef {
        name: name.into(),
        is_language: language,
    };
    let agent = |id: &str, skills: &[(&str, u8)], capacity: CapacityProfile| AgentDef {
        id: id.into(),
        name: id.into(),
        skills: skills
            .iter()
            .map(|(s, p)| SkillLevel {
                skill: (*s).into(),
                proficiency: *p,
            })
            .collect(),
        capacity,
    };
    let blended = || {
        let mut p = CapacityProfile::simple(10, &["voice", "chat", "email"]);
        p.blocking = vec![ChannelBlock {
            while_on: "voice".into(),
            blocks: vec!["chat".into()],
        }];
        p
    };
    let digital = || CapacityProfile::simple(10, &["chat", "email", "whatsapp"]);
    let mut billing = QueueDef::new("billing", &[("billing", 4)]);
    billing.wrap_up_ms = 15_000;
    billing.wrap_up_codes = vec!["resolved".into(), "escalated".into()];
    billing.offer_timeout_ms = 15_000;
    billing.relaxation = vec![RelaxationStep {
        after_ms: 45_000,
        action: RelaxationAction::LowerProficiency {
            skill: "billing".into(),
            to: 1,
        },
    }];
    let mut tech = QueueDef::new("tech", &[("tech", 3)]);
    tech.policy = AssignmentPolicy::LeastOccupied;
    tech.offer_timeout_ms = 20_000;
    tech.aging_millipoints_per_second = 50;
    let mut spanish = QueueDef::new("billing-es", &[("billing", 2), ("spanish", 6)]);
    spanish.policy = AssignmentPolicy::MostSkilled;
    spanish.base_priority = 2;
    spanish.relaxation = vec![RelaxationStep {
        after_ms: 60_000,
        action: RelaxationAction::Overflow {
            queue: "billing".into(),
        },
    }];
    CenterConfig {
        channels: ChannelDef::builtin(),
        skills: vec![
            skill("billing", false),
            skill("tech", false),
            skill("spanish", true),
        ],
        agents: vec![
            agent("ana", &[("billing", 8), ("spanish", 9)], blended()),
            agent("ben", &[("billing", 6)], blended()),
            agent("chloe", &[("billing", 3), ("tech", 7)], blended()),
            agent("dev", &[("tech", 9)], digital()),
            agent("eva", &[("tech", 5), ("billing", 5)], blended()),
            agent("femi", &[("billing", 7), ("spanish", 7)], blended()),
            agent("gus", &[("tech", 4)], blended()),
        ],
        queues: vec![billing, tech, spanish],
        routing: RoutingConfig {
            rules: vec![
                RoutingRule {
                    name: "spanish speakers".into(),
                    channels: vec![],
                    conditions: vec![AttributeCondition::Equals {
                        key: "language".into(),
                        value: "es".into(),
                    }],
                    queue: "billing-es".into(),
                    priority: None,
                },
                RoutingRule {
                    name: "technical intents".into(),
                    channels: vec![],
                    conditions: vec![AttributeCondition::OneOf {
                        key: "intent".into(),
                        values: vec!["wifi".into(), "router".into()],
                    }],
                    queue: "tech".into(),
                    priority: None,
                },
            ],
            default_queue: Some("billing".into()),
        },
        settings: Settings::default(),
    }
}

/// What the simulated people do, and when.
#[derive(Debug)]
enum Action {
    Arrive,
    Respond {
        agent: String,
        interaction: InteractionId,
        offer_seq: u32,
    },
    Finish {
        agent: String,
        interaction: InteractionId,
    },
    GiveUp {
        interaction: InteractionId,
    },
    Engine(Timer),
}

#[derive(Default)]
struct QueueStats {
    offered: u64,
    answered: u64,
    abandoned: u64,
    within_threshold: u64,
    total_wait_ms: u64,
    max_wait_ms: u64,
}

fn demo(minutes: u64, seed: u64, arrivals_per_minute: f64, verbose: bool) {
    let config = demo_center();
    let thresholds: HashMap<String, u64> = config
        .queues
        .iter()
        .map(|q| (q.id.clone(), q.service_level.threshold_ms))
        .collect();
    let engine = Engine::new(config.clone()).expect("the demo center is valid");
    let mut rng = SeededRng::new(seed);
    let mut agenda: BTreeMap<(TimeMs, u64), Action> = BTreeMap::new();
    let mut sequence = 0u64;
    let mut schedule =
        |agenda: &mut BTreeMap<(TimeMs, u64), Action>, at: TimeMs, action: Action| {
            sequence += 1;
            agenda.insert((at, sequence), action);
        };
    let mut events = Vec::new();
    for a in &config.agents {
        engine
            .set_presence(&a.id, Presence::Available, 0, &mut events)
            .unwrap();
    }
    events.clear();
    let end_ms = minutes * 60_000;
    let mean_gap_ms = 60_000.0 / arrivals_per_minute;
    schedule(
        &mut agenda,
        rng.exponential(mean_gap_ms) as u64,
        Action::Arrive,
    );
    let mut stats: BTreeMap<String, QueueStats> = BTreeMap::new();
    let mut sample = None;
    println!(
        "omniroute demo: {} agents, {} queues, {minutes} simulated minutes, seed {seed}",
        config.agents.len(),
        config.queues.len()
    );

    while let Some(((now, _), action)) = agenda.pop_first() {
        events.clear();
        match action {
            Action::Arrive => {
                if now < end_ms {
                    schedule(
                        &mut agenda,
                        now + rng.exponential(mean_gap_ms) as u64,
                        Action::Arrive,
                    );
                }
                let roll = rng.next_f64();
                let channel = if roll < 0.5 {
                    "voice"
                } else if roll < 0.85 {
                    "chat"
                } else {
                    "email"
                };
                let mut request = NewInteraction::new(
                    channel,
                    &format!("cust-{}", (rng.next_f64() * 1e6) as u64),
                );
                let intent = rng.next_f64();
                if intent < 0.15 {
                    request = request.with_attribute("language", "es");
                } else if intent < 0.5 {
                    request = request.with_attribute("intent", "wifi");
                }
                match engine.submit(request, now, &mut events) {
                    Ok(id) => {
                        let queue = engine.interaction(id).unwrap().queue;
                        stats.entry(queue).or_default().offered += 1;
                        // Customers give up after ~2 minutes on average.
                        schedule(
                            &mut agenda,
                            now + rng.exponential(120_000.0) as u64,
                            Action::GiveUp { interaction: id },
                        );
                        sample.get_or_insert(id);
                    }
                    Err(e) => println!("{:>8} submit refused: {e}", clock(now)),
                }
            }
            Action::Respond {
                agent,
                interaction,
                offer_seq,
            } => {
                let still_offered = engine.interaction(interaction).is_ok_and(|i| {
                    i.state == InteractionState::Offered
                        && i.agent.as_deref() == Some(&agent)
                        && i.history
                            .iter()
                            .filter(|h| matches!(h, HistoryEntry::Offered { .. }))
                            .count() as u32
                            >= offer_seq
                });
                if still_offered {
                    if rng.next_f64() < 0.05 {
                        let _ = engine.reject(&agent, interaction, now, &mut events);
                    } else if engine.accept(&agent, interaction, now, &mut events).is_ok() {
                        let channel = engine.interaction(interaction).unwrap().channel;
                        let mean = if channel == "voice" {
                            240_000.0
                        } else {
                            420_000.0
                        };
                        schedule(
                            &mut agenda,
                            now + rng.exponential(mean) as u64,
                            Action::Finish { agent, interaction },
                        );
                    }
                }
            }
            Action::Finish { agent, interaction } => {
                let queue = engine
                    .interaction(interaction)
                    .map(|i| i.queue)
                    .unwrap_or_default();
                let code = (queue != "tech").then_some(if rng.next_f64() < 0.9 {
                    "resolved"
                } else {
                    "escalated"
                });
                if let Err(e) = engine.complete(&agent, interaction, code, now, &mut events) {
                    println!("{:>8} complete refused: {e}", clock(now));
                }
            }
            Action::GiveUp { interaction } => {
                if let Ok(i) = engine.interaction(interaction)
                    && matches!(
                        i.state,
                        InteractionState::Queued | InteractionState::Offered
                    )
                {
                    engine.abandon(interaction, now, &mut events).unwrap();
                    stats.entry(i.queue).or_default().abandoned += 1;
                }
            }
            Action::Engine(timer) => {
                engine.on_timer(timer, now, &mut events);
            }
        }
        for event in &events {
            if verbose {
                println!("{:>8} {}", clock(now), describe(event));
            }
            event.timers(|due, timer| schedule(&mut agenda, due, Action::Engine(timer)));
            match event {
                Event::Offered {
                    interaction,
                    agent,
                    offer_seq,
                    auto_accepted: false,
                    ..
                } => {
                    // Agents answer offers after 2–8 s.
                    let delay = 2_000 + (rng.next_f64() * 6_000.0) as u64;
                    schedule(
                        &mut agenda,
                        now + delay,
                        Action::Respond {
                            agent: agent.to_string(),
                            interaction: *interaction,
                            offer_seq: *offer_seq,
                        },
                    );
                }
                Event::Accepted { interaction, .. } => {
                    let i = engine.interaction(*interaction).unwrap();
                    if i.answered_ms == Some(now) {
                        let wait = now - i.enqueued_ms;
                        let s = stats.entry(i.queue.clone()).or_default();
                        s.answered += 1;
                        s.total_wait_ms += wait;
                        s.max_wait_ms = s.max_wait_ms.max(wait);
                        if wait <= thresholds.get(&i.queue).copied().unwrap_or(20_000) {
                            s.within_threshold += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        let violations = engine.check_invariants(now);
        assert!(
            violations.is_empty(),
            "engine invariants violated: {violations:#?}"
        );
    }

    println!();
    println!(
        "{:<12} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10}",
        "queue", "offered", "answered", "abandoned", "SL", "avg wait", "max wait"
    );
    for (queue, s) in &stats {
        let service_level = if s.offered > 0 {
            100.0 * s.within_threshold as f64 / s.offered as f64
        } else {
            0.0
        };
        let average = s.total_wait_ms.checked_div(s.answered).unwrap_or(0);
        println!(
            "{queue:<12} {:>8} {:>8} {:>9} {:>7.1}% {:>9.1}s {:>9.1}s",
            s.offered,
            s.answered,
            s.abandoned,
            service_level,
            average as f64 / 1000.0,
            s.max_wait_ms as f64 / 1000.0
        );
    }
    println!("(SL: answered within the queue's threshold, over all offered including abandoned)");
    if let Some(id) = sample {
        let i = engine.interaction(id).unwrap();
        println!(
            "\nHistory of the first interaction, {id} ({} via {}):",
            i.queue, i.channel
        );
        for h in &i.history {
            println!("  {h:?}");
        }
    }
}

fn clock(ms: TimeMs) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn describe(event: &Event) -> String {
    match event {
        Event::MessagePosted {
            interaction,
            message,
        } => format!(
            "{interaction}: {:?} {} on {}: {}",
            message.from,
            message.from_id.as_deref().unwrap_or(""),
            message.channel,
            message.text
        ),
        Event::Configured { changes } => format!(
            "configuration changed: {}",
            changes
                .iter()
                .map(|c| format!("{} `{}` {:?}", c.kind, c.id, c.change).to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::Created {
            interaction,
            queue,
            channel,
            priority,
            rule,
        } => format!(
            "{interaction} ({channel}) arrives for {queue} at priority {priority}{}",
            rule.as_ref()
                .map_or(String::new(), |r| format!(" (rule `{r}`)"))
        ),
        Event::Queued {
            interaction, queue, ..
        } => format!("{interaction} waits in {queue}"),
        Event::Offered {
            interaction,
            agent,
            queue,
            channel,
            auto_accepted,
            ..
        } => {
            format!(
                "{interaction} ({channel}, {queue}) offered to {agent}{}",
                if *auto_accepted {
                    " (auto-accepted)"
                } else {
                    ""
                }
            )
        }
        Event::Accepted { interaction, agent } => format!("{interaction} accepted by {agent}"),
        Event::Rejected { interaction, agent } => format!("{interaction} rejected by {agent}"),
        Event::OfferTimedOut { interaction, agent } => {
            format!("{interaction} offer to {agent} timed out")
        }
        Event::OfferRescinded {
            interaction,
            agent,
            reason,
        } => format!("{interaction} offer to {agent} rescinded ({reason:?})"),
        Event::Completed {
            interaction,
            agent,
            wrap_up_code,
            ..
        } => {
            format!(
                "{interaction} completed by {agent} ({})",
                wrap_up_code.as_deref().unwrap_or("no code")
            )
        }
        Event::WrapUpEnded { interaction, agent } => {
            format!("{interaction} wrap-up ended, {agent} free")
        }
        Event::Abandoned {
            interaction,
            queue,
            previous_state,
        } => {
            format!("{interaction} abandoned in {queue} while {previous_state:?}")
        }
        Event::Transferred {
            interaction, to, ..
        } => format!("{interaction} transferred to {to:?}"),
        Event::Relaxed {
            interaction,
            queue,
            step,
        } => format!("{interaction} relaxed in {queue} (step {step})"),
        Event::PreferredFallback { interaction } => {
            format!("{interaction} no longer waits for its preferred agent")
        }
        Event::OfferLimitReached {
            interaction,
            offers,
            ..
        } => format!("{interaction} reached {offers} offers"),
        Event::PresenceChanged { agent, presence } => format!("{agent} is now {presence:?}"),
    }
}

fn exit_on_error(result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
