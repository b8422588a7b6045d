//! Connect mode driven by a scenario, against a real server on loopback QUIC (in this
//! process): the scenario's center is configured through the admin API, every agent is
//! a client session, customers arrive open loop; the run is clean and every customer is
//! accounted for.

use omniroute_loadtest::live::{self, Target};
use omniroute_loadtest::scenario::Scenario;
use omniroute_transport::actors::center::Clock;
use omniroute_transport::actors::engine::journal::{
    Durability, Journal, JournalConfig, MemoryStore,
};
use omniroute_transport::actors::engine::{CenterConfig, ChannelDef};
use omniroute_transport::actors::{Runtime, RuntimeConfig};
use omniroute_transport::proto::Role;
use omniroute_transport::server::{self, Grant, ServerConfig, Tokens};
use omniroute_transport::tls::{SELF_SIGNED_NAME, ServerIdentity};
use std::path::Path;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_against_a_live_server() {
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
        runtime,
        ServerConfig {
            tokens,
            ..Default::default()
        },
    ));
    let scenario = Scenario::parse(
        r#"
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
"#,
        Path::new("."),
    )
    .unwrap();
    let report = live::run(
        &scenario,
        4,
        &Target {
            addr,
            cert: dir.path().join("tls").join("cert.pem"),
            server_name: SELF_SIGNED_NAME.into(),
            admin_token: "admin-token-for-the-live-test".into(),
        },
    )
    .await
    .unwrap();
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
