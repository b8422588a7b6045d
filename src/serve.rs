//! `omniroute serve`: the QUIC server over the actor runtime and the durable log.
//!
//! Prints, one per line, what a client needs (parsed by the black-box tests):
//! `RECOVERED …`, `CERT <path>`, `FINGERPRINT <sha-256>`, `TOKEN <role> <agent|-> <token>`
//! (first start only: tokens are stored hashed), `LISTENING <addr>`.

use crate::drive::wall_ms;
use omniroute_actors::center::Clock;
use omniroute_actors::virtual_agent::RuleBasedAgent;
use omniroute_actors::{Runtime, RuntimeConfig};
use omniroute_engine::journal::{Command, Durability, Journal, JournalConfig, JournalError};
use omniroute_engine::{CenterConfig, Event};
use omniroute_transport::config::FileConfig;
use omniroute_transport::proto::Role;
use omniroute_transport::server::{self, Grant, ServerConfig, Tokens};
use omniroute_transport::tls::ServerIdentity;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `serve` runs with: the command line's choices (each overrides the
/// configuration file's).
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub durability: Option<Durability>,
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn serve(options: ServeOptions, demo: CenterConfig) -> Result<(), String> {
    // A mistake in the file stops the start before anything is touched.
    let file = match &options.config {
        Some(path) => Some(FileConfig::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run(options, file, demo))
}

async fn run(
    options: ServeOptions,
    file: Option<FileConfig>,
    demo: CenterConfig,
) -> Result<(), String> {
    let section = file.as_ref().map(|f| f.server.clone()).unwrap_or_default();
    let data_dir = options
        .data_dir
        .or(section.data_dir)
        .unwrap_or_else(|| PathBuf::from("omniroute-data"));
    let listen = options
        .listen
        .or(section.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4433)));
    let (cert, key) = match (options.cert, options.key) {
        (None, None) => (section.cert, section.key),
        given => given,
    };
    if cert.is_some() != key.is_some() {
        return Err("give both --cert and --key, or neither".into());
    }
    let dir = &data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = wall_ms();
    let defaults = JournalConfig::default();
    let jc = JournalConfig {
        durability: options
            .durability
            .or(file.as_ref().and_then(|f| f.durability))
            .unwrap_or(Durability::Sync),
        snapshot_every: file
            .as_ref()
            .and_then(|f| f.snapshot_every)
            .unwrap_or(defaults.snapshot_every),
        reconnect_grace_ms: file
            .as_ref()
            .and_then(|f| f.limits.restart_grace_ms)
            .unwrap_or(defaults.reconnect_grace_ms),
        retain_finished_ms: match file.as_ref().and_then(|f| f.retain_finished_s) {
            Some(s) => Some(s.saturating_mul(1_000)),
            None => defaults.retain_finished_ms,
        },
        external_timers: true,
        ..defaults
    };
    // An empty data directory starts the file's center, or the built-in demo center;
    // otherwise the log's own configuration (changes made through the API live in the
    // log), replaced below by the file's if one is given and differs.
    let initial = match &file {
        Some(f) => f.center.clone(),
        None => demo,
    };
    let (journal, report, fresh) = match Journal::open_dir(dir, None, jc.clone(), now) {
        Err(JournalError::Empty) => {
            let (j, r) =
                Journal::open_dir(dir, Some(initial), jc, now).map_err(|e| e.to_string())?;
            (j, r, true)
        }
        other => {
            let (j, r) = other.map_err(|e| e.to_string())?;
            (j, r, false)
        }
    };
    say(format!(
        "RECOVERED replayed={} last_seq={} in_grace={}{}",
        report.replayed,
        report.last_seq,
        report.agents_in_grace.len(),
        match (fresh, &file) {
            (true, None) => " (new data directory: the built-in demo center)".to_string(),
            (true, Some(f)) => format!(" (new data directory: {})", f.path.display()),
            _ => String::new(),
        }
    ));
    let agents: Vec<String> =
        journal.read(|e| e.config().agents.into_iter().map(|a| a.id).collect());
    let identity = match (&cert, &key) {
        (Some(cert), Some(key)) => ServerIdentity::load(cert, key).map_err(|e| e.to_string())?,
        (None, None) => ServerIdentity::self_signed(dir).map_err(|e| e.to_string())?,
        _ => unreachable!("--cert and --key are checked together above"),
    };
    say(format!("CERT {}", identity.cert_path.display()));
    say(format!("FINGERPRINT {}", identity.fingerprint));
    let tokens_path = dir.join("tokens");
    let tokens = load_tokens(&tokens_path, file.as_ref(), &agents)?;
    let (runtime_config, mut server_config) = match &file {
        Some(f) => (f.runtime_config(), f.server_config()),
        None => (RuntimeConfig::default(), ServerConfig::default()),
    };
    server_config.tokens = tokens;
    server_config.tokens_file = Some(tokens_path);
    let runtime = Arc::new(
        Runtime::start(
            journal,
            Clock::starting_at(now),
            runtime_config,
            vec![Arc::new(RuleBasedAgent::demo())],
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    // The file is the configuration's source at start: a log whose configuration
    // differs (changed through the API since) is brought back to the file's, logged.
    if let Some(f) = &file
        && !fresh
        && runtime.read(|e| e.config()) != f.center
    {
        let ack = runtime
            .execute(Command::Configure {
                config: f.center.clone(),
            })
            .await
            .map_err(|e| format!("{}: cannot apply it: {e}", f.path.display()))?;
        let changes = ack
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Configured { changes } => Some(changes.len()),
                _ => None,
            })
            .sum::<usize>();
        say(format!(
            "CONFIGURED from {} ({changes} changes to the logged configuration)",
            f.path.display()
        ));
    }
    let endpoint = identity
        .server(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = endpoint.local_addr().map_err(|e| e.to_string())?;
    say(format!("LISTENING {local}"));
    let served = server::serve(endpoint.clone(), runtime.clone(), server_config);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = served => {}
        _ = terminated => {
            say("STOPPING".into());
            endpoint.close(server::close::NORMAL.into(), b"server stopping");
            runtime.shutdown();
        }
        _ = tokio::signal::ctrl_c() => {
            say("STOPPING".into());
            endpoint.close(server::close::NORMAL.into(), b"server stopping");
            runtime.shutdown();
        }
    }
    Ok(())
}

/// The tokens: those kept (hashed) in the data directory, plus the file's (which are
/// put back at every start). A first start with neither makes a token per role and
/// per agent and prints them once.
fn load_tokens(
    path: &Path,
    file: Option<&FileConfig>,
    agents: &[String],
) -> Result<Tokens, String> {
    let grant = |role, agent: Option<&str>, name: &str| Grant {
        role,
        agent: agent.map(String::from),
        name: name.to_string(),
        channels: Vec::new(),
    };
    let mut tokens = if path.exists() {
        Tokens::load_file(path).map_err(|e| e.to_string())?
    } else {
        Tokens::new()
    };
    let from_file = file.map(|f| f.tokens.as_slice()).unwrap_or_default();
    let mut generate = Vec::new();
    if tokens.is_empty() && from_file.is_empty() {
        generate.push(grant(Role::Admin, None, "admin"));
        if file.is_none() {
            generate.push(grant(Role::Supervisor, None, "supervisor"));
            generate.push(grant(Role::Channel, None, "channel"));
            generate.extend(agents.iter().map(|a| grant(Role::Agent, Some(a), a)));
        }
    }
    if file.is_some() {
        let listed: Vec<&str> = from_file.iter().map(|t| t.name.as_str()).collect();
        for name in tokens.drop_file_tokens_except(&listed) {
            say(format!(
                "REVOKED token `{name}` (no longer in the configuration file)"
            ));
        }
    }
    for spec in from_file {
        tokens.put_from_file(
            spec.hash(),
            Grant {
                channels: spec.channels.clone(),
                ..grant(spec.role, spec.agent.as_deref(), &spec.name)
            },
        );
    }
    let shown = !generate.is_empty();
    for g in generate {
        let token = server::random_token().map_err(|e| e.to_string())?;
        say(format!(
            "TOKEN {} {} {token}",
            g.role.as_str(),
            g.agent.as_deref().unwrap_or("-")
        ));
        tokens.put_hashed(server::hash(&token), g);
    }
    tokens
        .save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if shown {
        say(format!(
            "(tokens are shown once; {} keeps only their hashes)",
            path.display()
        ));
    }
    Ok(tokens)
}
