//! Black box: `omniroute serve --config FILE` on loopback QUIC, driven through the Rust
//! client and the CLI clients: whole journeys (submit → offer → accept → messages →
//! transfer → complete with a wrap-up code; reject and timeout re-offers; abandon;
//! presence changes), authorisation failures, and a configuration file's mistakes
//! and precedence.

use omniroute_actors::engine::TransferTarget;
use omniroute_actors::{InboundOutcome, Push};
use omniroute_transport::client::{Client, ClientError};
use omniroute_transport::proto::{CenterStats, ClientMsg, PresenceArg, ServerPush};
use omniroute_transport::tls::{self, SELF_SIGNED_NAME};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const CENTER: &str = r#"
[durability]
mode = "batched"
interval_ms = 5

[[skills]]
name = "sales"

[[agents]]
id = "ana"
skills = [{ skill = "sales", proficiency = 5 }]
capacity = { total_units = 10, channels = [{ channel = "chat" }, { channel = "sms" }] }

[[agents]]
id = "bob"
skills = [{ skill = "sales", proficiency = 5 }]
capacity = { total_units = 10, channels = [{ channel = "chat" }, { channel = "sms" }] }

[[agents]]
id = "cid"
skills = [{ skill = "sales", proficiency = 5 }]
capacity = { total_units = 10, channels = [{ channel = "chat" }, { channel = "sms" }] }

[[queues]]
id = "sales"
required_skills = [{ skill = "sales", min_proficiency = 1 }]
offer_timeout_ms = 1500
wrap_up_codes = ["sold", "lost"]
max_waiting = 100

[routing]
default_queue = "sales"

[[tokens]]
name = "admin"
role = "admin"
token = "admin-token-0123456789"

[[tokens]]
name = "floor"
role = "supervisor"
token = "supervisor-token-0123456789"

[[tokens]]
name = "web"
role = "channel"
token = "channel-token-0123456789"

[[tokens]]
name = "ana"
role = "agent"
agent = "ana"
token = "ana-token-0123456789"

[[tokens]]
name = "bob"
role = "agent"
agent = "bob"
token = "bob-token-0123456789"

[[tokens]]
name = "cid"
role = "agent"
agent = "cid"
token = "cid-token-0123456789"
"#;

struct Server {
    child: Child,
    addr: SocketAddr,
    cert: PathBuf,
    output: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, data: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("omniroute runs");
    // Owned by `Server` at once, so it is killed and waited for whatever happens.
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: data.join("tls").join("cert.pem"),
        output: Vec::new(),
        _tmp: None,
    };
    let mut lines = BufReader::new(server.child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the server prints LISTENING")
            .expect("readable output");
        server.output.push(line.clone());
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            server.addr = addr.parse().unwrap();
            return server;
        }
    }
}

fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("center.toml");
    std::fs::write(&config, CENTER).unwrap();
    let mut s = serve(&config, &tmp.path().join("data"));
    s._tmp = Some(tmp);
    s
}

impl Server {
    async fn client(&self, who: &str) -> Client {
        self.try_client(&format!("{who}-token-0123456789"))
            .await
            .unwrap()
    }

    async fn try_client(&self, token: &str) -> Result<Client, ClientError> {
        let trust = tls::load_certs(&self.cert).unwrap();
        Client::connect(self.addr, SELF_SIGNED_NAME, &trust, token).await
    }

    /// An agent, available, with its pushes.
    async fn agent(&self, who: &str) -> (Client, UnboundedReceiver<Push>) {
        let mut c = self.client(who).await;
        let pushes = c.pushes().unwrap();
        c.set_presence(PresenceArg::Available).await.unwrap();
        (c, pushes)
    }
}

/// The next push that is not a presence change.
async fn next(pushes: &mut UnboundedReceiver<Push>) -> Push {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
            .await
            .expect("a push within 10 s")
            .expect("session open");
        if !matches!(p, Push::Presence { .. }) {
            return p;
        }
    }
}

/// Nothing but presence changes for a while.
async fn quiet(pushes: &mut UnboundedReceiver<Push>, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, pushes.recv()).await {
        assert!(matches!(p, Push::Presence { .. }), "unexpected {p:?}");
    }
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, code: &str) -> String {
    match r {
        Err(ClientError::Refused { code: c, message }) if c == code => message,
        other => panic!("expected `{code}`, got {other:?}"),
    }
}

async fn inbound(web: &Client, customer: &str, text: &str) -> InboundOutcome {
    web.inbound("chat", customer, text, None).await.unwrap()
}

fn created(outcome: InboundOutcome) -> omniroute_actors::engine::InteractionId {
    match outcome {
        InboundOutcome::Created { interaction } => interaction,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_offer_accept_messages_transfer_and_complete_with_wrap_up() {
    let server = start();
    let (ana, mut ana_pushes) = server.agent("ana").await;
    let mut web = server.client("channel").await;
    // The adapter receives what agents write to its customers, to deliver it.
    let mut outbound = web.server_pushes().unwrap();
    web.request(ClientMsg::SubscribeOutbound {
        id: web.id(),
        channels: vec!["chat".into()],
    })
    .await
    .unwrap();
    let i = created(inbound(&web, "carol", "I want the big plan").await);
    let Push::Offer(offer) = next(&mut ana_pushes).await else {
        panic!()
    };
    assert_eq!((offer.interaction, offer.queue.as_str()), (i, "sales"));
    assert_eq!(offer.customer, "carol");
    ana.accept(i).await.unwrap();
    assert!(matches!(
        next(&mut ana_pushes).await,
        Push::Message { .. } | Push::Assigned { .. }
    ));
    // The customer writes again (joins the conversation), the agent answers.
    assert!(matches!(
        inbound(&web, "carol", "on sms too").await,
        InboundOutcome::Joined { interaction } if interaction == i
    ));
    // An adapter can also name the conversation; another customer's is refused.
    let post = |customer: &str| ClientMsg::Inbound {
        id: web.id(),
        channel: "chat".into(),
        customer: customer.into(),
        text: "(named)".into(),
        attributes: Default::default(),
        queue: None,
        virtual_agent: None,
        interaction: Some(i),
    };
    let joined: InboundOutcome = web.request_as(post("carol")).await.unwrap();
    assert_eq!(joined, InboundOutcome::Joined { interaction: i });
    refused(web.request(post("mallory")).await, "bad_request");
    ana.send_message(i, "the big plan it is").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let Push::Message { entry, .. } = next(&mut ana_pushes).await {
            seen.push(entry.text);
        }
    }
    assert!(seen.contains(&"on sms too".to_string()), "{seen:?}");
    let delivered = tokio::time::timeout(Duration::from_secs(5), outbound.recv())
        .await
        .unwrap()
        .unwrap();
    match delivered {
        ServerPush::Outbound {
            interaction,
            customer,
            text,
            from_id,
            ..
        } => {
            assert_eq!((interaction, customer.as_str()), (i, "carol"));
            assert_eq!(text, "the big plan it is");
            assert_eq!(from_id.as_deref(), Some("ana"));
        }
        other => panic!("{other:?}"),
    }
    // Transfer to bob: his offer carries the whole transcript.
    let (bob, mut bob_pushes) = server.agent("bob").await;
    ana.request(ClientMsg::Transfer {
        id: ana.id(),
        interaction: i,
        to: TransferTarget::Agent("bob".into()),
    })
    .await
    .unwrap();
    let offer = loop {
        if let Push::Offer(o) = next(&mut bob_pushes).await {
            break o;
        }
    };
    let texts: Vec<&str> = offer.transcript.iter().map(|e| e.text.as_str()).collect();
    for t in ["I want the big plan", "on sms too", "the big plan it is"] {
        assert!(texts.contains(&t), "{t} missing from {texts:?}");
    }
    bob.accept(i).await.unwrap();
    // A wrap-up code the queue does not allow is refused; an allowed one completes.
    let complete = |code: &str| ClientMsg::Complete {
        id: bob.id(),
        interaction: i,
        wrap_up_code: Some(code.into()),
    };
    let message = refused(bob.request(complete("maybe")).await, "rejected");
    assert!(message.contains("sold"), "{message}");
    bob.request(complete("sold")).await.unwrap();
    loop {
        if let Push::Completed { interaction, .. } = next(&mut bob_pushes).await {
            assert_eq!(interaction, i);
            break;
        }
    }
    // The adapter hears that the conversation ended.
    loop {
        let p = tokio::time::timeout(Duration::from_secs(5), outbound.recv())
            .await
            .unwrap()
            .unwrap();
        if let ServerPush::ConversationEnded {
            interaction,
            reason,
            ..
        } = p
        {
            assert_eq!((interaction, reason.as_str()), (i, "completed"));
            break;
        }
    }
    // The supervisor reads the whole conversation.
    let sup = server.client("supervisor").await;
    let view = sup.conversation(i).await.unwrap();
    assert_eq!(view.agent.as_deref(), Some("bob"));
    assert!(
        view.participants.iter().any(|p| p == "agent:ana"),
        "{:?}",
        view.participants
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_offer_and_a_timed_out_offer_go_to_the_next_agent() {
    let server = start();
    let mut agents = Vec::new();
    for who in ["ana", "bob", "cid"] {
        let (c, p) = server.agent(who).await;
        agents.push((who, c, p));
    }
    let web = server.client("channel").await;
    let i = created(inbound(&web, "dave", "hello?").await);
    // Whoever gets it first rejects; the second lets it time out (1.5 s); the third
    // gets it.
    let mut offered = Vec::new();
    for step in 0..3 {
        let (k, offer) = loop {
            let mut found = None;
            for (k, (_, _, p)) in agents.iter_mut().enumerate() {
                if let Ok(Push::Offer(o)) = p.try_recv() {
                    found = Some((k, o));
                    break;
                }
            }
            match found {
                Some(f) => break f,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert_eq!(offer.interaction, i);
        assert!(!offered.contains(&k), "offered twice to {}", agents[k].0);
        offered.push(k);
        match step {
            0 => {
                agents[k]
                    .1
                    .request(ClientMsg::Reject {
                        id: agents[k].1.id(),
                        interaction: i,
                    })
                    .await
                    .unwrap();
                loop {
                    if let Push::OfferEnded { reason, .. } = next(&mut agents[k].2).await {
                        assert_eq!(reason, "rejected");
                        break;
                    }
                }
            }
            1 => loop {
                if let Push::OfferEnded { reason, .. } = next(&mut agents[k].2).await {
                    assert_eq!(reason, "timed_out");
                    break;
                }
            },
            _ => agents[k].1.accept(i).await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandons_and_presence_changes() {
    let server = start();
    let mut ana = server.client("ana").await;
    let mut ana_pushes = ana.pushes().unwrap();
    ana.request(ClientMsg::SetPresence {
        id: ana.id(),
        presence: PresenceArg::Away,
        reason: Some("lunch".into()),
        agent: None,
    })
    .await
    .unwrap();
    let web = server.client("channel").await;
    let sup = server.client("supervisor").await;
    // Nobody available: it waits; the customer gives up.
    let gone = created(inbound(&web, "erin", "anyone?").await);
    let stats: CenterStats = sup
        .request_as(ClientMsg::Stats { id: sup.id() })
        .await
        .unwrap();
    assert_eq!(stats.queues[0].depth, 1, "{stats:?}");
    assert_eq!(stats.agents.away, 1);
    web.request(ClientMsg::CustomerLeft {
        id: web.id(),
        interaction: gone,
    })
    .await
    .unwrap();
    refused(
        web.request(ClientMsg::CustomerLeft {
            id: web.id(),
            interaction: gone,
        })
        .await,
        "invalid_state",
    );
    // Another waits; the supervisor makes ana available: she gets it.
    let waiting = created(inbound(&web, "fred", "hi").await);
    quiet(&mut ana_pushes, 300).await;
    sup.request(ClientMsg::SetPresence {
        id: sup.id(),
        presence: PresenceArg::Available,
        reason: None,
        agent: Some("ana".into()),
    })
    .await
    .unwrap();
    let Push::Offer(offer) = next(&mut ana_pushes).await else {
        panic!()
    };
    assert_eq!(offer.interaction, waiting);
    // The customer leaves while it is offered: the offer ends.
    web.request(ClientMsg::CustomerLeft {
        id: web.id(),
        interaction: waiting,
    })
    .await
    .unwrap();
    loop {
        if let Push::OfferEnded {
            interaction,
            reason,
        } = next(&mut ana_pushes).await
        {
            assert_eq!((interaction, reason.as_str()), (waiting, "customer_left"));
            break;
        }
    }
    let stats: CenterStats = sup
        .request_as(ClientMsg::Stats { id: sup.id() })
        .await
        .unwrap();
    let five_minutes = &stats.queues[0].windows[0];
    assert_eq!(five_minutes.abandoned, 2, "{stats:?}");
    assert_eq!(stats.agents.idle, 1, "{stats:?}");
    // Offline: nothing offered.
    ana.set_presence(PresenceArg::Offline).await.unwrap();
    created(inbound(&web, "gina", "hello").await);
    quiet(&mut ana_pushes, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_is_checked_on_every_request() {
    let server = start();
    assert!(matches!(
        server.try_client("not-a-token").await,
        Err(ClientError::Refused { code, .. }) if code == "bad_token"
    ));
    let (ana, mut ana_pushes) = server.agent("ana").await;
    let bob = server.client("bob").await;
    let web = server.client("channel").await;
    let sup = server.client("supervisor").await;
    let i = created(inbound(&web, "hal", "help").await);
    assert!(matches!(next(&mut ana_pushes).await, Push::Offer(_)));
    // bob cannot take, read or act on ana's work, nor act as ana.
    refused(bob.accept(i).await, "not_yours");
    refused(bob.conversation(i).await, "forbidden");
    refused(
        bob.request(ClientMsg::History {
            id: bob.id(),
            customer: "hal".into(),
        })
        .await,
        "forbidden",
    );
    ana.request(ClientMsg::History {
        id: ana.id(),
        customer: "hal".into(),
    })
    .await
    .unwrap();
    refused(
        bob.request(ClientMsg::SetPresence {
            id: bob.id(),
            presence: PresenceArg::Offline,
            reason: None,
            agent: Some("ana".into()),
        })
        .await,
        "forbidden",
    );
    refused(
        bob.request(ClientMsg::AgentView {
            id: bob.id(),
            agent: Some("ana".into()),
        })
        .await,
        "forbidden",
    );
    // A channel cannot administer or act as an agent; a supervisor cannot configure.
    refused(
        web.request(ClientMsg::GetConfig { id: web.id() }).await,
        "forbidden",
    );
    refused(web.accept(i).await, "forbidden");
    refused(
        sup.request(ClientMsg::SetDefaultQueue {
            id: sup.id(),
            queue: None,
        })
        .await,
        "forbidden",
    );
    // Unknown ids.
    refused(
        ana.accept(omniroute_actors::engine::InteractionId(987_654))
            .await,
        "unknown_id",
    );
    // ana still has her offer and takes it.
    ana.accept(i).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_clients_carry_a_chat_from_customer_to_agent() {
    let server = start();
    let bin = env!("CARGO_BIN_EXE_omniroute");
    let conn = |token: &str| {
        vec![
            "--server".to_string(),
            server.addr.to_string(),
            "--cert".into(),
            server.cert.display().to_string(),
            "--token".into(),
            format!("{token}-token-0123456789"),
        ]
    };
    let mut agent = Command::new(bin)
        .arg("agent")
        .args(conn("ana"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = agent.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = agent.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |prefix: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no `{prefix}` line within 10 s"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    };
    wait_for("WELCOME agent ana");
    writeln!(stdin, "available").unwrap();
    wait_for("OK");
    let out = Command::new(bin)
        .arg("submit")
        .args(conn("channel"))
        .args(["--customer", "ivy", "--attr", "tier=gold", "need a hand"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("\"outcome\": \"created\""), "{said}");
    let offer = wait_for("OFFER ");
    assert!(
        offer.contains("customer=ivy") && offer.contains("tier"),
        "{offer}"
    );
    let id = offer.split_whitespace().nth(1).unwrap().to_string();
    writeln!(stdin, "accept {id}").unwrap();
    wait_for("ASSIGNED");
    writeln!(stdin, "say {id} on it").unwrap();
    writeln!(stdin, "complete {id} nonsense").unwrap();
    let refusal = wait_for("ERROR");
    assert!(refusal.contains("wrap-up code"), "{refusal}");
    writeln!(stdin, "complete {id} sold").unwrap();
    wait_for("COMPLETED");
    // The admin CLI reads the configuration back as TOML the server accepts.
    let out = Command::new(bin)
        .args(["admin", "get-config"])
        .args(conn("admin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[queues]]"));
    let out = Command::new(bin)
        .args(["stats", "--once"])
        .args(conn("supervisor"))
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.starts_with("STATS") && stats.contains("sales"),
        "{stats}"
    );
    // A wrong role is a clear error and a non-zero exit.
    let out = Command::new(bin)
        .args(["admin", "tokens"])
        .args(conn("channel"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    writeln!(stdin, "quit").unwrap();
    agent.wait().unwrap();
}

#[test]
fn a_mistake_in_the_file_stops_the_start_with_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("center.toml");
    let broken = CENTER.replace("offer_timeout_ms = 1500", "offer_timeout_ms = \"soon\"");
    std::fs::write(&config, &broken).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = broken
        .lines()
        .position(|l| l.starts_with("offer_timeout_ms"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("center.toml:{line}:")),
        "expected line {line}: {err}"
    );
    assert!(err.contains("invalid type"), "{err}");
    assert!(
        !tmp.path().join("data").exists(),
        "nothing is created before the file is right"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_survive_a_restart_and_the_file_wins_when_it_is_given_again() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("center.toml");
    std::fs::write(&config, CENTER).unwrap();
    let data = tmp.path().join("data");
    let mut server = serve(&config, &data);
    let admin = server.client("admin").await;
    admin
        .request(ClientMsg::SetWrapUpCodes {
            id: admin.id(),
            queue: "sales".into(),
            codes: vec!["only-this".into()],
        })
        .await
        .unwrap();
    #[derive(serde::Deserialize)]
    struct NewToken {
        token: String,
    }
    let made: NewToken = admin
        .request_as(ClientMsg::CreateToken {
            id: admin.id(),
            name: "late".into(),
            role: omniroute_transport::proto::Role::Supervisor,
            agent: None,
            channels: Vec::new(),
        })
        .await
        .unwrap();
    admin.close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Without the file, the log's configuration (with the API change) and the
    // API-made token are back.
    let mut again = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(again.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().unwrap().unwrap();
        assert!(!line.starts_with("TOKEN"), "no new tokens: {line}");
        if let Some(a) = line.strip_prefix("LISTENING ") {
            break a.parse().unwrap();
        }
    };
    let trust = tls::load_certs(&data.join("tls").join("cert.pem")).unwrap();
    let late = Client::connect(addr, SELF_SIGNED_NAME, &trust, &made.token)
        .await
        .unwrap();
    let config_now: omniroute_actors::engine::CenterConfig = late
        .request_as(ClientMsg::GetConfig { id: late.id() })
        .await
        .unwrap();
    assert_eq!(
        config_now.queues[0].wrap_up_codes,
        vec!["only-this".to_string()]
    );
    late.close();
    again.kill().unwrap();
    again.wait().unwrap();

    // With the file again (without cid's token now), the file's configuration replaces
    // the log's, and the token the file dropped is revoked.
    let without_cid = CENTER.replace(
        "[[tokens]]\nname = \"cid\"\nrole = \"agent\"\nagent = \"cid\"\ntoken = \"cid-token-0123456789\"\n",
        "",
    );
    assert_ne!(without_cid, CENTER);
    std::fs::write(&config, without_cid).unwrap();
    let server = serve(&config, &data);
    assert!(
        server
            .output
            .iter()
            .any(|l| l.starts_with("CONFIGURED from")),
        "{:?}",
        server.output
    );
    assert!(
        server
            .output
            .iter()
            .any(|l| l == "REVOKED token `cid` (no longer in the configuration file)"),
        "{:?}",
        server.output
    );
    assert!(server.try_client("cid-token-0123456789").await.is_err());
    // The API-made token is not the file's: it stays.
    let trust = tls::load_certs(&server.cert).unwrap();
    Client::connect(server.addr, SELF_SIGNED_NAME, &trust, &made.token)
        .await
        .unwrap();
    let sup = server.client("supervisor").await;
    let config_now: omniroute_actors::engine::CenterConfig = sup
        .request_as(ClientMsg::GetConfig { id: sup.id() })
        .await
        .unwrap();
    assert_eq!(
        config_now.queues[0].wrap_up_codes,
        vec!["sold".to_string(), "lost".into()]
    );
}
