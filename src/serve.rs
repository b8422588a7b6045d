//! `omniroute serve`: the QUIC server over the actor runtime and the durable log.
//!
//! Prints, one per line, what a client needs (parsed by the black-box tests):
//! `RECOVERED …`, `CERT <path>`, `FINGERPRINT <sha-256>`, `TOKEN <role> <agent|-> <token>`
//! (first start only: tokens are stored hashed), `LISTENING <addr>`.

use crate::drive::wall_ms;
use omniroute_actors::center::Clock;
use omniroute_actors::virtual_agent::RuleBasedAgent;
use omniroute_actors::{Runtime, RuntimeConfig};
use omniroute_engine::CenterConfig;
use omniroute_engine::journal::{Durability, Journal, JournalConfig, JournalError};
use omniroute_transport::proto::Role;
use omniroute_transport::server::{self, Grant, ServerConfig, Tokens};
use omniroute_transport::tls::ServerIdentity;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What `serve` runs with.
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub durability: Durability,
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn serve(options: ServeOptions, demo: CenterConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run(options, demo))
}

async fn run(options: ServeOptions, demo: CenterConfig) -> Result<(), String> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = wall_ms();
    let jc = JournalConfig {
        durability: options.durability,
        external_timers: true,
        ..JournalConfig::default()
    };
    // An empty data directory starts the built-in demo center; otherwise the log's own
    // configuration (changes made through the API live in the log).
    let (journal, report, fresh) = match Journal::open_dir(dir, None, jc.clone(), now) {
        Err(JournalError::Empty) => {
            let (j, r) =
                Journal::open_dir(dir, Some(demo.clone()), jc, now).map_err(|e| e.to_string())?;
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
        if fresh {
            " (new data directory: the built-in demo center)"
        } else {
            ""
        }
    ));
    let agents: Vec<String> =
        journal.read(|e| e.config().agents.into_iter().map(|a| a.id).collect());
    let identity = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => ServerIdentity::load(cert, key).map_err(|e| e.to_string())?,
        (None, None) => ServerIdentity::self_signed(dir).map_err(|e| e.to_string())?,
        _ => return Err("give both --cert and --key, or neither".into()),
    };
    say(format!("CERT {}", identity.cert_path.display()));
    say(format!("FINGERPRINT {}", identity.fingerprint));
    let tokens_path = dir.join("tokens");
    let tokens = if tokens_path.exists() {
        Tokens::load_file(&tokens_path).map_err(|e| e.to_string())?
    } else {
        let grant = |role, agent: Option<&str>, name: &str| Grant {
            role,
            agent: agent.map(String::from),
            name: name.to_string(),
        };
        let mut grants = vec![
            grant(Role::Admin, None, "admin"),
            grant(Role::Supervisor, None, "supervisor"),
            grant(Role::Channel, None, "channel"),
        ];
        grants.extend(agents.iter().map(|a| grant(Role::Agent, Some(a), a)));
        let (tokens, clear) =
            Tokens::create_file(&tokens_path, grants).map_err(|e| e.to_string())?;
        for (g, token) in clear {
            say(format!(
                "TOKEN {} {} {token}",
                format!("{:?}", g.role).to_lowercase(),
                g.agent.as_deref().unwrap_or("-")
            ));
        }
        say(format!(
            "(tokens are shown once; {} keeps only their hashes)",
            tokens_path.display()
        ));
        tokens
    };
    let runtime = Arc::new(
        Runtime::start(
            journal,
            Clock::starting_at(now),
            RuntimeConfig::default(),
            vec![Arc::new(RuleBasedAgent::demo())],
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    let endpoint = identity
        .server(options.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local = endpoint.local_addr().map_err(|e| e.to_string())?;
    say(format!("LISTENING {local}"));
    let served = server::serve(
        endpoint.clone(),
        runtime.clone(),
        ServerConfig {
            tokens,
            ..ServerConfig::default()
        },
    );
    tokio::select! {
        _ = served => {}
        _ = tokio::signal::ctrl_c() => {
            say("STOPPING".into());
            endpoint.close(server::close::NORMAL.into(), b"server stopping");
            runtime.shutdown();
        }
    }
    Ok(())
}
