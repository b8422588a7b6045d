//! The command-line clients: `omniroute admin …`, `omniroute agent` (an interactive
//! console), `omniroute submit …` and `omniroute stats` (a live view), all through the
//! typed QUIC client, so a person can try the whole flow from two terminals.
//!
//! Output is line oriented (one push or one answer per line, first word in capitals)
//! so it reads well and scripts can parse it.

use clap::{Args, Subcommand};
use omniroute_engine::{CenterConfig, InteractionId, TransferTarget};
use omniroute_transport::client::{Client, ClientError};
use omniroute_transport::config::FileConfig;
use omniroute_transport::proto::{
    CenterStats, ClientMsg, Entity, EntityKind, PresenceArg, ServerPush, Subscription,
};
use omniroute_transport::tls;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How to reach the server (every client command takes these).
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// The server's UDP address.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    pub server: SocketAddr,
    /// The session's token (or the OMNIROUTE_TOKEN environment variable).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// The server's certificate (PEM) to trust: the one `serve` printed after CERT.
    #[arg(long, global = true, default_value = "omniroute-data/tls/cert.pem")]
    pub cert: PathBuf,
    /// The name the certificate is issued for.
    #[arg(long, global = true, default_value = tls::SELF_SIGNED_NAME)]
    pub server_name: String,
}

impl Conn {
    async fn connect(&self) -> Result<Client, String> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => std::env::var("OMNIROUTE_TOKEN")
                .map_err(|_| "give --token or set OMNIROUTE_TOKEN".to_string())?,
        };
        let trust = tls::load_certs(&self.cert).map_err(|e| {
            format!("{e} (give the server's certificate with --cert: `serve` prints its path)")
        })?;
        Client::connect(self.server, &self.server_name, &trust, &token)
            .await
            .map_err(|e| format!("cannot open a session with {}: {e}", self.server))
    }
}

/// `omniroute admin …`.
#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Print the whole configuration as TOML (the format `apply` and `serve --config`
    /// read).
    GetConfig,
    /// Replace the whole center configuration with a file's (docs/CONFIG.md; only its
    /// center sections are used: channels, skills, agents, queues, routing, settings).
    Apply {
        /// The TOML file.
        file: PathBuf,
    },
    /// Create or replace one entity from a TOML file holding its fields.
    Put {
        /// channel, skill, agent, queue, rule or settings.
        kind: String,
        /// TOML file with the entity's fields (as in a `[[agents]]` table, say).
        file: PathBuf,
        /// Rules: position in the list (0 = first).
        #[arg(long)]
        position: Option<u32>,
    },
    /// Delete one entity.
    Delete {
        /// channel, skill, agent, queue or rule.
        kind: String,
        /// Its name or id.
        name: String,
    },
    /// Set a queue's wrap-up codes (none: any code is accepted).
    WrapUpCodes {
        /// Queue.
        queue: String,
        /// The codes.
        codes: Vec<String>,
    },
    /// Set (or, without a queue, clear) the default queue.
    DefaultQueue {
        /// Queue.
        queue: Option<String>,
    },
    /// Create a token (printed once).
    CreateToken {
        /// Unique name.
        name: String,
        /// admin, supervisor, agent or channel.
        role: String,
        /// The agent an agent token is bound to.
        #[arg(long)]
        agent: Option<String>,
        /// A channel token's channels, comma-separated (default: every channel).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
    },
    /// Revoke a token (its open sessions are ended at once).
    DeleteToken {
        /// Its name.
        name: String,
    },
    /// List tokens (names, roles, agents, channels; never the tokens).
    Tokens,
    /// Run the engine's own invariant check now (the breaches found; none: `[]`).
    Check,
    /// Explain where an interaction stands (supervisor token).
    Explain {
        /// Interaction id (`i-12` or `12`).
        #[arg(value_parser = parse_interaction)]
        interaction: InteractionId,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn refused(e: ClientError) -> String {
    e.to_string()
}

fn print_data(data: Option<rmpv::Value>) {
    match data {
        Some(v) => println!("{v}"),
        None => println!("OK"),
    }
}

fn parse_kind(kind: &str) -> Result<EntityKind, String> {
    match kind {
        "channel" => Ok(EntityKind::Channel),
        "skill" => Ok(EntityKind::Skill),
        "agent" => Ok(EntityKind::Agent),
        "queue" => Ok(EntityKind::Queue),
        "rule" => Ok(EntityKind::Rule),
        other => Err(format!(
            "unknown kind `{other}`: expected channel, skill, agent, queue or rule"
        )),
    }
}

/// Reads one entity's fields from a TOML file.
fn read_entity(kind: &str, file: &PathBuf) -> Result<Entity, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {}", file.display(), e.message()))?;
    table.insert("kind".into(), toml::Value::String(kind.to_string()));
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{}: {kind}: {}", file.display(), e.message()))
}

pub fn admin(conn: Conn, cmd: AdminCmd) -> Result<(), String> {
    runtime()?.block_on(async move {
        let c = conn.connect().await?;
        let id = c.id();
        let msg = match cmd {
            AdminCmd::GetConfig => {
                let config: CenterConfig = c
                    .request_as(ClientMsg::GetConfig { id })
                    .await
                    .map_err(refused)?;
                let text = toml::to_string_pretty(&config)
                    .map_err(|e| format!("cannot write the configuration as TOML: {e}"))?;
                print!("{text}");
                return Ok(());
            }
            AdminCmd::Apply { file } => {
                let f = FileConfig::load(&file).map_err(|e| e.to_string())?;
                if !f.tokens.is_empty() {
                    eprintln!(
                        "note: [[tokens]] are not sent (tokens change with create-token / delete-token)"
                    );
                }
                ClientMsg::Configure {
                    id,
                    config: Box::new(f.center),
                }
            }
            AdminCmd::Put {
                kind,
                file,
                position,
            } => ClientMsg::Put {
                id,
                entity: Box::new(read_entity(&kind, &file)?),
                position,
            },
            AdminCmd::Delete { kind, name } => ClientMsg::Delete {
                id,
                kind: parse_kind(&kind)?,
                name,
            },
            AdminCmd::WrapUpCodes { queue, codes } => {
                ClientMsg::SetWrapUpCodes { id, queue, codes }
            }
            AdminCmd::DefaultQueue { queue } => ClientMsg::SetDefaultQueue { id, queue },
            AdminCmd::CreateToken {
                name,
                role,
                agent,
                channels,
            } => ClientMsg::CreateToken {
                id,
                name,
                role: role.parse()?,
                agent,
                channels,
            },
            AdminCmd::DeleteToken { name } => ClientMsg::DeleteToken { id, name },
            AdminCmd::Tokens => ClientMsg::ListTokens { id },
            AdminCmd::Check => ClientMsg::CheckInvariants { id },
            AdminCmd::Explain { interaction } => ClientMsg::Explain {
                id,
                interaction: Some(interaction),
                queue: None,
                channel: None,
            },
        };
        print_data(c.request(msg).await.map_err(refused)?);
        Ok(())
    })
}

/// `omniroute submit …`: a channel adapter's one message.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Channel name (chat, voice, email, sms, whatsapp, …).
    #[arg(long, default_value = "chat")]
    pub channel: String,
    /// Customer id or contact point.
    #[arg(long)]
    pub customer: String,
    /// An attribute `key=value` (repeatable).
    #[arg(long = "attr")]
    pub attributes: Vec<String>,
    /// Queue (else the routing rules decide).
    #[arg(long)]
    pub queue: Option<String>,
    /// Start with this virtual agent.
    #[arg(long)]
    pub virtual_agent: Option<String>,
    /// Post into this conversation (the customer's, still open).
    #[arg(long, value_parser = parse_interaction)]
    pub interaction: Option<InteractionId>,
    /// Instead of a message: the customer left this interaction.
    #[arg(long, conflicts_with = "text", value_parser = parse_interaction)]
    pub left: Option<InteractionId>,
    /// The customer's message.
    pub text: Option<String>,
}

pub fn submit(conn: Conn, args: SubmitArgs) -> Result<(), String> {
    runtime()?.block_on(async move {
        let c = conn.connect().await?;
        if let Some(i) = args.left {
            c.request(ClientMsg::CustomerLeft {
                id: c.id(),
                interaction: i,
            })
            .await
            .map_err(refused)?;
            println!("LEFT {i}");
            return Ok(());
        }
        let Some(text) = args.text else {
            return Err("give the customer's message (or --left ID)".into());
        };
        let mut attributes = BTreeMap::new();
        for a in &args.attributes {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("--attr `{a}`: expected key=value"))?;
            attributes.insert(k.to_string(), v.to_string());
        }
        let data = c
            .request(ClientMsg::Inbound {
                id: c.id(),
                channel: args.channel,
                customer: args.customer,
                text,
                attributes,
                queue: args.queue,
                virtual_agent: args.virtual_agent,
                interaction: args.interaction,
            })
            .await
            .map_err(refused)?;
        print_data(data);
        Ok(())
    })
}

/// `omniroute stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Refresh interval, ms.
    #[arg(long, default_value_t = 1_000)]
    pub interval_ms: u64,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
    /// Print every engine event instead of statistics.
    #[arg(long)]
    pub events: bool,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn render(stats: &CenterStats) -> String {
    let a = &stats.agents;
    let mut out = format!(
        "STATS at {} ms: agents idle {} busy {} wrap-up {} away {} offline {}; occupancy {:.1}%; live {}\n",
        stats.at_ms,
        a.idle,
        a.busy,
        a.wrap_up,
        a.away,
        a.offline,
        stats.occupancy_percent,
        stats.live_interactions
    );
    out.push_str(&format!(
        "{:<16} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        "queue", "depth", "longest_s", "SL(5m)", "ASA_s", "abandon", "answered"
    ));
    for q in &stats.queues {
        let w = q.windows.first();
        out.push_str(&format!(
            "{:<16} {:>6} {:>10.1} {:>9} {:>9} {:>9} {:>9}\n",
            q.queue,
            q.depth,
            q.longest_wait_ms as f64 / 1000.0,
            pct(w.and_then(|w| w.service_level)),
            w.and_then(|w| w.average_speed_of_answer_ms)
                .map_or("-".into(), |v| format!("{:.1}", v / 1000.0)),
            pct(w.and_then(|w| w.abandon_rate)),
            w.map_or(0, |w| w.answered),
        ));
    }
    out
}

pub fn stats(conn: Conn, args: StatsArgs) -> Result<(), String> {
    runtime()?.block_on(async move {
        let mut c = conn.connect().await?;
        if args.once {
            let s: CenterStats = c
                .request_as(ClientMsg::Stats { id: c.id() })
                .await
                .map_err(refused)?;
            print!("{}", render(&s));
            return Ok(());
        }
        let mut pushes = c.server_pushes().expect("first call");
        let msg = if args.events {
            ClientMsg::SubscribeEvents { id: c.id() }
        } else {
            ClientMsg::SubscribeStats {
                id: c.id(),
                interval_ms: Some(args.interval_ms),
            }
        };
        c.request(msg).await.map_err(refused)?;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        loop {
            tokio::select! {
                p = pushes.recv() => match p {
                    None => return Err("the session ended".into()),
                    Some(ServerPush::Stats(s)) => {
                        let mut out = std::io::stdout().lock();
                        if tty {
                            let _ = write!(out, "\x1b[2J\x1b[H");
                        }
                        let _ = write!(out, "{}", render(&s));
                        let _ = out.flush();
                    }
                    Some(ServerPush::Event { seq, command, events, .. }) => {
                        for e in events {
                            println!("EVENT {seq} {command} {e:?}");
                        }
                    }
                    Some(ServerPush::EventsLagged { missed }) => println!("LAGGED {missed}"),
                    Some(other) => println!("PUSH {other:?}"),
                },
                _ = tokio::signal::ctrl_c() => {
                    let _ = c.request(ClientMsg::Unsubscribe {
                        id: c.id(),
                        what: if args.events { Subscription::Events } else { Subscription::Stats },
                    }).await;
                    return Ok(());
                }
            }
        }
    })
}

const AGENT_HELP: &str = "commands (interaction ids as printed):
  available | away [reason] | offline
  accept ID | reject ID
  say ID text…            message to the customer
  transfer ID agent:NAME | queue:NAME
  complete ID [wrap-up code]
  ready ID                end the wrap-up before its time
  show ID                 the conversation with its transcript
  history CUSTOMER        the customer's conversations
  view                    your state
  help | quit";

/// `omniroute agent`: an interactive console. Pushes print as they arrive; commands
/// are read line by line from the standard input (so it can be scripted too).
pub fn agent(conn: Conn) -> Result<(), String> {
    runtime()?.block_on(async move {
        let mut c = conn.connect().await?;
        println!(
            "WELCOME agent {} (type `help`)",
            c.agent.as_deref().unwrap_or("?")
        );
        let mut pushes = c.pushes().expect("first call");
        tokio::spawn(async move {
            while let Some(p) = pushes.recv().await {
                println!("{}", describe_push(&p));
            }
            println!("CLOSED the session ended");
        });
        let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            if matches!(words[0], "quit" | "exit") {
                break;
            }
            if words[0] == "help" {
                println!("{AGENT_HELP}");
                continue;
            }
            match agent_command(&c, &words).await {
                Ok(Some(v)) => println!("OK {v}"),
                Ok(None) => println!("OK"),
                Err(e) => println!("ERROR {e}"),
            }
        }
        c.close();
        Ok(())
    })
}

/// An interaction id as printed (`i-12`) or bare (`12`).
pub fn parse_interaction(w: &str) -> Result<InteractionId, String> {
    w.strip_prefix("i-")
        .unwrap_or(w)
        .parse::<u64>()
        .map(InteractionId)
        .map_err(|_| format!("`{w}` is not an interaction id (`i-12` or `12`)"))
}

fn interaction(words: &[&str]) -> Result<InteractionId, String> {
    let w = words
        .get(1)
        .ok_or_else(|| format!("`{}` needs an interaction id", words[0]))?;
    parse_interaction(w)
}

async fn agent_command(c: &Client, words: &[&str]) -> Result<Option<rmpv::Value>, String> {
    let id = c.id();
    let rest = |from: usize| words.get(from..).unwrap_or_default().join(" ");
    let msg = match words[0] {
        "available" => ClientMsg::SetPresence {
            id,
            presence: PresenceArg::Available,
            reason: None,
            agent: None,
        },
        "away" => ClientMsg::SetPresence {
            id,
            presence: PresenceArg::Away,
            reason: (words.len() > 1).then(|| rest(1)),
            agent: None,
        },
        "offline" => ClientMsg::SetPresence {
            id,
            presence: PresenceArg::Offline,
            reason: None,
            agent: None,
        },
        "accept" => ClientMsg::Accept {
            id,
            interaction: interaction(words)?,
        },
        "reject" => ClientMsg::Reject {
            id,
            interaction: interaction(words)?,
        },
        "say" => {
            let interaction = interaction(words)?;
            if words.len() < 3 {
                return Err("`say ID text…` needs a text".into());
            }
            ClientMsg::SendMessage {
                id,
                interaction,
                text: rest(2),
                channel: None,
            }
        }
        "transfer" => {
            let interaction = interaction(words)?;
            let to = match words.get(2).and_then(|t| t.split_once(':')) {
                Some(("agent", a)) => TransferTarget::Agent(a.to_string()),
                Some(("queue", q)) => TransferTarget::Queue(q.to_string()),
                _ => return Err("`transfer ID agent:NAME` or `transfer ID queue:NAME`".into()),
            };
            ClientMsg::Transfer {
                id,
                interaction,
                to,
            }
        }
        "complete" => ClientMsg::Complete {
            id,
            interaction: interaction(words)?,
            wrap_up_code: words.get(2).map(|s| s.to_string()),
        },
        "ready" => ClientMsg::EndWrapUp {
            id,
            interaction: interaction(words)?,
        },
        "show" => ClientMsg::Conversation {
            id,
            interaction: interaction(words)?,
        },
        "history" => ClientMsg::History {
            id,
            customer: words
                .get(1)
                .ok_or("`history CUSTOMER` needs a customer")?
                .to_string(),
        },
        "view" => ClientMsg::AgentView { id, agent: None },
        other => return Err(format!("unknown command `{other}` (type `help`)")),
    };
    c.request(msg).await.map_err(refused)
}

fn describe_push(p: &omniroute_actors::Push) -> String {
    use omniroute_actors::Push;
    match p {
        Push::Offer(o) => {
            let last = o
                .transcript
                .iter()
                .rev()
                .find(|e| !e.channel.is_empty())
                .map(|e| e.text.as_str())
                .unwrap_or("");
            format!(
                "OFFER {} queue={} channel={} customer={} deadline_ms={}{} attributes={:?} last={last:?}",
                o.interaction,
                o.queue,
                o.channel,
                o.customer,
                o.deadline_ms,
                if o.auto_accepted {
                    " (auto-accepted)"
                } else {
                    ""
                },
                o.attributes,
            )
        }
        Push::OfferEnded {
            interaction,
            reason,
        } => format!("OFFER_ENDED {interaction} {reason}"),
        Push::Assigned { interaction } => format!("ASSIGNED {interaction}"),
        Push::Message { interaction, entry } => format!(
            "MESSAGE {interaction} {:?}{} on {}: {}",
            entry.from,
            entry
                .from_id
                .as_deref()
                .map(|i| format!("({i})"))
                .unwrap_or_default(),
            if entry.channel.is_empty() {
                "-"
            } else {
                &entry.channel
            },
            entry.text
        ),
        Push::Completed {
            interaction,
            wrap_up_until_ms,
        } => format!(
            "COMPLETED {interaction}{}",
            wrap_up_until_ms
                .map(|t| format!(" wrap-up until {t}"))
                .unwrap_or_default()
        ),
        Push::WrapUpEnded { interaction } => format!("WRAP_UP_ENDED {interaction}"),
        Push::TransferredAway { interaction, to } => {
            format!("TRANSFERRED {interaction} to {to:?}")
        }
        Push::Presence { presence } => format!("PRESENCE {presence:?}"),
        Push::Lagged { missed } => format!("LAGGED {missed} (type `view`)"),
        Push::Resync(view) => format!("RESYNC {view:?}"),
    }
}
