//! Black box: `omniroute serve` on loopback, driven through the Rust client: a first
//! start prints its certificate, fingerprint and tokens; a customer's chat reaches an
//! agent, who answers and completes it; after a SIGKILL and a restart the same
//! certificate and tokens (those printed, and one made through the API) work and the
//! conversation is still there.

use omniroute_actors::{InboundOutcome, Push};
use omniroute_transport::client::Client;
use omniroute_transport::proto::{ClientMsg, PresenceArg, Role};
use omniroute_transport::tls::SELF_SIGNED_NAME;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
    tokens: HashMap<String, String>,
}

fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--durability",
            "batched:5",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("omniroute runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut tokens = HashMap::new();
    let mut fingerprint = String::new();
    loop {
        let line = lines
            .next()
            .expect("the server prints LISTENING")
            .expect("readable output");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["TOKEN", role, agent, token] => {
                let key = if *agent == "-" { role } else { agent };
                tokens.insert(key.to_string(), token.to_string());
            }
            ["FINGERPRINT", f] => fingerprint = f.to_string(),
            ["LISTENING", addr] => {
                return Server {
                    child,
                    addr: addr.parse().unwrap(),
                    fingerprint,
                    tokens,
                };
            }
            _ => {}
        }
    }
}

fn cert(dir: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(dir.join("tls").join("cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn next_offer(pushes: &mut tokio::sync::mpsc::UnboundedReceiver<Push>) -> Push {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(10), pushes.recv())
            .await
            .expect("a push within 10 s")
            .expect("session open");
        if matches!(p, Push::Offer(_)) {
            return p;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_kill_with_its_identity_tokens_and_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut server = start(&dir);
    assert_eq!(server.fingerprint.len(), 95);
    for who in ["admin", "supervisor", "channel", "ana"] {
        assert!(
            server.tokens.contains_key(who),
            "{who}: {:?}",
            server.tokens.keys()
        );
    }
    let trust = cert(&dir);
    let connect = |addr, token: String| {
        let trust = trust.clone();
        async move {
            Client::connect(addr, SELF_SIGNED_NAME, &trust, &token)
                .await
                .unwrap()
        }
    };
    let mut ana = connect(server.addr, server.tokens["ana"].clone()).await;
    let mut pushes = ana.pushes().unwrap();
    ana.set_presence(PresenceArg::Available).await.unwrap();
    let web = connect(server.addr, server.tokens["channel"].clone()).await;
    let outcome = web
        .inbound("chat", "cust-42", "my invoice is wrong", Some("billing"))
        .await
        .unwrap();
    let InboundOutcome::Created { interaction } = outcome else {
        panic!("{outcome:?}")
    };
    let Push::Offer(offer) = next_offer(&mut pushes).await else {
        unreachable!()
    };
    assert_eq!(offer.interaction, interaction);
    ana.accept(interaction).await.unwrap();
    ana.send_message(interaction, "let me fix that")
        .await
        .unwrap();
    // A token made through the API is in the tokens file the restart reads.
    #[derive(serde::Deserialize)]
    struct NewToken {
        token: String,
    }
    let admin = connect(server.addr, server.tokens["admin"].clone()).await;
    let desk: NewToken = admin
        .request_as(ClientMsg::CreateToken {
            id: admin.id(),
            name: "ana-second-desk".into(),
            role: Role::Agent,
            agent: Some("ana".into()),
            channels: Vec::new(),
        })
        .await
        .unwrap();
    admin.close();
    // Batched durability: give the flusher its few ms, then kill it hard.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ana.close();
    web.close();
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut again = start(&dir);
    assert!(again.tokens.is_empty(), "tokens are shown only once");
    assert_eq!(again.fingerprint, server.fingerprint, "same certificate");
    let ana = connect(again.addr, server.tokens["ana"].clone()).await;
    let view = ana.conversation(interaction).await.unwrap();
    let lines: Vec<&str> = view.transcript.iter().map(|e| e.text.as_str()).collect();
    assert!(
        lines.contains(&"my invoice is wrong") && lines.contains(&"let me fix that"),
        "{lines:?}"
    );
    assert_eq!(
        view.agent.as_deref(),
        Some("ana"),
        "still ana's after the restart"
    );
    let second = connect(again.addr, desk.token).await;
    assert_eq!(second.agent.as_deref(), Some("ana"), "the API's token kept");
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
