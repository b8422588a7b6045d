//! `loadtest`: the simulator and load generator.
//!
//! `loadtest --scenario FILE [--virtual-time] [--seed N] [--report FILE.json]
//! [--html FILE.html]` runs a
//! scenario on virtual time through the real engine and actors; `loadtest --connect
//! ADDR --admin-token T …` measures a running server over QUIC (see docs/BENCHMARKS.md).

use clap::Parser;
use omniroute_loadtest::connect::{self, ConnectRun};
use omniroute_loadtest::scenario::Scenario;
use omniroute_loadtest::sim;
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc, as the server's (`omniroute_actors::alloc`).
#[global_allocator]
static GLOBAL: omniroute_actors::alloc::MiMalloc = omniroute_actors::alloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "omniroute's contact-center simulator and load generator"
)]
struct Args {
    /// A scenario file (TOML, docs/SIMULATOR.md): run it on virtual time.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Run the scenario on virtual time (the default with --scenario).
    #[arg(long, requires = "scenario")]
    virtual_time: bool,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Virtual time: run the scenario this many times, with seeds SEED, SEED+1, …,
    /// and report each figure's mean with a 95 % confidence interval.
    #[arg(long, requires = "scenario", conflicts_with_all = ["connect", "html"])]
    replications: Option<u32>,
    /// With --replications: how many run at once, one per thread (default: the
    /// machine's cores). The summary is the same for any value.
    #[arg(long, requires = "replications")]
    jobs: Option<usize>,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the report as a self-contained HTML page with charts here.
    #[arg(long, requires = "scenario")]
    html: Option<PathBuf>,
    /// Drive a running server at this UDP address over QUIC in real time: with
    /// --scenario, the scenario (every agent a client session); without, the fixed
    /// measurement run (its own queue and agents; docs/BENCHMARKS.md).
    #[arg(long, conflicts_with = "virtual_time")]
    connect: Option<std::net::SocketAddr>,
    /// Connect mode: the server's certificate (PEM).
    #[arg(long, default_value = "omniroute-data/tls/cert.pem")]
    cert: PathBuf,
    /// Connect mode: the name the certificate is issued for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Connect mode: an admin token (the run creates its queue, agents and tokens).
    #[arg(long)]
    admin_token: Option<String>,
    /// Connect mode: agents, one session (and QUIC connection) each.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Connect mode: chats each agent carries at once.
    #[arg(long, default_value_t = 3)]
    chats_per_agent: u16,
    /// Connect mode: customers per second, open loop.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Connect mode: seconds of arrivals.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Connect mode: channel sessions submitting (round robin).
    #[arg(long, default_value_t = 8)]
    channel_sessions: usize,
    /// Connect mode: handle time, ms (accept → complete).
    #[arg(long, default_value_t = 0)]
    handle_ms: u64,
    /// Connect mode: round trips sampled for the transport and API floors.
    #[arg(long, default_value_t = 2_000)]
    rtt_samples: usize,
}

fn fail(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) {
    let json = serde_json::to_string_pretty(value).expect("reports serialise");
    if let Err(e) = std::fs::write(path, json) {
        fail(format!("cannot write {}: {e}", path.display()));
    }
}

/// Prints the table, writes the files asked for, exits 2 on violations.
fn finish(a: &Args, report: &omniroute_loadtest::report::Report) {
    print!("{}", report.table());
    if let Some(path) = &a.report {
        write_json(path, report);
    }
    if let Some(path) = &a.html
        && let Err(e) = std::fs::write(path, omniroute_loadtest::html::render(report))
    {
        fail(format!("cannot write {}: {e}", path.display()));
    }
    match report.exit_status() {
        0 => {}
        code => std::process::exit(code),
    }
}

fn main() {
    let a = Args::parse();
    if let (Some(path), Some(addr)) = (&a.scenario, a.connect) {
        let scenario = Scenario::load(path).unwrap_or_else(|e| fail(e));
        let seed = a.seed.unwrap_or(scenario.seed);
        let Some(admin_token) = a.admin_token.clone() else {
            fail("--connect needs --admin-token".into());
        };
        let target = omniroute_loadtest::live::Target {
            addr,
            cert: a.cert.clone(),
            server_name: a.server_name.clone(),
            admin_token,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let report = rt
            .block_on(omniroute_loadtest::live::run(&scenario, seed, &target))
            .unwrap_or_else(|e| fail(e));
        finish(&a, &report);
        return;
    }
    if let (Some(path), Some(n)) = (&a.scenario, a.replications) {
        let scenario = Scenario::load(path).unwrap_or_else(|e| fail(e));
        let seed = a.seed.unwrap_or(scenario.seed);
        if n == 0 {
            fail("--replications must be at least 1".into());
        }
        let seeds: Vec<u64> = (0..u64::from(n)).map(|i| seed.wrapping_add(i)).collect();
        let jobs = a.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if jobs == 0 {
            fail("--jobs must be at least 1".into());
        }
        let began = std::time::Instant::now();
        let summary = omniroute_loadtest::replications::run(&scenario, &seeds, jobs)
            .unwrap_or_else(|e| fail(e));
        let wall = began.elapsed().as_secs_f64();
        print!("{}", summary.table());
        // Throughput over all the runs (not part of the summary, which does not depend
        // on --jobs).
        let interactions: u64 = summary.runs.iter().map(|r| r.interactions).sum();
        println!(
            "{} runs, {interactions} interactions in {wall:.2} wall s with {} jobs: {:.0} interactions per wall second",
            summary.runs.len(),
            omniroute_loadtest::replications::threads(jobs, seeds.len()),
            interactions as f64 / wall.max(1e-9)
        );
        if let Some(path) = &a.report {
            write_json(path, &summary);
        }
        if !summary.violations.is_empty() {
            std::process::exit(2);
        }
        return;
    }
    if let Some(path) = &a.scenario {
        let scenario = Scenario::load(path).unwrap_or_else(|e| fail(e));
        let seed = a.seed.unwrap_or(scenario.seed);
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let total = scenario.duration_s;
        let began = std::time::Instant::now();
        let mut last = std::time::Instant::now();
        let mut progress = |t: f64, r: &omniroute_loadtest::report::Records| {
            // At most ten times a wall second.
            if tty && last.elapsed().as_millis() >= 100 {
                last = std::time::Instant::now();
                eprint!(
                    "\r{}   ",
                    r.progress_line(t, total, began.elapsed().as_secs_f64())
                );
            }
        };
        let report = sim::run(&scenario, seed, &mut progress).unwrap_or_else(|e| fail(e));
        if tty {
            eprintln!();
        }
        finish(&a, &report);
        return;
    }
    let Some(addr) = a.connect else {
        fail("give --scenario FILE (virtual time) or --connect ADDR".into());
    };
    let Some(admin_token) = a.admin_token else {
        fail("--connect needs --admin-token".into());
    };
    let run = ConnectRun {
        addr,
        cert: a.cert,
        server_name: a.server_name,
        admin_token,
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
            if let Some(path) = &a.report {
                write_json(path, &r);
            }
            if r.refused > 0 || r.unfinished > 0 {
                std::process::exit(2);
            }
        }
        Err(e) => fail(e),
    }
}
