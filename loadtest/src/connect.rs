//! Connect mode's load generator: a running server driven over QUIC in real time.
//!
//! The generator sets up its own queue, agents and tokens through the admin API, then
//! opens one session per agent (each agent accepts every offer and completes it after
//! the handle time) and submits customers **open loop**: customer *n* is due at
//! `start + n / rate`, whatever the server is doing, and every latency is measured from
//! that due time — a slow server shows as latency, never as a lower arrival rate
//! (no coordinated omission).
//!
//! It measures, with HDR histograms: submit → offer at the agent's client (the routing
//! latency a desktop sees), the submit's reply round trip, and the complete lifecycle
//! (due → completed). It also measures the raw QUIC round trip on the same machine (an
//! echo over a QUIC stream to an in-process quinn server) and the API's cheapest round
//! trip, to show how close to the transport's floor the API is.

use hdrhistogram::Histogram;
use omniroute_transport::actors::Push;
use omniroute_transport::actors::engine::{
    AgentDef, CapacityProfile, InteractionId, QueueDef, SkillDef, SkillLevel,
};
use omniroute_transport::client::{Client, ClientError};
use omniroute_transport::frame;
use omniroute_transport::proto::{ClientMsg, Entity, Role};
use omniroute_transport::tls;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What a connect run does.
#[derive(Clone, Debug)]
pub struct ConnectRun {
    /// The server.
    pub addr: SocketAddr,
    /// Its certificate (PEM) to trust.
    pub cert: PathBuf,
    /// The name the certificate is issued for.
    pub server_name: String,
    /// An admin token (to create the queue, agents and tokens it uses).
    pub admin_token: String,
    /// Agents (each one session, one QUIC connection).
    pub agents: usize,
    /// Chats each agent carries at once.
    pub chats_per_agent: u16,
    /// Customers per second, open loop.
    pub rate: f64,
    /// How long customers arrive.
    pub duration: Duration,
    /// Channel sessions submitting customers (round robin).
    pub channel_sessions: usize,
    /// Handle time: accept → complete.
    pub handle: Duration,
    /// Round trips measured for the transport floor and the API floor.
    pub rtt_samples: usize,
}

/// Latency percentiles, µs.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={}µs p90={}µs p99={}µs p99.9={}µs max={}µs",
            self.count, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// What a connect run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectReport {
    /// Customers per second asked for.
    pub target_rate: f64,
    /// Customers submitted.
    pub submitted: u64,
    /// Submits refused (by code) — `busy` past a limit, say.
    pub refused: u64,
    /// Submitted per second over the arrival period.
    pub submitted_per_s: f64,
    /// Lifecycles completed (submit → offer → accept → complete acknowledged).
    pub completed: u64,
    /// Completed per second, from the first due time to the last completion.
    pub completed_per_s: f64,
    /// Offers never completed when the run ended (lost work would show here).
    pub unfinished: u64,
    /// Due time → offer at the agent's client (free of coordinated omission; includes
    /// the generator's own timer lateness, below).
    pub submit_to_offer: Percentiles,
    /// The moment the submit was written → offer at the agent's client.
    pub send_to_offer: Percentiles,
    /// Due time → the moment the submit was written (tokio's timers tick every
    /// millisecond, so arrivals go out in per-millisecond bursts).
    pub generator_lateness: Percentiles,
    /// Due time → the submit's reply.
    pub submit_reply: Percentiles,
    /// Due time → complete acknowledged.
    pub lifecycle: Percentiles,
    /// Raw QUIC round trip (echo of a 64-byte frame on one stream, loopback).
    pub raw_quic_rtt: Percentiles,
    /// The API's cheapest round trip (a supervisor's `history` of an unknown customer:
    /// framing, session and authorisation, no actor or log).
    pub api_rtt: Percentiles,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

async fn connect(run: &ConnectRun, token: &str) -> Result<Client, String> {
    crate::live::session(&run.target(), token).await
}

impl ConnectRun {
    fn target(&self) -> crate::live::Target {
        crate::live::Target {
            addr: self.addr,
            cert: self.cert.clone(),
            server_name: self.server_name.clone(),
            admin_token: self.admin_token.clone(),
        }
    }
}

#[derive(Default)]
struct Tokens {
    channel: String,
    supervisor: String,
    agents: Vec<(String, String)>,
}

/// Creates (or recreates) the queue `loadtest`, its skill, `agents` agents, a token per
/// agent, a channel token and a supervisor token.
async fn setup(run: &ConnectRun) -> Result<Tokens, String> {
    let admin = connect(run, &run.admin_token).await?;
    let put = |entity: Entity| ClientMsg::Put {
        id: admin.id(),
        entity: Box::new(entity),
        position: None,
    };
    let fail = |what: &str, e: ClientError| format!("setting up ({what}): {e}");
    admin
        .request(put(Entity::Skill(SkillDef {
            name: "loadtest".into(),
            is_language: false,
        })))
        .await
        .map_err(|e| fail("skill", e))?;
    let mut queue = QueueDef::new("loadtest", &[("loadtest", 1)]);
    queue.channels = vec!["chat".into()];
    queue.max_waiting = 1_000_000;
    queue.offer_timeout_ms = 60_000;
    admin
        .request(put(Entity::Queue(queue)))
        .await
        .map_err(|e| fail("queue", e))?;
    // Agents in one configuration change (one per `put` would log N configurations).
    let mut config: omniroute_transport::actors::engine::CenterConfig = admin
        .request_as(ClientMsg::GetConfig { id: admin.id() })
        .await
        .map_err(|e| fail("get_config", e))?;
    config.agents.retain(|a| !a.id.starts_with("lt-"));
    let units = 3 * run.chats_per_agent.max(1);
    for i in 0..run.agents {
        config.agents.push(AgentDef {
            id: format!("lt-{i}"),
            name: format!("load test agent {i}"),
            skills: vec![SkillLevel {
                skill: "loadtest".into(),
                proficiency: 5,
            }],
            capacity: CapacityProfile::simple(units, &["chat"]),
        });
    }
    admin
        .request(ClientMsg::Configure {
            id: admin.id(),
            config: Box::new(config),
        })
        .await
        .map_err(|e| fail("agents", e))?;
    let admin = Arc::new(admin);
    let mut names: Vec<(String, Role, Option<String>)> = (0..run.agents)
        .map(|i| (format!("lt-{i}"), Role::Agent, Some(format!("lt-{i}"))))
        .collect();
    names.push(("lt-channel".into(), Role::Channel, None));
    names.push(("lt-supervisor".into(), Role::Supervisor, None));
    let order: Vec<String> = names.iter().map(|(n, _, _)| n.clone()).collect();
    let made = crate::live::create_tokens(admin, names).await?;
    let mut tokens = Tokens::default();
    for (name, token) in order.into_iter().zip(made) {
        match name.as_str() {
            "lt-channel" => tokens.channel = token,
            "lt-supervisor" => tokens.supervisor = token,
            _ => tokens.agents.push((name, token)),
        }
    }
    Ok(tokens)
}

/// Runs the load and measures.
pub async fn run(run: ConnectRun) -> Result<ConnectReport, String> {
    let Tokens {
        channel: channel_token,
        supervisor,
        agents: agent_tokens,
    } = setup(&run).await?;
    let (raw_quic_rtt, api_rtt) = round_trips(&run, &supervisor).await?;

    let offers = Arc::new(Mutex::new(histogram()));
    let lifecycles = Arc::new(Mutex::new(histogram()));
    let completed = Arc::new(AtomicU64::new(0));
    let offered = Arc::new(AtomicU64::new(0));
    let last_completion_us = Arc::new(AtomicU64::new(0));
    let period_us = 1e6 / run.rate;
    // Sessions first (their setup is not measured); the clock starts after.
    let mut agents = Vec::new();
    for (_, token) in &agent_tokens {
        let mut c = connect(&run, token).await?;
        let pushes = c.pushes().expect("first call");
        c.set_presence(omniroute_transport::proto::PresenceArg::Available)
            .await
            .map_err(|e| format!("presence: {e}"))?;
        agents.push((Arc::new(c), pushes));
    }
    let mut channels = Vec::new();
    for _ in 0..run.channel_sessions.max(1) {
        channels.push(Arc::new(connect(&run, &channel_token).await?));
    }
    let total = (run.rate * run.duration.as_secs_f64()).round() as u64;
    // When each customer's submit was actually written (ns after `start`; 0: not yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let from_send = Arc::new(Mutex::new(histogram()));
    let lateness = Arc::new(Mutex::new(histogram()));
    let start = Instant::now() + Duration::from_millis(200);
    let due = move |seq: u64| start + Duration::from_nanos((seq as f64 * period_us * 1e3) as u64);
    for (client, mut pushes) in agents {
        let (offers, lifecycles, completed, offered, last) = (
            offers.clone(),
            lifecycles.clone(),
            completed.clone(),
            offered.clone(),
            last_completion_us.clone(),
        );
        let (sent, from_send) = (sent.clone(), from_send.clone());
        let handle = run.handle;
        tokio::spawn(async move {
            while let Some(push) = pushes.recv().await {
                let Push::Offer(offer) = push else { continue };
                let Some(seq) = offer
                    .customer
                    .strip_prefix("lt-c-")
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let now = Instant::now();
                offers
                    .lock()
                    .await
                    .saturating_record(now.saturating_duration_since(due(seq)).as_micros() as u64);
                if let Some(at) = sent.get(seq as usize).map(|t| t.load(Ordering::Acquire))
                    && at > 0
                {
                    let at = start + Duration::from_nanos(at);
                    from_send
                        .lock()
                        .await
                        .saturating_record(now.saturating_duration_since(at).as_micros() as u64);
                }
                offered.fetch_add(1, Ordering::Relaxed);
                let (client, lifecycles, completed, last) = (
                    client.clone(),
                    lifecycles.clone(),
                    completed.clone(),
                    last.clone(),
                );
                let interaction = offer.interaction;
                tokio::spawn(async move {
                    if client.accept(interaction).await.is_err() {
                        return;
                    }
                    if !handle.is_zero() {
                        tokio::time::sleep(handle).await;
                    }
                    if complete(&client, interaction).await.is_ok() {
                        let done = Instant::now();
                        lifecycles.lock().await.saturating_record(
                            done.saturating_duration_since(due(seq)).as_micros() as u64,
                        );
                        completed.fetch_add(1, Ordering::Relaxed);
                        last.fetch_max(
                            done.saturating_duration_since(start).as_micros() as u64,
                            Ordering::Relaxed,
                        );
                    }
                });
            }
        });
    }

    // Open-loop arrivals, paced by a thread of their own: tokio's timers tick every
    // millisecond, a thread's sleep is precise to tens of microseconds.
    let replies = Arc::new(Mutex::new(histogram()));
    let refused = Arc::new(AtomicU64::new(0));
    let handle = tokio::runtime::Handle::current();
    let pacer = {
        let (replies, refused, sent, lateness) = (
            replies.clone(),
            refused.clone(),
            sent.clone(),
            lateness.clone(),
        );
        std::thread::spawn(move || {
            let mut inflight = Vec::with_capacity(total as usize);
            for seq in 0..total {
                let at = due(seq);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let c = channels[seq as usize % channels.len()].clone();
                let (replies, refused) = (replies.clone(), refused.clone());
                let (sent, lateness) = (sent.clone(), lateness.clone());
                inflight.push(handle.spawn(async move {
                    let now = Instant::now();
                    sent[seq as usize].store(
                        now.saturating_duration_since(start).as_nanos().max(1) as u64,
                        Ordering::Release,
                    );
                    lateness.lock().await.saturating_record(
                        now.saturating_duration_since(due(seq)).as_micros() as u64,
                    );
                    let r = c
                        .request(ClientMsg::Inbound {
                            id: c.id(),
                            channel: "chat".into(),
                            customer: format!("lt-c-{seq}"),
                            text: "hello".into(),
                            attributes: Default::default(),
                            queue: Some("loadtest".into()),
                            virtual_agent: None,
                            interaction: None,
                        })
                        .await;
                    match r {
                        Ok(_) => replies.lock().await.saturating_record(
                            Instant::now()
                                .saturating_duration_since(due(seq))
                                .as_micros() as u64,
                        ),
                        Err(e) => {
                            if refused.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("submit {seq} refused: {e}");
                            }
                        }
                    }
                }));
            }
            inflight
        })
    };
    let inflight = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the arrival thread panicked".to_string())?;
    let arrivals_s = start.elapsed().as_secs_f64();
    for task in inflight {
        let _ = task.await;
    }
    // Wait for the lifecycles to finish (or stop making progress).
    let accepted = total - refused.load(Ordering::Relaxed);
    let mut last_seen = (0, Instant::now());
    loop {
        let done = completed.load(Ordering::Relaxed);
        if done >= accepted {
            break;
        }
        if done != last_seen.0 {
            last_seen = (done, Instant::now());
        } else if last_seen.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let completed_n = completed.load(Ordering::Relaxed);
    let last_us = last_completion_us.load(Ordering::Relaxed).max(1);
    let report = ConnectReport {
        target_rate: run.rate,
        submitted: total,
        refused: refused.load(Ordering::Relaxed),
        submitted_per_s: total as f64 / arrivals_s.max(1e-9),
        completed: completed_n,
        completed_per_s: completed_n as f64 / (last_us as f64 / 1e6),
        unfinished: accepted.saturating_sub(completed_n),
        submit_to_offer: Percentiles::of(&*offers.lock().await),
        send_to_offer: Percentiles::of(&*from_send.lock().await),
        generator_lateness: Percentiles::of(&*lateness.lock().await),
        submit_reply: Percentiles::of(&*replies.lock().await),
        lifecycle: Percentiles::of(&*lifecycles.lock().await),
        raw_quic_rtt,
        api_rtt,
    };
    Ok(report)
}

async fn complete(client: &Client, interaction: InteractionId) -> Result<(), ClientError> {
    client
        .request(ClientMsg::Complete {
            id: client.id(),
            interaction,
            wrap_up_code: None,
        })
        .await
        .map(|_| ())
}

/// The transport's floor (a QUIC echo on loopback) and the API's cheapest round trip,
/// measured one after the other, sequentially.
async fn round_trips(run: &ConnectRun, token: &str) -> Result<(Percentiles, Percentiles), String> {
    let n = run.rtt_samples.max(1);
    // Raw QUIC: an in-process echo server with a throwaway self-signed identity.
    let dir = std::env::temp_dir().join(format!("omniroute-echo-{}", std::process::id()));
    let identity = tls::ServerIdentity::self_signed(&dir).map_err(|e| e.to_string())?;
    let server = identity
        .server(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| e.to_string())?;
    let echo_addr = server.local_addr().map_err(|e| e.to_string())?;
    let echo = tokio::spawn(async move {
        if let Some(incoming) = server.accept().await
            && let Ok(conn) = incoming.await
            && let Ok((mut send, mut recv)) = conn.accept_bi().await
        {
            while let Ok(Some(body)) = frame::read_frame(&mut recv, 1 << 20).await {
                let mut out = (body.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&body);
                if send.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    });
    let endpoint = tls::client(SocketAddr::from(([127, 0, 0, 1], 0)), &identity.chain)
        .map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect(echo_addr, tls::SELF_SIGNED_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut raw = histogram();
    let payload = vec![0x80u8; 60];
    let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&payload);
    for i in 0..n + 100 {
        let t = Instant::now();
        send.write_all(&framed).await.map_err(|e| e.to_string())?;
        frame::read_frame(&mut recv, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        if i >= 100 {
            raw.saturating_record(t.elapsed().as_micros() as u64);
        }
    }
    conn.close(0u32.into(), b"done");
    echo.abort();
    let _ = std::fs::remove_dir_all(&dir);

    let client = connect(run, token).await?;
    let mut api = histogram();
    for i in 0..n + 100 {
        let t = Instant::now();
        client
            .request(ClientMsg::History {
                id: client.id(),
                customer: "lt-nobody".into(),
            })
            .await
            .map_err(|e| format!("history: {e}"))?;
        if i >= 100 {
            api.saturating_record(t.elapsed().as_micros() as u64);
        }
    }
    Ok((Percentiles::of(&raw), Percentiles::of(&api)))
}
