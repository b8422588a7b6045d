//! `loadtest`: the load generator. Today: connect mode's measurement run against a
//! running server (see `connect.rs`); scenario files and virtual time come with the
//! simulator issue.

use clap::Parser;
use omniroute_loadtest::connect::{self, ConnectRun};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "loadtest", about = "omniroute's load generator")]
struct Args {
    /// The server's UDP address.
    #[arg(long)]
    connect: std::net::SocketAddr,
    /// The server's certificate (PEM).
    #[arg(long, default_value = "omniroute-data/tls/cert.pem")]
    cert: PathBuf,
    /// The name the certificate is issued for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// An admin token (the run creates its queue, agents and tokens with it).
    #[arg(long)]
    admin_token: String,
    /// Agents, one session (and QUIC connection) each.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Chats each agent carries at once.
    #[arg(long, default_value_t = 3)]
    chats_per_agent: u16,
    /// Customers per second, open loop.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds of arrivals.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Channel sessions submitting (round robin).
    #[arg(long, default_value_t = 8)]
    channel_sessions: usize,
    /// Handle time, ms (accept → complete).
    #[arg(long, default_value_t = 0)]
    handle_ms: u64,
    /// Round trips sampled for the transport and API floors.
    #[arg(long, default_value_t = 2_000)]
    rtt_samples: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    let run = ConnectRun {
        addr: a.connect,
        cert: a.cert,
        server_name: a.server_name,
        admin_token: a.admin_token,
        agents: a.agents,
        chats_per_agent: a.chats_per_agent,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.seconds),
        channel_sessions: a.channel_sessions,
        handle: Duration::from_millis(a.handle_ms),
        rtt_samples: a.rtt_samples,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(connect::run(run)) {
        Ok(r) => {
            println!(
                "target {:.0}/s: submitted {} ({:.0}/s), refused {}, completed {} ({:.0}/s), unfinished {}",
                r.target_rate,
                r.submitted,
                r.submitted_per_s,
                r.refused,
                r.completed,
                r.completed_per_s,
                r.unfinished
            );
            println!("submit -> offer at the agent: {}", r.submit_to_offer);
            println!("  from the actual send:       {}", r.send_to_offer);
            println!("  generator lateness:         {}", r.generator_lateness);
            println!("submit reply:                 {}", r.submit_reply);
            println!("whole lifecycle:              {}", r.lifecycle);
            println!("raw QUIC echo round trip:     {}", r.raw_quic_rtt);
            println!("API round trip (history):     {}", r.api_rtt);
            if let Some(path) = a.report {
                let json = serde_json::to_string_pretty(&r).expect("report serialises");
                if let Err(e) = std::fs::write(&path, json) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
            if r.refused > 0 || r.unfinished > 0 {
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
