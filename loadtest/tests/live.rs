//! Connect mode driven by a scenario, against a real server on loopback QUIC (in this
//! process): the scenario's center is configured through the admin API, every agent is
//! a client session, customers arrive open loop; the run is clean and every customer is
//! accounted for — and a center changed under a run is caught and fails it.

use omniroute_loadtest::live::{self, Target};
use omniroute_loadtest::scenario::Scenario;
use omniroute_transport::actors::center::Clock;
use omniroute_transport::actors::engine::journal::{
    Command, Durability, Journal, JournalConfig, MemoryStore,
};
use omniroute_transport::actors::engine::{CenterConfig, ChannelDef};
use omniroute_transport::actors::{Runtime, RuntimeConfig};
use omniroute_transport::proto::Role;
use omniroute_transport::server::{self, Grant, ServerConfig, Tokens};
use omniroute_transport::tls::{SELF_SIGNED_NAME, ServerIdentity};
use std::path::Path;
use std::sync::Arc;

/// A server on loopback QUIC in this process, with an admin token; its runtime (to
/// act on the center under a run), its address and certificate.
async fn serve() -> (Arc<Runtime>, Target, tempfile::TempDir) {
    let now = 1_764_000_000_000;
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(CenterConfig {
            channels: ChannelDef::builtin(),
            ..Default::default()
        }),
        JournalConfig {
            durability: Durability::Batched { flush_every_ms: 5 },
            external_timers: true,
            ..Default::default()
        },
        now,
    )
    .unwrap();
    let runtime = Arc::new(
        Runtime::start(
            journal,
            Clock::starting_at(now),
            RuntimeConfig::default(),
            vec![],
        )
        .await
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let identity = ServerIdentity::self_signed(dir.path()).unwrap();
    let endpoint = identity.server("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let mut tokens = Tokens::new();
    tokens.add(
        "admin-token-for-the-live-test",
        Grant {
            role: Role::Admin,
            agent: None,
            name: "admin".into(),
            channels: Vec::new(),
        },
    );
    tokio::spawn(server::serve(
        endpoint,
        runtime.clone(),
        ServerConfig {
            tokens,
            ..Default::default()
        },
    ));
    let target = Target {
        addr,
        cert: dir.path().join("tls").join("cert.pem"),
        server_name: SELF_SIGNED_NAME.into(),
        admin_token: "admin-token-for-the-live-test".into(),
    };
    (runtime, target, dir)
}

/// The scenario `text` run with `seed` against a server of its own.
async fn run_live(text: &str, seed: u64) -> omniroute_loadtest::report::Report {
    let (_runtime, target, _dir) = serve().await;
    let scenario = Scenario::parse(text, Path::new(".")).unwrap();
    live::run(&scenario, seed, &target).await.unwrap()
}

/// A small chat center for a few seconds of real time.
const LIVE: &str = r#"
name = "live"
duration_s = 3
seed = 4
[[queues]]
id = "live"
channels = ["chat"]
skills = { live = 1 }
service_level_s = 1
handle_time = { dist = "exponential", mean_s = 0.3 }
wrap_up_s = 0.2
patience = { dist = "exponential", mean_s = 1 }
[[agent_groups]]
name = "live-agent"
count = 4
skills = { live = 3 }
channels = { chat = 1 }
reject_probability = 0.1
wrap_up = { dist = "fixed", s = 0.05 }
[[arrivals]]
queue = "live"
channel = "chat"
rate_per_hour = 36_000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_against_a_live_server() {
    let report = run_live(LIVE, 4).await;
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let q = &report.queues[0];
    assert!(q.offered >= 15, "{q:?}");
    assert_eq!(q.offered, q.answered + q.abandoned + q.refused, "{q:?}");
    assert_eq!(q.refused, 0, "{q:?}");
    assert!(q.answered > 0 && report.engine.offers >= q.answered);
    // Routing is timed on customers who found an agent free: some did, not all.
    let e = &report.engine;
    assert!(
        e.routing_samples > 0 && e.routing_samples <= q.offered && e.routing_p50_us > 0,
        "{e:?}"
    );
}

/// The center changed under a run — every agent loses the queue's skill once the
/// scenario has configured it — so customers wait while, as far as the simulator knows,
/// eligible agents sit free: the run reports the breach with the interaction and the
/// agent, and its exit status is 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_center_changed_under_a_run_is_reported_and_fails_it() {
    let (runtime, target, _dir) = serve().await;
    let scenario = Scenario::parse(
        r#"
name = "drift"
duration_s = 4
seed = 5
queues = [{ id = "drift", channels = ["chat"], skills = { drift = 1 }, handle_time = { dist = "fixed", s = 0.2 }, patience = { dist = "fixed", s = 2.5 } }]
agent_groups = [{ name = "drift-agent", count = 2, skills = { drift = 3 }, channels = { chat = 1 } }]
arrivals = [{ queue = "drift", channel = "chat", rate_per_hour = 3_600 }]
"#,
        Path::new("."),
    )
    .unwrap();
    let drift = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            // Once the run has configured its agents with the skill, take it away.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let mut config = runtime.read(|e| e.config());
                let skilled = config
                    .agents
                    .iter()
                    .any(|a| a.skills.iter().any(|s| s.skill == "drift"));
                if !skilled {
                    continue;
                }
                for a in &mut config.agents {
                    a.skills.retain(|s| s.skill != "drift");
                }
                runtime
                    .execute(Command::Configure { config })
                    .await
                    .unwrap();
                return;
            }
        })
    };
    let report = live::run(&scenario, 5, &target).await.unwrap();
    drift.await.unwrap();
    let breach = report
        .violations
        .iter()
        .find(|v| v.kind == "waiting_while_agent_free")
        .unwrap_or_else(|| panic!("{:?}", report.violations));
    assert!(breach.interaction > 0, "{breach:?}");
    assert!(breach.agent.starts_with("drift-agent"), "{breach:?}");
    assert_eq!(report.exit_status(), 2);
}

/// Agents whose shifts end while customers keep coming (and never give up): once the
/// shifts are over and nothing is in progress the run ends — it does not wait minutes
/// for work nobody will take — and the server confirms what still waits, which is then
/// neither lost nor a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_when_every_shift_is_over_ends_a_live_run_and_is_confirmed_waiting() {
    // The small center's agents log off after a second; its customers never give up.
    let text = LIVE
        .replace("patience = { dist = \"exponential\", mean_s = 1 }\n", "")
        .replace("reject_probability = 0.1\n", "shift_end_s = 1\n");
    assert!(!text.contains("patience") && text.contains("shift_end_s"));
    let report = run_live(&text, 5).await;
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let q = &report.queues[0];
    assert!(q.answered > 0 && q.still_waiting >= 10, "{q:?}");
    assert_eq!(
        q.offered,
        q.answered + q.abandoned + q.refused + q.still_waiting,
        "{q:?}"
    );
    // Ended once nothing more could happen (a few seconds), not after the 5 minutes
    // without progress that end a run otherwise.
    assert!(report.simulated_s < 60.0, "{}", report.simulated_s);
}
