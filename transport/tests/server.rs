//! The server over real QUIC on loopback, with the actor runtime behind it: a whole
//! journey through the Rust client, authentication and authorisation failures, and bad
//! frames answered without losing the session.

use omniroute_actors::center::Clock;
use omniroute_actors::engine::journal::{Durability, Journal, JournalConfig, MemoryStore};
use omniroute_actors::engine::*;
use omniroute_actors::{InboundOutcome, Push, Runtime, RuntimeConfig};
use omniroute_transport::client::{Client, ClientError};
use omniroute_transport::proto::{
    CenterStats, ClientMsg, Entity, EntityKind, PresenceArg, Role, ServerPush, Subscription,
};
use omniroute_transport::server::{self, Grant, ServerConfig, Tokens};
use omniroute_transport::tls::{SELF_SIGNED_NAME, ServerIdentity};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn center() -> CenterConfig {
    let mut config = CenterConfig {
        channels: ChannelDef::builtin(),
        skills: vec![SkillDef {
            name: "s".into(),
            is_language: false,
        }],
        ..Default::default()
    };
    config.queues = vec![QueueDef::new("q", &[("s", 1)])];
    config.routing.default_queue = Some("q".into());
    config.agents = ["ana", "bob"]
        .iter()
        .map(|id| AgentDef {
            id: id.to_string(),
            name: id.to_string(),
            skills: vec![SkillLevel {
                skill: "s".into(),
                proficiency: 5,
            }],
            capacity: CapacityProfile::simple(10, &["chat", "sms"]),
        })
        .collect();
    config
}

struct Fixture {
    addr: SocketAddr,
    identity: ServerIdentity,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let now = 1_764_000_000_000;
    let (journal, _) = Journal::open(
        Arc::new(MemoryStore::new()),
        Some(center()),
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
    let grant = |role, agent: Option<&str>, name: &str| Grant {
        role,
        agent: agent.map(String::from),
        name: name.into(),
        channels: Vec::new(),
    };
    tokens.add("t-ana", grant(Role::Agent, Some("ana"), "ana"));
    tokens.add("t-bob", grant(Role::Agent, Some("bob"), "bob"));
    tokens.add("t-web", grant(Role::Channel, None, "web chat"));
    tokens.add("t-sup", grant(Role::Supervisor, None, "floor"));
    tokens.add("t-admin", grant(Role::Admin, None, "admin"));
    tokens.add("t-ghost", grant(Role::Agent, Some("ghost"), "ghost"));
    let mut config = ServerConfig {
        tokens,
        ..Default::default()
    };
    tune(&mut config);
    tokio::spawn(server::serve(endpoint, runtime, config));
    Fixture {
        addr,
        identity,
        _dir: dir,
    }
}

impl Fixture {
    async fn client(&self, token: &str) -> Result<Client, ClientError> {
        Client::connect(self.addr, SELF_SIGNED_NAME, &self.identity.chain, token).await
    }
}

async fn next(pushes: &mut tokio::sync::mpsc::UnboundedReceiver<Push>) -> Push {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
            .await
            .expect("a push within 5 s")
            .expect("session open");
        if !matches!(p, Push::Presence { .. }) {
            return p;
        }
    }
}

/// Asserts a refusal with `code`; its message.
fn refused(r: Result<impl std::fmt::Debug, ClientError>, code: &str) -> String {
    match r {
        Err(ClientError::Refused { code: c, message }) if c == code => message,
        other => panic!("expected `{code}`, got {other:?}"),
    }
}

#[tokio::test]
async fn a_whole_journey_over_quic() {
    let f = start().await;
    let mut ana = f.client("t-ana").await.unwrap();
    assert_eq!((ana.role, ana.agent.as_deref()), (Role::Agent, Some("ana")));
    let mut ana_pushes = ana.pushes().unwrap();
    let web = f.client("t-web").await.unwrap();
    ana.set_presence(PresenceArg::Available).await.unwrap();
    let outcome = web
        .inbound("chat", "cust-1", "hello over quic", None)
        .await
        .unwrap();
    let InboundOutcome::Created { interaction } = outcome else {
        panic!("{outcome:?}")
    };
    let Push::Offer(offer) = next(&mut ana_pushes).await else {
        panic!("offer expected")
    };
    assert_eq!(offer.interaction, interaction);
    assert_eq!(offer.customer, "cust-1");
    ana.accept(interaction).await.unwrap();
    ana.send_message(interaction, "hi, ana here").await.unwrap();
    // Bob cannot act on ana's work, nor read it.
    let bob = f.client("t-bob").await.unwrap();
    refused(
        bob.request(ClientMsg::Complete {
            id: bob.id(),
            interaction,
            wrap_up_code: None,
        })
        .await,
        "not_yours",
    );
    refused(
        bob.request(ClientMsg::Conversation {
            id: bob.id(),
            interaction,
        })
        .await,
        "forbidden",
    );
    ana.request(ClientMsg::Complete {
        id: ana.id(),
        interaction,
        wrap_up_code: None,
    })
    .await
    .unwrap();
    let conv = ana.conversation(interaction).await.unwrap();
    let lines: Vec<&str> = conv.transcript.iter().map(|e| e.text.as_str()).collect();
    assert!(
        lines.contains(&"hello over quic") && lines.contains(&"hi, ana here"),
        "{lines:?}"
    );
    // A supervisor sees the queue's statistics.
    let sup = f.client("t-sup").await.unwrap();
    let stats: omniroute_actors::queue::QueueStats = sup
        .request_as(ClientMsg::QueueStats {
            id: sup.id(),
            queue: "q".into(),
        })
        .await
        .unwrap();
    assert_eq!(stats.windows[0].answered, 1);
}

#[tokio::test]
async fn roles_tokens_and_bad_frames_get_clear_errors() {
    let f = start().await;
    refused(f.client("nope").await.map(|_| ()), "bad_token");
    let web = f.client("t-web").await.unwrap();
    // A channel cannot act as an agent, administer, or read statistics.
    for msg in [
        ClientMsg::Accept {
            id: web.id(),
            interaction: InteractionId(1),
        },
        ClientMsg::GetConfig { id: web.id() },
        ClientMsg::QueueStats {
            id: web.id(),
            queue: "q".into(),
        },
    ] {
        refused(web.request(msg).await, "forbidden");
    }
    // A supervisor cannot submit work; an agent cannot force another's presence.
    let sup = f.client("t-sup").await.unwrap();
    refused(
        sup.request(ClientMsg::Inbound {
            id: sup.id(),
            channel: "chat".into(),
            customer: "c".into(),
            text: "x".into(),
            attributes: Default::default(),
            queue: None,
            virtual_agent: None,
            interaction: None,
        })
        .await,
        "forbidden",
    );
    let ana = f.client("t-ana").await.unwrap();
    refused(
        ana.request(ClientMsg::SetPresence {
            id: ana.id(),
            presence: PresenceArg::Offline,
            reason: None,
            agent: Some("bob".into()),
        })
        .await,
        "forbidden",
    );
    // Unknown ids.
    refused(
        sup.request(ClientMsg::QueueStats {
            id: sup.id(),
            queue: "ghost".into(),
        })
        .await,
        "unknown_id",
    );
    refused(
        web.request(ClientMsg::CustomerLeft {
            id: web.id(),
            interaction: InteractionId(999),
        })
        .await,
        "unknown_id",
    );
    // Bad frames: the session answers with an error and goes on.
    web.send_raw(&[0, 0, 0, 1, 0xc1]).await.unwrap();
    let admin = f.client("t-admin").await.unwrap();
    let config: CenterConfig = admin
        .request_as(ClientMsg::GetConfig { id: admin.id() })
        .await
        .unwrap();
    assert_eq!(config.agents.len(), 2);
    refused(
        web.request(ClientMsg::Inbound {
            id: web.id(),
            channel: "fax".into(),
            customer: "c".into(),
            text: "x".into(),
            attributes: Default::default(),
            queue: None,
            virtual_agent: None,
            interaction: None,
        })
        .await,
        "bad_request",
    );
}

async fn raw_stream(f: &Fixture) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let endpoint =
        omniroute_transport::tls::client("127.0.0.1:0".parse().unwrap(), &f.identity.chain)
            .unwrap();
    let conn = endpoint
        .connect(f.addr, SELF_SIGNED_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (conn, send, recv)
}

async fn read_reply(recv: &mut quinn::RecvStream) -> omniroute_transport::proto::ServerMsg {
    let body = omniroute_transport::frame::read_frame(recv, 1 << 20)
        .await
        .unwrap()
        .expect("a reply");
    rmp_serde::from_slice(&body).unwrap()
}

#[tokio::test]
async fn a_request_before_hello_is_refused_and_the_session_can_still_say_hello() {
    use omniroute_transport::frame;
    use omniroute_transport::proto::ServerMsg;
    let f = start().await;
    let (_conn, mut send, mut recv) = raw_stream(&f).await;
    send.write_all(&frame::encode(&ClientMsg::GetConfig { id: 5 }))
        .await
        .unwrap();
    match read_reply(&mut recv).await {
        ServerMsg::Error { id, code, .. } => {
            assert_eq!((id, code.as_str()), (Some(5), "not_authenticated"))
        }
        other => panic!("{other:?}"),
    }
    send.write_all(&frame::encode(&ClientMsg::Hello {
        id: 6,
        token: "t-admin".into(),
    }))
    .await
    .unwrap();
    assert!(matches!(
        read_reply(&mut recv).await,
        ServerMsg::Welcome {
            id: 6,
            role: Role::Admin,
            ..
        }
    ));
    // A second hello is a bad request.
    send.write_all(&frame::encode(&ClientMsg::Hello {
        id: 7,
        token: "t-admin".into(),
    }))
    .await
    .unwrap();
    match read_reply(&mut recv).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, "bad_request"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn random_bytes_never_take_the_server_down() {
    let f = start().await;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    for round in 0..20 {
        let (conn, mut send, mut recv) = raw_stream(&f).await;
        let len = 1 + (round * 97) % 3000;
        let garbage: Vec<u8> = (0..len).map(|_| byte()).collect();
        let _ = send.write_all(&garbage).await;
        let _ = send.finish();
        // Whatever the server answers, it answers with frames and ends the stream.
        while let Ok(Some(_)) = tokio::time::timeout(
            Duration::from_secs(5),
            omniroute_transport::frame::read_frame(&mut recv, 1 << 20),
        )
        .await
        .expect("the server answers or closes in time")
        {}
        conn.close(0u32.into(), b"");
    }
    // Still serving.
    let admin = f.client("t-admin").await.unwrap();
    let config: CenterConfig = admin
        .request_as(ClientMsg::GetConfig { id: admin.id() })
        .await
        .unwrap();
    assert_eq!(config.queues.len(), 1);
}

#[tokio::test]
async fn every_role_and_operation_pair_is_allowed_or_forbidden_as_documented() {
    let f = start().await;
    let sessions = [
        (Role::Admin, f.client("t-admin").await.unwrap()),
        (Role::Supervisor, f.client("t-sup").await.unwrap()),
        (Role::Agent, f.client("t-ana").await.unwrap()),
        (Role::Channel, f.client("t-web").await.unwrap()),
    ];
    let i = InteractionId(1);
    let current: CenterConfig = sessions[0]
        .1
        .request_as(ClientMsg::GetConfig {
            id: sessions[0].1.id(),
        })
        .await
        .unwrap();
    let ops = |id: u64| {
        vec![
            ClientMsg::Configure {
                id,
                config: Box::new(current.clone()),
            },
            ClientMsg::Inbound {
                id,
                channel: "chat".into(),
                customer: "matrix".into(),
                text: "x".into(),
                attributes: Default::default(),
                queue: None,
                virtual_agent: None,
                interaction: None,
            },
            ClientMsg::CustomerLeft { id, interaction: i },
            ClientMsg::SetPresence {
                id,
                presence: PresenceArg::Away,
                reason: None,
                agent: None,
            },
            ClientMsg::SetPresence {
                id,
                presence: PresenceArg::Away,
                reason: None,
                agent: Some("bob".into()),
            },
            ClientMsg::Accept { id, interaction: i },
            ClientMsg::Reject { id, interaction: i },
            ClientMsg::Complete {
                id,
                interaction: i,
                wrap_up_code: None,
            },
            ClientMsg::EndWrapUp { id, interaction: i },
            ClientMsg::CheckInvariants { id },
            ClientMsg::Transfer {
                id,
                interaction: i,
                to: TransferTarget::Queue("q".into()),
            },
            ClientMsg::SendMessage {
                id,
                interaction: i,
                text: "x".into(),
                channel: None,
            },
            ClientMsg::Conversation { id, interaction: i },
            ClientMsg::History {
                id,
                customer: "matrix".into(),
            },
            ClientMsg::AgentView { id, agent: None },
            ClientMsg::AgentView {
                id,
                agent: Some("bob".into()),
            },
            ClientMsg::QueueStats {
                id,
                queue: "q".into(),
            },
            ClientMsg::GetConfig { id },
            ClientMsg::Put {
                id,
                entity: Box::new(Entity::Skill(current.skills[0].clone())),
                position: None,
            },
            ClientMsg::Delete {
                id,
                kind: EntityKind::Rule,
                name: "no-such-rule".into(),
            },
            ClientMsg::SetWrapUpCodes {
                id,
                queue: "q".into(),
                codes: vec![],
            },
            ClientMsg::SetDefaultQueue {
                id,
                queue: Some("q".into()),
            },
            ClientMsg::CreateToken {
                id,
                name: format!("matrix-{id}"),
                role: Role::Channel,
                agent: None,
                channels: Vec::new(),
            },
            ClientMsg::DeleteToken {
                id,
                name: "no-such-token".into(),
            },
            ClientMsg::ListTokens { id },
            ClientMsg::Stats { id },
            ClientMsg::SubscribeStats {
                id,
                interval_ms: Some(60_000),
            },
            ClientMsg::Unsubscribe {
                id,
                what: Subscription::Stats,
            },
            ClientMsg::SubscribeEvents { id },
            ClientMsg::SubscribeOutbound {
                id,
                channels: vec!["chat".into()],
            },
            ClientMsg::Explain {
                id,
                interaction: None,
                queue: Some("q".into()),
                channel: Some("chat".into()),
            },
        ]
    };
    // Every type a client may send (but hello) is in the matrix.
    let listed: std::collections::BTreeSet<&str> = ops(0).iter().map(|m| m.kind()).collect();
    let all: std::collections::BTreeSet<&str> = ClientMsg::TYPES
        .iter()
        .copied()
        .filter(|t| *t != "hello")
        .collect();
    assert_eq!(listed, all);
    let mut checked = 0;
    for (role, client) in &sessions {
        for msg in ops(client.id()) {
            let kind = msg.kind();
            let allowed = msg.allowed(*role);
            let result = client.request(msg).await;
            let forbidden =
                matches!(&result, Err(ClientError::Refused { code, .. }) if code == "forbidden");
            // An agent reading a conversation (or a customer's history) it has
            // nothing to do with is refused by ownership, not by role.
            let ownership = *role == Role::Agent && matches!(kind, "conversation" | "history");
            assert!(
                forbidden != allowed || ownership,
                "{role:?} × {kind}: allowed={allowed}, got {result:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * ops(0).len());
}

#[tokio::test]
async fn an_admin_reconfigures_the_center_and_a_bad_configuration_is_refused_whole() {
    let f = start().await;
    let admin = f.client("t-admin").await.unwrap();
    let mut config: CenterConfig = admin
        .request_as(ClientMsg::GetConfig { id: admin.id() })
        .await
        .unwrap();
    let mut cid = config.agents[0].clone();
    cid.id = "cid".into();
    cid.name = "Cid".into();
    config.agents.push(cid);
    let changes: Vec<ConfigChange> = admin
        .request_as(ClientMsg::Configure {
            id: admin.id(),
            config: Box::new(config.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![ConfigChange {
            kind: "agent".into(),
            id: "cid".into(),
            change: ChangeKind::Added
        }]
    );
    let sup = f.client("t-sup").await.unwrap();
    let seen: CenterConfig = sup
        .request_as(ClientMsg::GetConfig { id: sup.id() })
        .await
        .unwrap();
    assert!(seen.agents.iter().any(|a| a.id == "cid"));
    // A queue needing a skill nobody defined: refused, nothing changed.
    let mut bad = config.clone();
    bad.queues
        .push(QueueDef::new("ghost", &[("no-such-skill", 1)]));
    let refused_whole = admin
        .request(ClientMsg::Configure {
            id: admin.id(),
            config: Box::new(bad),
        })
        .await;
    match refused_whole {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, "bad_config");
            assert!(message.contains("no-such-skill"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let after: CenterConfig = sup
        .request_as(ClientMsg::GetConfig { id: sup.id() })
        .await
        .unwrap();
    assert_eq!(after, config);
}

#[tokio::test]
async fn requests_run_concurrently_and_past_the_in_flight_limit_get_busy() {
    use omniroute_transport::frame;
    use omniroute_transport::proto::ServerMsg;
    let f = start().await;
    let (_conn, mut send, mut recv) = raw_stream(&f).await;
    send.write_all(&frame::encode(&ClientMsg::Hello {
        id: 0,
        token: "t-sup".into(),
    }))
    .await
    .unwrap();
    assert!(matches!(
        read_reply(&mut recv).await,
        ServerMsg::Welcome { .. }
    ));
    // 500 requests without waiting for any reply.
    let mut burst = Vec::new();
    for id in 1..=500u64 {
        burst.extend(frame::encode(&ClientMsg::AgentView {
            id,
            agent: Some("ana".into()),
        }));
    }
    send.write_all(&burst).await.unwrap();
    let (mut ok, mut busy) = (std::collections::BTreeSet::new(), 0);
    for _ in 0..500 {
        match read_reply(&mut recv).await {
            ServerMsg::Ok { id, .. } => {
                ok.insert(id);
            }
            ServerMsg::Error { code, .. } if code == "busy" => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    // Every request was answered exactly once, each by its id.
    assert_eq!(ok.len() + busy, 500);
    assert!(!ok.is_empty());
}

#[tokio::test]
async fn an_admin_edits_one_entity_at_a_time_and_manages_tokens() {
    let f = start().await;
    let admin = f.client("t-admin").await.unwrap();
    let get = || async {
        admin
            .request_as::<CenterConfig>(ClientMsg::GetConfig { id: admin.id() })
            .await
            .unwrap()
    };
    // A new skill, a queue needing it, an agent holding it, a rule in front.
    for entity in [
        Entity::Skill(SkillDef {
            name: "vip".into(),
            is_language: false,
        }),
        Entity::Queue(QueueDef::new("vip", &[("vip", 5)])),
        Entity::Agent(AgentDef {
            id: "cid".into(),
            name: "Cid".into(),
            skills: vec![SkillLevel {
                skill: "vip".into(),
                proficiency: 9,
            }],
            capacity: CapacityProfile::simple(10, &["chat"]),
        }),
    ] {
        let changes: Vec<ConfigChange> = admin
            .request_as(ClientMsg::Put {
                id: admin.id(),
                entity: Box::new(entity),
                position: None,
            })
            .await
            .unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].change, ChangeKind::Added);
    }
    let rule = RoutingRule {
        name: "vips".into(),
        channels: vec![],
        conditions: vec![AttributeCondition::Equals {
            key: "tier".into(),
            value: "gold".into(),
        }],
        queue: "vip".into(),
        priority: Some(5),
    };
    admin
        .request(ClientMsg::Put {
            id: admin.id(),
            entity: Box::new(Entity::Rule(rule.clone())),
            position: Some(0),
        })
        .await
        .unwrap();
    let c = get().await;
    assert_eq!(c.routing.rules[0], rule);
    assert!(c.agents.iter().any(|a| a.id == "cid"));
    // Wrap-up codes of a queue.
    admin
        .request(ClientMsg::SetWrapUpCodes {
            id: admin.id(),
            queue: "vip".into(),
            codes: vec!["sold".into(), "lost".into()],
        })
        .await
        .unwrap();
    let c = get().await;
    let vip = c.queues.iter().find(|q| q.id == "vip").unwrap();
    assert_eq!(vip.wrap_up_codes, vec!["sold".to_string(), "lost".into()]);
    // The skill is in use: refused, nothing changed.
    refused(
        admin
            .request(ClientMsg::Delete {
                id: admin.id(),
                kind: EntityKind::Skill,
                name: "vip".into(),
            })
            .await,
        "bad_config",
    );
    refused(
        admin
            .request(ClientMsg::Delete {
                id: admin.id(),
                kind: EntityKind::Agent,
                name: "nobody".into(),
            })
            .await,
        "unknown_id",
    );
    refused(
        admin
            .request(ClientMsg::SetWrapUpCodes {
                id: admin.id(),
                queue: "nowhere".into(),
                codes: vec![],
            })
            .await,
        "unknown_id",
    );
    assert_eq!(get().await, c);
    // Deleting in dependency order works.
    for (kind, name) in [
        (EntityKind::Rule, "vips"),
        (EntityKind::Agent, "cid"),
        (EntityKind::Queue, "vip"),
        (EntityKind::Skill, "vip"),
    ] {
        admin
            .request(ClientMsg::Delete {
                id: admin.id(),
                kind,
                name: name.into(),
            })
            .await
            .unwrap();
    }
    let c = get().await;
    assert!(c.skills.iter().all(|s| s.name != "vip"));
    assert!(c.queues.iter().all(|q| q.id != "vip"));

    // Tokens: create one for an agent, use it, revoke it.
    #[derive(serde::Deserialize)]
    struct NewToken {
        token: String,
    }
    let made: NewToken = admin
        .request_as(ClientMsg::CreateToken {
            id: admin.id(),
            name: "bob-desk".into(),
            role: Role::Agent,
            agent: Some("bob".into()),
            channels: Vec::new(),
        })
        .await
        .unwrap();
    refused(
        admin
            .request(ClientMsg::CreateToken {
                id: admin.id(),
                name: "bob-desk".into(),
                role: Role::Agent,
                agent: Some("bob".into()),
                channels: Vec::new(),
            })
            .await,
        "bad_request",
    );
    refused(
        admin
            .request(ClientMsg::CreateToken {
                id: admin.id(),
                name: "ghost".into(),
                role: Role::Agent,
                agent: Some("ghost".into()),
                channels: Vec::new(),
            })
            .await,
        "unknown_id",
    );
    // A name the tokens file could not hold (a line break) is refused.
    refused(
        admin
            .request(ClientMsg::CreateToken {
                id: admin.id(),
                name: "bob\rdesk".into(),
                role: Role::Agent,
                agent: Some("bob".into()),
                channels: Vec::new(),
            })
            .await,
        "bad_field",
    );
    let bob = f.client(&made.token).await.unwrap();
    assert_eq!(bob.agent.as_deref(), Some("bob"));
    let listed: Vec<TokenInfo> = admin
        .request_as(ClientMsg::ListTokens { id: admin.id() })
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t.name == "bob-desk" && t.agent.as_deref() == Some("bob"))
    );
    admin
        .request(ClientMsg::DeleteToken {
            id: admin.id(),
            name: "bob-desk".into(),
        })
        .await
        .unwrap();
    // Its session is ended by the server at once.
    let after = bob
        .request(ClientMsg::AgentView {
            id: bob.id(),
            agent: None,
        })
        .await;
    assert!(
        matches!(&after, Err(ClientError::Connection(_)))
            || matches!(&after, Err(ClientError::Refused { code, .. }) if code == "bad_token"),
        "{after:?}"
    );
    assert!(f.client(&made.token).await.is_err());
}

#[derive(serde::Deserialize, Debug)]
struct TokenInfo {
    name: String,
    agent: Option<String>,
}

#[tokio::test]
async fn a_supervisor_watches_live_statistics_events_and_explanations() {
    let f = start().await;
    let mut sup = f.client("t-sup").await.unwrap();
    let mut pushed = sup.server_pushes().unwrap();
    sup.request(ClientMsg::SubscribeEvents { id: sup.id() })
        .await
        .unwrap();
    sup.request(ClientMsg::SubscribeStats {
        id: sup.id(),
        interval_ms: Some(100),
    })
    .await
    .unwrap();
    refused(
        sup.request(ClientMsg::SubscribeStats {
            id: sup.id(),
            interval_ms: Some(5),
        })
        .await,
        "bad_field",
    );
    let ana = f.client("t-ana").await.unwrap();
    ana.set_presence(PresenceArg::Available).await.unwrap();
    let web = f.client("t-web").await.unwrap();
    let outcome = web.inbound("chat", "carol", "hello", None).await.unwrap();
    let InboundOutcome::Created { interaction } = outcome else {
        panic!("{outcome:?}")
    };
    // The events of that submit arrive, and statistics showing ana busy.
    let mut saw_created = false;
    let mut busy_stats: Option<CenterStats> = None;
    while !(saw_created && busy_stats.is_some()) {
        let p = tokio::time::timeout(Duration::from_secs(5), pushed.recv())
            .await
            .expect("pushes within 5 s")
            .unwrap();
        match p {
            ServerPush::Event { events, .. } => {
                saw_created |= events.iter().any(
                    |e| matches!(e, Event::Created { interaction: i, .. } if *i == interaction),
                );
            }
            ServerPush::Stats(s) if s.agents.busy == 1 => busy_stats = Some(s),
            ServerPush::Stats(_) => {}
            ServerPush::EventsLagged { missed } => panic!("lagged by {missed}"),
            other => panic!("a supervisor gets no {other:?}"),
        }
    }
    let stats = busy_stats.unwrap();
    assert_eq!(stats.agents.offline, 1, "{stats:?}");
    assert_eq!(stats.queues.len(), 1);
    assert!(stats.occupancy_percent > 0.0, "{stats:?}");
    // Explain the offered interaction; unknown ones are refused.
    let explained: Explanation = sup
        .request_as(ClientMsg::Explain {
            id: sup.id(),
            interaction: Some(interaction),
            queue: None,
            channel: None,
        })
        .await
        .unwrap();
    assert_eq!(explained.candidates.len(), 2);
    refused(
        sup.request(ClientMsg::Explain {
            id: sup.id(),
            interaction: Some(InteractionId(999_999)),
            queue: None,
            channel: None,
        })
        .await,
        "unknown_id",
    );
    refused(
        sup.request(ClientMsg::Explain {
            id: sup.id(),
            interaction: None,
            queue: Some("q".into()),
            channel: None,
        })
        .await,
        "bad_field",
    );
    // Unsubscribed: no more stats.
    sup.request(ClientMsg::Unsubscribe {
        id: sup.id(),
        what: Subscription::Stats,
    })
    .await
    .unwrap();
    refused(
        sup.request(ClientMsg::Unsubscribe {
            id: sup.id(),
            what: Subscription::Stats,
        })
        .await,
        "bad_request",
    );
}

#[tokio::test]
async fn an_agent_hello_that_fails_leaves_the_session_unauthenticated_and_counts_nothing() {
    use omniroute_transport::frame;
    use omniroute_transport::proto::ServerMsg;
    let f = start().await;
    // More failed hellos than the token's session limit (64): none is counted.
    for _ in 0..70 {
        refused(f.client("t-ghost").await.map(|_| ()), "unknown_id");
    }
    // On one session: the failed hello leaves it free to say hello as someone else.
    let (_conn, mut send, mut recv) = raw_stream(&f).await;
    for (id, token) in [(1, "t-ghost"), (2, "t-ana")] {
        send.write_all(&frame::encode(&ClientMsg::Hello {
            id,
            token: token.into(),
        }))
        .await
        .unwrap();
    }
    assert!(matches!(
        read_reply(&mut recv).await,
        ServerMsg::Error { id: Some(1), code, .. } if code == "unknown_id"
    ));
    assert!(matches!(
        read_reply(&mut recv).await,
        ServerMsg::Welcome { id: 2, .. }
    ));
}

#[tokio::test]
async fn past_the_connection_and_session_limits_a_clear_refusal() {
    let f = start_with(|c| {
        c.max_connections = 2;
        c.sessions_per_token = 1;
    })
    .await;
    let _first = f.client("t-sup").await.unwrap();
    // A second session of the same token: busy.
    match f.client("t-sup").await {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, "busy");
            assert!(message.contains("sessions"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The refused one's connection is gone; a second connection is fine, a third is
    // closed with the documented code.
    // (The server counts a connection until it has noticed it closed.)
    let mut second = None;
    for _ in 0..100 {
        if let Ok(c) = f.client("t-admin").await {
            second = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = second.expect("a second connection within 5 s");
    match f.client("t-web").await {
        Err(ClientError::Connection(message)) => {
            assert!(message.contains("busy"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn an_agent_transfers_to_a_queue_and_the_next_agent_gets_it_with_its_history() {
    let f = start().await;
    let mut ana = f.client("t-ana").await.unwrap();
    let mut ana_pushes = ana.pushes().unwrap();
    ana.set_presence(PresenceArg::Available).await.unwrap();
    let web = f.client("t-web").await.unwrap();
    let InboundOutcome::Created { interaction } = web
        .inbound("chat", "queue-hop", "hello", None)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(matches!(next(&mut ana_pushes).await, Push::Offer(_)));
    ana.accept(interaction).await.unwrap();
    // ana steps away (keeping her work); bob comes; ana hands the chat to the queue.
    ana.request(ClientMsg::SetPresence {
        id: ana.id(),
        presence: PresenceArg::Away,
        reason: Some("meeting".into()),
        agent: None,
    })
    .await
    .unwrap();
    let mut bob = f.client("t-bob").await.unwrap();
    let mut bob_pushes = bob.pushes().unwrap();
    bob.set_presence(PresenceArg::Available).await.unwrap();
    ana.request(ClientMsg::Transfer {
        id: ana.id(),
        interaction,
        to: TransferTarget::Queue("q".into()),
    })
    .await
    .unwrap();
    let Push::Offer(offer) = next(&mut bob_pushes).await else {
        panic!("bob gets the offer")
    };
    assert_eq!(
        (offer.interaction, offer.queue.as_str()),
        (interaction, "q")
    );
    assert!(offer.transcript.iter().any(|e| e.text == "hello"));
    bob.accept(interaction).await.unwrap();
}

#[tokio::test]
async fn bad_token_names_agents_and_channels_are_refused_and_change_nothing() {
    let f = start().await;
    let admin = f.client("t-admin").await.unwrap();
    let count = || async {
        admin
            .request_as::<Vec<TokenInfo>>(ClientMsg::ListTokens { id: admin.id() })
            .await
            .unwrap()
            .len()
    };
    let before = count().await;
    for (name, role, agent) in [
        ("tab\tname", Role::Channel, None),
        ("dash", Role::Agent, Some("-")),
        ("no-agent", Role::Agent, None),
        ("stray-agent", Role::Supervisor, Some("ana")),
    ] {
        refused(
            admin
                .request(ClientMsg::CreateToken {
                    id: admin.id(),
                    name: name.into(),
                    role,
                    agent: agent.map(String::from),
                    channels: Vec::new(),
                })
                .await,
            "bad_field",
        );
    }
    assert_eq!(count().await, before, "no token was made");
    let web = f.client("t-web").await.unwrap();
    let message = refused(
        web.request(ClientMsg::SubscribeOutbound {
            id: web.id(),
            channels: vec!["chat".into(), "fax".into()],
        })
        .await,
        "unknown_id",
    );
    assert!(message.contains("fax"), "{message}");
    // Nothing was subscribed: there is nothing to unsubscribe.
    refused(
        web.request(ClientMsg::Unsubscribe {
            id: web.id(),
            what: Subscription::Outbound,
        })
        .await,
        "bad_request",
    );
}

#[tokio::test]
async fn a_channel_token_scoped_to_channels_acts_on_those_only() {
    let f = start().await;
    let admin = f.client("t-admin").await.unwrap();
    #[derive(serde::Deserialize)]
    struct NewToken {
        token: String,
    }
    let create = |name: &str, role: Role, channels: &[&str]| ClientMsg::CreateToken {
        id: admin.id(),
        name: name.into(),
        role,
        agent: None,
        channels: channels.iter().map(|c| c.to_string()).collect(),
    };
    // Only channel tokens are scoped, and only to channels the center has.
    let m = refused(
        admin
            .request(create("sup-sms", Role::Supervisor, &["sms"]))
            .await,
        "bad_field",
    );
    assert!(m.contains("only channel tokens"), "{m}");
    let m = refused(
        admin
            .request(create("pigeon", Role::Channel, &["pigeon"]))
            .await,
        "unknown_id",
    );
    assert!(m.contains("pigeon"), "{m}");
    // A channel name the tokens file could not hold is refused, and nothing is made.
    let m = refused(
        admin
            .request(create("two-in-one", Role::Channel, &["sms,chat"]))
            .await,
        "bad_field",
    );
    assert!(m.contains("no commas"), "{m}");
    let made: NewToken = admin
        .request_as(create("sms-gateway", Role::Channel, &["sms"]))
        .await
        .unwrap();
    #[derive(serde::Deserialize, Debug)]
    struct Listed {
        name: String,
        channels: Vec<String>,
    }
    let listed: Vec<Listed> = admin
        .request_as(ClientMsg::ListTokens { id: admin.id() })
        .await
        .unwrap();
    assert!(listed.iter().all(|t| t.name != "two-in-one"));
    let sms_entry = listed.iter().find(|t| t.name == "sms-gateway").unwrap();
    assert_eq!(sms_entry.channels, vec!["sms".to_string()]);

    let sms = f.client(&made.token).await.unwrap();
    let web = f.client("t-web").await.unwrap(); // every channel
    // Its own channel: fine. Another: forbidden, and nothing is created.
    let InboundOutcome::Created { interaction: own } =
        sms.inbound("sms", "s-1", "hi", None).await.unwrap()
    else {
        panic!("created expected")
    };
    let m = refused(sms.inbound("chat", "s-2", "hi", None).await, "forbidden");
    assert!(m.contains("sms") && m.contains("chat"), "{m}");
    // Ending someone else's conversation on another channel: forbidden; its own: fine.
    let InboundOutcome::Created { interaction: chat } =
        web.inbound("chat", "w-1", "hi", None).await.unwrap()
    else {
        panic!("created expected")
    };
    refused(
        sms.request(ClientMsg::CustomerLeft {
            id: sms.id(),
            interaction: chat,
        })
        .await,
        "forbidden",
    );
    sms.request(ClientMsg::CustomerLeft {
        id: sms.id(),
        interaction: own,
    })
    .await
    .unwrap();
    // The chat is still there for its own channel to end.
    web.request(ClientMsg::CustomerLeft {
        id: web.id(),
        interaction: chat,
    })
    .await
    .unwrap();
    // Outbound: only its channels.
    refused(
        sms.request(ClientMsg::SubscribeOutbound {
            id: sms.id(),
            channels: vec!["chat".into()],
        })
        .await,
        "forbidden",
    );
    sms.request(ClientMsg::SubscribeOutbound {
        id: sms.id(),
        channels: Vec::new(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_admin_runs_the_engine_s_invariant_check() {
    let f = start().await;
    let admin = f.client("t-admin").await.unwrap();
    let mut ana = f.client("t-ana").await.unwrap();
    let _pushes = ana.pushes().unwrap();
    ana.set_presence(PresenceArg::Available).await.unwrap();
    let web = f.client("t-web").await.unwrap();
    web.inbound("chat", "inv-1", "hi", None).await.unwrap();
    let found: Vec<String> = admin
        .request_as(ClientMsg::CheckInvariants { id: admin.id() })
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    refused(
        ana.request(ClientMsg::CheckInvariants { id: ana.id() })
            .await,
        "forbidden",
    );
}
