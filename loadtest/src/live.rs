//! Connect mode driven by a scenario: a running server over QUIC, in real time. Every
//! agent is a real client session; customers are submitted open loop at the scenario's
//! rate by channel sessions (a pacing thread decides when; a slow server shows as
//! latency, never as fewer arrivals). The same records, checks and report as on
//! virtual time, except the engine's internal invariant check (it is in another
//! process); the routing latency is submit → offer at the agent's client.

use crate::agent::{self, Desk, OfferRecords, Shared};
use crate::report::{Record, Records, Report, Violation};
use crate::scenario::Scenario;
use omniroute_transport::actors::InboundOutcome;
use omniroute_transport::actors::engine::{CenterConfig, InteractionId, SeededRng};
use omniroute_transport::client::{Client, ClientError};
use omniroute_transport::proto::{ClientMsg, PresenceArg, Role};
use omniroute_transport::tls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the server is and how to administer it.
#[derive(Clone, Debug)]
pub struct Target {
    /// UDP address.
    pub addr: SocketAddr,
    /// Its certificate (PEM).
    pub cert: PathBuf,
    /// The certificate's name.
    pub server_name: String,
    /// An admin token: the run adds the scenario's skills, queues and agents to the
    /// server's configuration (replacing entities with the same ids) and makes a token
    /// per agent.
    pub admin_token: String,
}

/// A session with the server.
pub(crate) async fn session(t: &Target, token: &str) -> Result<Client, String> {
    let trust = tls::load_certs(&t.cert).map_err(|e| e.to_string())?;
    Client::connect(t.addr, &t.server_name, &trust, token)
        .await
        .map_err(|e| format!("cannot open a session with {}: {e}", t.addr))
}

#[derive(serde::Deserialize)]
struct NewToken {
    token: String,
}

/// Creates a token per name (replacing one of the same name), through an admin
/// session, 32 requests at a time (a session runs up to 64); the tokens in order.
pub(crate) async fn create_tokens(
    admin: Arc<Client>,
    names: Vec<(String, Role, Option<String>)>,
) -> Result<Vec<String>, String> {
    // A session runs up to 64 requests at once: stay under it.
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for (name, role, agent) in names {
        let (admin, slots) = (admin.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire().await.expect("never closed");
            let _ = admin
                .request(ClientMsg::DeleteToken {
                    id: admin.id(),
                    name: name.clone(),
                })
                .await;
            let made: NewToken = admin
                .request_as(ClientMsg::CreateToken {
                    id: admin.id(),
                    name: name.clone(),
                    role,
                    agent,
                    channels: Vec::new(),
                })
                .await
                .map_err(|e| format!("token {name}: {e}"))?;
            Ok::<_, String>(made.token)
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(tokens)
}

/// Puts the scenario's center into the server and makes the tokens; returns the
/// admin session, the channel's token, a supervisor's (to ask the server about work
/// left at the end; deleted then) and the agents' (in scenario order).
async fn setup(
    t: &Target,
    scenario: &Scenario,
    run_tag: &str,
) -> Result<(Arc<Client>, String, String, Vec<String>), String> {
    let admin = Arc::new(session(t, &t.admin_token).await?);
    let mut config: CenterConfig = admin
        .request_as(ClientMsg::GetConfig { id: admin.id() })
        .await
        .map_err(|e| format!("get_config: {e}"))?;
    let wanted = scenario.center()?;
    for c in wanted.channels {
        if !config.channels.iter().any(|x| x.name == c.name) {
            config.channels.push(c);
        }
    }
    for s in wanted.skills {
        if !config.skills.iter().any(|x| x.name == s.name) {
            config.skills.push(s);
        }
    }
    for q in wanted.queues {
        config.queues.retain(|x| x.id != q.id);
        config.queues.push(q);
    }
    for a in wanted.agents {
        config.agents.retain(|x| x.id != a.id);
        config.agents.push(a);
    }
    admin
        .request(ClientMsg::Configure {
            id: admin.id(),
            config: Box::new(config),
        })
        .await
        .map_err(|e| format!("configuring the scenario's center: {e}"))?;
    let mut names: Vec<(String, Role, Option<String>)> = scenario
        .agents()
        .into_iter()
        .map(|(_, a)| (format!("{run_tag}-{}", a.id), Role::Agent, Some(a.id)))
        .collect();
    names.push((format!("{run_tag}-supervisor"), Role::Supervisor, None));
    names.push((format!("{run_tag}-channel"), Role::Channel, None));
    let mut tokens = create_tokens(admin.clone(), names).await?;
    let channel = tokens.pop().expect("the channel token is last");
    let supervisor = tokens.pop().expect("the supervisor token is before it");
    Ok((admin, channel, supervisor, tokens))
}

/// A QUIC client session is a simulated agent's desk in connect mode.
impl Desk for Client {
    async fn available(&self, on: bool) -> Result<(), String> {
        let presence = if on {
            PresenceArg::Available
        } else {
            PresenceArg::Offline
        };
        self.set_presence(presence).await.map_err(|e| e.to_string())
    }
    async fn accept(&self, interaction: InteractionId) -> Result<(), String> {
        Client::accept(self, interaction)
            .await
            .map_err(|e| e.to_string())
    }
    async fn reject(&self, interaction: InteractionId) -> Result<(), String> {
        let id = self.id();
        self.request(ClientMsg::Reject { id, interaction })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn complete(&self, interaction: InteractionId) -> Result<(), String> {
        let id = self.id();
        self.request(ClientMsg::Complete {
            id,
            interaction,
            wrap_up_code: None,
        })
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }
    async fn end_wrap_up(&self, interaction: InteractionId) -> Result<(), String> {
        let id = self.id();
        match self.request(ClientMsg::EndWrapUp { id, interaction }).await {
            Ok(_) => Ok(()),
            Err(ClientError::Refused { code, .. }) if code == "invalid_state" => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Runs `scenario` against the server in real time.
pub async fn run(scenario: &Scenario, seed: u64, target: &Target) -> Result<Report, String> {
    let wall = Instant::now();
    let run_tag = format!("lt{seed}");
    let (admin, channel_token, supervisor_token, agent_tokens) =
        setup(target, scenario, &run_tag).await?;
    // Only for the lookup at the end: a server that refuses it still runs the scenario.
    let supervisor = session(target, &supervisor_token).await;
    let mut records = Records::new(scenario);
    // Pushes and replies cross the network: a breach must last 2 s to count.
    records.watch.grace_ms = 2_000;
    let shared = Arc::new(Shared::new(records));
    let mut rng = SeededRng::new(seed);
    // Every session is opened before the clock starts.
    let mut sessions = Vec::with_capacity(agent_tokens.len());
    for (n, token) in agent_tokens.iter().enumerate() {
        let mut c = session(target, token).await?;
        let pushes = c.pushes().expect("first call");
        // Work the agent still holds from an earlier run on this server takes room.
        let view: omniroute_transport::actors::AgentView = c
            .request_as(ClientMsg::AgentView {
                id: c.id(),
                agent: None,
            })
            .await
            .map_err(|e| format!("agent_view: {e}"))?;
        let held: Vec<(u64, String, u16)> = view
            .work
            .iter()
            .map(|w| (w.interaction.0, w.channel.clone(), w.units))
            .collect();
        shared.records.lock().unwrap().watch.seed(n, &held);
        sessions.push((Arc::new(c), pushes));
    }
    let channels: Vec<Arc<Client>> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(Arc::new(session(target, &channel_token).await?));
        }
        v
    };
    let start = Instant::now() + Duration::from_millis(500);
    shared.records.lock().unwrap().setup_wall = start - wall;
    let ms = move || start.elapsed().as_millis() as u64;
    let customer_tag = format!("{run_tag}-{}", wall.elapsed().as_nanos());

    let roster = agent::roster(
        scenario,
        &mut rng,
        tokio::time::Instant::from_std(start),
        OfferRecords::ByCustomer {
            prefix: format!("{customer_tag}-"),
        },
    );
    for (agent, (client, pushes)) in roster.into_iter().zip(sessions) {
        let on_shift = agent::Working::new(&shared);
        tokio::spawn(agent.run(client, pushes, shared.clone(), on_shift));
    }

    // The arrival plan, drawn up front (open loop).
    let mut plan: Vec<(f64, usize, usize, Option<f64>)> = scenario
        .arrival_plan(&mut rng)
        .into_iter()
        .map(|(t, si, qi)| (t, si, qi, None))
        .collect();
    for p in &mut plan {
        p.3 = scenario.queues[p.2]
            .patience
            .as_ref()
            .map(|d| d.sample(&mut rng));
    }
    let handle = tokio::runtime::Handle::current();
    let pacer = {
        let (shared, scenario) = (shared.clone(), scenario.clone());
        let channel_names: Vec<String> = scenario
            .channel_defs()
            .into_iter()
            .map(|c| c.name)
            .collect();
        std::thread::spawn(move || {
            let mut tasks = Vec::with_capacity(plan.len());
            for (n, (t, si, qi, patience)) in plan.into_iter().enumerate() {
                let due = start + Duration::from_secs_f64(t);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let idx = {
                    let mut r = shared.records.lock().unwrap();
                    let mut record = Record::new(qi, (t * 1000.0) as u64);
                    record.arrived_us = (t * 1e6) as u64;
                    record.channel = channel_names
                        .iter()
                        .position(|c| *c == scenario.arrivals[si].channel)
                        .unwrap_or(0);
                    record.found_free = r.watch.free_for(qi, record.channel);
                    let idx = r.arrive(record);
                    debug_assert_eq!(idx, n, "customer n is record n");
                    idx
                };
                let c = channels[n % channels.len()].clone();
                let stream = scenario.arrivals[si].clone();
                let queue = scenario.queues[qi].id.clone();
                let customer = format!("{customer_tag}-{n}");
                let shared = shared.clone();
                tasks.push(handle.spawn(async move {
                    let r = c
                        .inbound(&stream.channel, &customer, "hello", Some(&queue))
                        .await;
                    let interaction = match r {
                        Ok(InboundOutcome::Created { interaction }) => interaction,
                        Ok(other) => {
                            shared
                                .records
                                .lock()
                                .unwrap()
                                .refused(idx, format!("unexpected outcome {other:?}"));
                            return;
                        }
                        Err(e) => {
                            shared.records.lock().unwrap().refused(idx, e.to_string());
                            return;
                        }
                    };
                    shared
                        .records
                        .lock()
                        .unwrap()
                        .submitted(idx, interaction.0, ms());
                    let Some(p) = patience else { return };
                    tokio::time::sleep_until((due + Duration::from_secs_f64(p)).into()).await;
                    if shared.records.lock().unwrap().interactions[idx]
                        .answered_ms
                        .is_some()
                    {
                        return;
                    }
                    let left = c
                        .request(ClientMsg::CustomerLeft {
                            id: c.id(),
                            interaction,
                        })
                        .await;
                    if left.is_ok() {
                        shared.records.lock().unwrap().abandoned(idx, ms());
                    }
                }));
            }
            tasks
        })
    };
    // A progress line on a terminal, every second, while customers arrive.
    let progress = {
        let shared = shared.clone();
        let total = scenario.duration_s;
        tokio::spawn(async move {
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let t = start.elapsed().as_secs_f64();
                let line = shared.records.lock().unwrap().progress_line(
                    t,
                    total,
                    wall.elapsed().as_secs_f64(),
                );
                eprint!("\r{line}   ");
            }
        })
    };
    // The time series, every second of the run.
    let sampler = {
        let (shared, admin) = (shared.clone(), admin.clone());
        tokio::spawn(async move {
            for second in 1u64.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                {
                    let mut r = shared.records.lock().unwrap();
                    let live = r.open();
                    let now = ms();
                    r.sample(now, live);
                    r.check_conservation(now);
                }
                // The engine's own check, in the server, every 30 s.
                if second.is_multiple_of(30) {
                    engine_check(&admin, &shared, ms()).await;
                }
            }
        })
    };
    let tasks = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the arrival thread panicked".to_string())?;
    // Wait for the work in hand (or no progress for 5 minutes); customers' patience
    // timers of answered customers are not waited for. Work left once every agent's
    // shift is over, no answer is in progress and no customer is left to give up will
    // stay as it is: no need to wait for it — once that has held for the checks' grace
    // (a push already sent may still be on its way).
    let mut last = (usize::MAX, Instant::now());
    let mut stuck_since: Option<Instant> = None;
    let stuck = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (open, customers_done) = {
            let r = shared.records.lock().unwrap();
            // Customer n is record n; an answered one's patience is not waited for.
            let done = tasks.iter().enumerate().all(|(n, t)| {
                t.is_finished()
                    || r.interactions
                        .get(n)
                        .is_some_and(|x| x.answered_ms.is_some())
            });
            (r.open(), done)
        };
        if open == 0 {
            break false;
        }
        let idle = shared.working.load(std::sync::atomic::Ordering::Acquire) == 0 && customers_done;
        match (idle, stuck_since) {
            (false, _) => stuck_since = None,
            (true, None) => stuck_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() >= Duration::from_secs(2) => break true,
            (true, Some(_)) => {}
        }
        if open != last.0 {
            last = (open, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(300) {
            // No progress, but agents still on shift (or customers still patient): work
            // still open is a stall, left to the records' close to report.
            break false;
        }
    };
    progress.abort();
    sampler.abort();
    for t in tasks {
        t.abort();
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let finished = ms();
    engine_check(&admin, &shared, finished).await;
    if stuck {
        still_waiting(supervisor.as_ref(), &shared, finished).await;
    }
    // The supervisor's token reads any conversation: it goes with the run (one left by
    // a run that failed is replaced by the next run's).
    let _ = admin
        .request(ClientMsg::DeleteToken {
            id: admin.id(),
            name: format!("{run_tag}-supervisor"),
        })
        .await;
    let mut records =
        std::mem::replace(&mut *shared.records.lock().unwrap(), Records::new(scenario));
    records.close(finished);
    Ok(Report::build(scenario, seed, &records, wall.elapsed()))
}

/// Whether an interaction in `state` at the end of a run whose agents are all gone
/// waits for an agent (in a queue: their offers were withdrawn when they logged out).
fn left_waiting(state: &omniroute_transport::actors::engine::InteractionState) -> bool {
    matches!(
        state,
        omniroute_transport::actors::engine::InteractionState::Queued
    )
}

/// Once every agent is gone, marks the interactions the records leave open that the
/// server says still wait in a queue: work no agent took, not work lost (which the
/// records' close reports). Without the server's answer they stay open, and why is
/// reported.
async fn still_waiting(supervisor: Result<&Client, &String>, shared: &Shared, at_ms: u64) {
    let open: Vec<(usize, u64)> = {
        let r = shared.records.lock().unwrap();
        r.interactions
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.finished() && x.answered_ms.is_none())
            .filter_map(|(i, x)| Some((i, x.id?)))
            .collect()
    };
    let (mut unknown, mut first_error) = (0, None);
    for (i, id) in open {
        let view = match supervisor {
            Ok(s) => s
                .request_as::<omniroute_transport::actors::conversation::ConversationView>(
                    ClientMsg::Conversation {
                        id: s.id(),
                        interaction: InteractionId(id),
                    },
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("no supervisor session: {e}")),
        };
        match view {
            Ok(v) if left_waiting(&v.state) => shared.records.lock().unwrap().still_waiting(i),
            Ok(_) => {}
            Err(e) => {
                unknown += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(first) = first_error {
        shared.records.lock().unwrap().violate(Violation {
            kind: "still_waiting_unknown".into(),
            interaction: 0,
            agent: String::new(),
            at_ms,
            detail: format!(
                "{unknown} open interactions could not be looked up in the server ({first}): they count as unaccounted"
            ),
        });
    }
}

/// Runs the engine's own invariant check in the server (`check_invariants`, an admin
/// request) and records what it finds; a refusal (an older server) is a violation too,
/// so a run never passes unchecked.
async fn engine_check(admin: &Client, shared: &Shared, at_ms: u64) {
    let found: Result<Vec<String>, ClientError> = admin
        .request_as(ClientMsg::CheckInvariants { id: admin.id() })
        .await;
    let mut r = shared.records.lock().unwrap();
    match found {
        Ok(breaches) => {
            for b in breaches {
                r.violate(crate::report::engine_violation(b, at_ms));
            }
        }
        Err(e) => r.violate(Violation {
            kind: "engine_check_failed".into(),
            interaction: 0,
            agent: String::new(),
            at_ms,
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{Shared, left_waiting, still_waiting};
    use crate::report::{Record, Records};
    use omniroute_transport::actors::engine::InteractionState as S;

    #[test]
    fn a_lookup_the_server_refuses_is_reported_and_the_work_stays_open() {
        let s = crate::scenario::test_scenario("", "count = 1\nchannels = { voice = 1 }");
        let shared = Shared::new(Records::new(&s));
        {
            let mut r = shared.records.lock().unwrap();
            for n in 0..3 {
                let i = r.arrive(Record::new(0, n));
                r.submitted(i, 40 + n, n);
            }
        }
        let refused = "the server refused the supervisor token".to_string();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(still_waiting(Err(&refused), &shared, 9));
        let r = shared.records.lock().unwrap();
        assert_eq!(r.open(), 3, "nothing excused without the server's word");
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        let v = &r.violations[0];
        assert_eq!(v.kind, "still_waiting_unknown");
        assert!(v.detail.starts_with("3 open interactions") && v.detail.contains(&refused));
    }

    #[test]
    fn only_queued_work_counts_as_left_waiting_once_every_agent_is_gone() {
        assert!(left_waiting(&S::Queued));
        // An offer outliving every agent's logout, work held or finished: not waiting
        // for an agent, so not excused from the records' accounting.
        for s in [
            S::Offered,
            S::Assigned,
            S::WrapUp,
            S::Completed,
            S::Abandoned,
        ] {
            assert!(!left_waiting(&s), "{s:?}");
        }
    }
}
