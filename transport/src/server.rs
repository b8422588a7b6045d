//! The server: QUIC connections whose bidirectional streams are sessions. A session's
//! first frame is `hello` with a token; then requests (answered in order, each reply
//! echoing its `id`) and, for an agent session, pushes from the agent's actor, all
//! framed on the same stream. See docs/PROTOCOL.md.

use crate::frame;
use crate::proto::{ClientMsg, PresenceArg, Role, ServerMsg};
use dashmap::DashMap;
use omniroute_actors::engine::journal::{Command, JournalError};
use omniroute_actors::engine::{EngineError, Presence};
use omniroute_actors::{AgentSession, Inbound, Runtime, RuntimeError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its role.
    pub role: Role,
    /// The agent an agent token is bound to.
    pub agent: Option<String>,
    /// A name for logs (never the token).
    pub name: String,
}

/// The tokens, stored hashed (SHA-256): the server never keeps a token itself.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    grants: HashMap<[u8; 32], Grant>,
}

fn hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl Tokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token.
    pub fn add(&mut self, token: &str, grant: Grant) {
        self.grants.insert(hash(token), grant);
    }

    /// Loads a tokens file: one line per token, `<sha-256 hex>\t<role>\t<agent or ->\t<name>`
    /// (`#` starts a comment). Only hashes are stored.
    pub fn load_file(path: &std::path::Path) -> std::io::Result<Tokens> {
        let text = std::fs::read_to_string(path)?;
        let mut tokens = Tokens::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {what}", path.display(), n + 1),
                )
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let [hash_hex, role, agent, name] = fields[..] else {
                return Err(bad(
                    "expected 4 tab-separated fields: hash, role, agent, name",
                ));
            };
            let bytes: Vec<u8> = (0..hash_hex.len())
                .step_by(2)
                .filter_map(|i| hash_hex.get(i..i + 2))
                .filter_map(|b| u8::from_str_radix(b, 16).ok())
                .collect();
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("the hash is not 64 hexadecimal digits"))?;
            let role = match role {
                "admin" => Role::Admin,
                "supervisor" => Role::Supervisor,
                "agent" => Role::Agent,
                "channel" => Role::Channel,
                other => {
                    return Err(bad(&format!(
                        "unknown role `{other}` (admin, supervisor, agent, channel)"
                    )));
                }
            };
            let agent = (agent != "-").then(|| agent.to_string());
            if (role == Role::Agent) != agent.is_some() {
                return Err(bad("an agent token names its agent; other roles give `-`"));
            }
            tokens.grants.insert(
                hash,
                Grant {
                    role,
                    agent,
                    name: name.to_string(),
                },
            );
        }
        Ok(tokens)
    }

    /// Creates a tokens file with a fresh random token per grant (mode 0600, hashes
    /// only); returns the tokens and the clear ones, to show once.
    pub fn create_file(
        path: &std::path::Path,
        grants: Vec<Grant>,
    ) -> std::io::Result<(Tokens, Vec<(Grant, String)>)> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut text =
            String::from("# omniroute tokens: sha-256 of the token, role, agent, name\n");
        let mut tokens = Tokens::new();
        let mut clear = Vec::new();
        for grant in grants {
            let mut raw = [0u8; 18];
            rng.fill(&mut raw)
                .map_err(|_| std::io::Error::other("no system randomness"))?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let h = hash(&token);
            let role = format!("{:?}", grant.role).to_lowercase();
            text.push_str(&format!(
                "{}\t{role}\t{}\t{}\n",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                grant.agent.as_deref().unwrap_or("-"),
                grant.name
            ));
            tokens.grants.insert(h, grant.clone());
            clear.push((grant, token));
        }
        #[cfg(unix)]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        #[cfg(not(unix))]
        std::fs::write(path, text)?;
        Ok((tokens, clear))
    }

    fn check(&self, token: &str) -> Option<(&Grant, [u8; 32])> {
        let h = hash(token);
        self.grants.get(&h).map(|g| (g, h))
    }
}

/// Limits and tokens.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest frame body accepted (default 1 MiB).
    pub max_frame: usize,
    /// Connections at once (default 10,000).
    pub max_connections: usize,
    /// Sessions at once per token (default 64).
    pub sessions_per_token: usize,
    /// Requests of one session running at once; past it `busy` (default 64).
    pub requests_in_flight: usize,
    /// The tokens.
    pub tokens: Tokens,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            sessions_per_token: 64,
            requests_in_flight: 64,
            tokens: Tokens::new(),
        }
    }
}

/// QUIC application close codes (documented in docs/PROTOCOL.md).
pub mod close {
    /// Normal close.
    pub const NORMAL: u32 = 0;
    /// Too many connections.
    pub const BUSY: u32 = 1;
}

/// QUIC stream error code for a session reset after an unrecoverable framing error.
pub const STREAM_FRAMING: u32 = 1;

struct State {
    runtime: Arc<Runtime>,
    config: ServerConfig,
    connections: AtomicUsize,
    sessions: DashMap<[u8; 32], usize>,
}

/// Serves on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, runtime: Arc<Runtime>, config: ServerConfig) {
    let state = Arc::new(State {
        runtime,
        config,
        connections: AtomicUsize::new(0),
        sessions: DashMap::new(),
    });
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed during the handshake");
                    return;
                }
            };
            let open = state.connections.fetch_add(1, Ordering::AcqRel) + 1;
            if open > state.config.max_connections {
                connection.close(
                    close::BUSY.into(),
                    format!(
                        "busy: {} connections is the limit",
                        state.config.max_connections
                    )
                    .as_bytes(),
                );
            } else {
                while let Ok((send, recv)) = connection.accept_bi().await {
                    tokio::spawn(session(state.clone(), send, recv));
                }
            }
            state.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn error(id: Option<u64>, code: &str, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error {
        id,
        code: code.to_string(),
        message: message.into(),
    }
}

fn ok<T: Serialize>(id: u64, data: &T) -> ServerMsg {
    let bytes = rmp_serde::to_vec_named(data).expect("results serialise");
    let value = rmpv::decode::read_value(&mut &bytes[..]).expect("just encoded");
    ServerMsg::Ok {
        id,
        data: Some(value),
    }
}

fn done(id: u64) -> ServerMsg {
    ServerMsg::Ok { id, data: None }
}

/// The stable code of a runtime refusal.
pub fn code_of(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Busy(_) => "busy",
        RuntimeError::BadRequest(_) => "bad_request",
        RuntimeError::UnknownAgent(_)
        | RuntimeError::UnknownQueue(_)
        | RuntimeError::UnknownVirtualAgent(_) => "unknown_id",
        RuntimeError::Timeout { .. } => "timeout",
        RuntimeError::Unavailable(_) => "unavailable",
        RuntimeError::Journal(JournalError::Engine(e)) => match e {
            EngineError::UnknownAgent(_)
            | EngineError::UnknownQueue(_)
            | EngineError::UnknownInteraction(_)
            | EngineError::UnknownChannel { .. }
            | EngineError::UnknownSkill { .. } => "unknown_id",
            EngineError::InvalidConfig { .. }
            | EngineError::Duplicate { .. }
            | EngineError::ProficiencyOutOfRange { .. }
            | EngineError::InUse { .. } => "bad_config",
            EngineError::NotOfferedToAgent { .. } | EngineError::NotAssignedToAgent { .. } => {
                "not_yours"
            }
            EngineError::InvalidState { .. } | EngineError::AgentUnavailable { .. } => {
                "invalid_state"
            }
            EngineError::QueueFull { .. } => "busy",
            _ => "rejected",
        },
        RuntimeError::Journal(_) => "internal",
    }
}

struct Session {
    state: Arc<State>,
    grant: Option<(Grant, [u8; 32])>,
    agent: Option<Arc<AgentSession>>,
    out: mpsc::Sender<Vec<u8>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// A request ready to run on its own task (requests of a session run concurrently;
/// replies carry their `id`).
struct Job {
    state: Arc<State>,
    agent: Option<Arc<AgentSession>>,
    me: Option<String>,
    msg: ClientMsg,
}

enum Prepared {
    Reply(ServerMsg),
    Run(Job),
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((_, h)) = &self.grant
            && let Some(mut n) = self.state.sessions.get_mut(h)
        {
            *n = n.saturating_sub(1);
        }
    }
}

async fn session(state: Arc<State>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let (out, mut rx) = mpsc::channel::<Vec<u8>>(1_024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    let max = state.config.max_frame;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        state.config.requests_in_flight.max(1),
    ));
    let mut s = Session {
        state,
        grant: None,
        agent: None,
        out,
        in_flight,
    };
    loop {
        let reply = match frame::read_frame(&mut recv, max).await {
            Ok(None) => break,
            Err(e) => {
                let usable = e.stream_usable();
                let _ = s
                    .out
                    .send(frame::encode(&error(
                        None,
                        e.code().as_str(),
                        e.to_string(),
                    )))
                    .await;
                if !usable {
                    let _ = recv.stop(STREAM_FRAMING.into());
                    break;
                }
                continue;
            }
            Ok(Some(body)) => match frame::decode::<ClientMsg>(&body, ClientMsg::TYPES) {
                Err(e) => {
                    let id = frame::head(&body).ok().and_then(|(_, id)| id);
                    error(id, e.code().as_str(), e.to_string())
                }
                Ok(msg) => match s.prepare(msg).await {
                    Prepared::Reply(reply) => reply,
                    Prepared::Run(job) => {
                        let id = job.msg.id();
                        match s.in_flight.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let out = s.out.clone();
                                tokio::spawn(async move {
                                    let reply = match job.run().await {
                                        Ok(reply) => reply,
                                        Err(e) => error(Some(id), code_of(&e), e.to_string()),
                                    };
                                    let _ = out.send(frame::encode(&reply)).await;
                                    drop(permit);
                                });
                                continue;
                            }
                            Err(_) => error(
                                Some(id),
                                "busy",
                                format!(
                                    "{} requests of this session are in flight (the limit); wait for replies",
                                    s.state.config.requests_in_flight
                                ),
                            ),
                        }
                    }
                },
            },
        };
        if s.out.send(frame::encode(&reply)).await.is_err() {
            break;
        }
    }
    drop(s);
    let _ = writer.await;
}

impl Session {
    async fn prepare(&mut self, msg: ClientMsg) -> Prepared {
        let id = msg.id();
        if let ClientMsg::Hello { token, .. } = &msg {
            return Prepared::Reply(self.hello(id, token).await);
        }
        let Some((grant, _)) = &self.grant else {
            return Prepared::Reply(error(
                Some(id),
                "not_authenticated",
                format!(
                    "`{}` before `hello`: send `hello` with a token first",
                    msg.kind()
                ),
            ));
        };
        let role = grant.role;
        if !msg.allowed(role) {
            return Prepared::Reply(error(
                Some(id),
                "forbidden",
                format!("a {role:?} session may not send `{}`", msg.kind()).to_lowercase(),
            ));
        }
        Prepared::Run(Job {
            state: self.state.clone(),
            agent: self.agent.clone(),
            me: grant.agent.clone(),
            msg,
        })
    }

    async fn hello(&mut self, id: u64, token: &str) -> ServerMsg {
        if self.grant.is_some() {
            return error(Some(id), "bad_request", "this session already said hello");
        }
        let Some((grant, h)) = self.state.config.tokens.check(token) else {
            return error(Some(id), "bad_token", "unknown token");
        };
        let grant = grant.clone();
        {
            let mut n = self.state.sessions.entry(h).or_insert(0);
            if *n >= self.state.config.sessions_per_token {
                return error(
                    Some(id),
                    "busy",
                    format!(
                        "this token already has {} sessions (the limit)",
                        self.state.config.sessions_per_token
                    ),
                );
            }
            *n += 1;
        }
        self.grant = Some((grant.clone(), h));
        if grant.role == Role::Agent {
            let agent = grant.agent.clone().unwrap_or_default();
            match self.state.runtime.connect_agent(&agent) {
                Ok(mut session) => {
                    if let Some(mut pushes) = session.take_pushes() {
                        let out = self.out.clone();
                        tokio::spawn(async move {
                            while let Some(push) = pushes.recv().await {
                                if out.send(frame::encode(&push)).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    self.agent = Some(Arc::new(session));
                }
                Err(e) => return error(Some(id), code_of(&e), e.to_string()),
            }
        }
        ServerMsg::Welcome {
            id,
            role: grant.role,
            agent: grant.agent,
        }
    }
}

impl Job {
    fn agent_session(&self) -> Result<&AgentSession, RuntimeError> {
        self.agent
            .as_deref()
            .ok_or_else(|| RuntimeError::BadRequest("not an agent session".into()))
    }

    async fn run(self) -> Result<ServerMsg, RuntimeError> {
        let rt = self.state.runtime.clone();
        let me = self.me.clone();
        let msg = self.msg.clone();
        Ok(match msg {
            ClientMsg::Hello { .. } => unreachable!("handled first"),
            ClientMsg::Inbound {
                id,
                channel,
                customer,
                text,
                attributes,
                queue,
                virtual_agent,
            } => {
                let outcome = rt
                    .inbound(Inbound {
                        channel,
                        customer,
                        text,
                        attributes,
                        queue,
                        virtual_agent,
                    })
                    .await?;
                ok(id, &outcome)
            }
            ClientMsg::CustomerLeft { id, interaction } => {
                rt.abandon(interaction).await?;
                done(id)
            }
            ClientMsg::SetPresence {
                id,
                presence,
                reason,
                agent,
            } => {
                let presence = match presence {
                    PresenceArg::Available => Presence::Available,
                    PresenceArg::Offline => Presence::Offline,
                    PresenceArg::Away => Presence::Away {
                        reason: reason.unwrap_or_else(|| "away".into()),
                    },
                };
                match agent {
                    Some(agent) => {
                        rt.execute(Command::SetPresence { agent, presence }).await?;
                    }
                    None => {
                        self.agent_session()?.set_presence(presence).await?;
                    }
                }
                done(id)
            }
            ClientMsg::Accept { id, interaction } => {
                self.agent_session()?.accept(interaction).await?;
                done(id)
            }
            ClientMsg::Reject { id, interaction } => {
                self.agent_session()?.reject(interaction).await?;
                done(id)
            }
            ClientMsg::Complete {
                id,
                interaction,
                wrap_up_code,
            } => {
                self.agent_session()?
                    .complete(interaction, wrap_up_code.as_deref())
                    .await?;
                done(id)
            }
            ClientMsg::Transfer {
                id,
                interaction,
                to,
            } => {
                self.agent_session()?.transfer(interaction, to).await?;
                done(id)
            }
            ClientMsg::SendMessage {
                id,
                interaction,
                text,
                channel,
            } => {
                self.agent_session()?
                    .send_message(interaction, &text, channel.as_deref())
                    .await?;
                done(id)
            }
            ClientMsg::Conversation { id, interaction } => {
                let view = rt.conversation(interaction).await?;
                // An agent reads only conversations it holds or took part in.
                if let Some(me) = &me {
                    let mine = view.agent.as_deref() == Some(me.as_str())
                        || view.participants.contains(&format!("agent:{me}"));
                    if !mine {
                        return Ok(error(
                            Some(id),
                            "forbidden",
                            format!("interaction {interaction} is not yours"),
                        ));
                    }
                }
                ok(id, &view)
            }
            ClientMsg::History { id, customer } => ok(id, &rt.customer_history(&customer)),
            ClientMsg::AgentView { id, agent } => match agent {
                Some(agent) => ok(id, &rt.agent_view(&agent).await?),
                None => ok(id, &self.agent_session()?.view().await?),
            },
            ClientMsg::QueueStats { id, queue } => ok(id, &rt.queue_stats(&queue).await?),
            ClientMsg::GetConfig { id } => ok(id, &rt.read(|e| e.config())),
            ClientMsg::Configure { id, config } => {
                let ack = match rt.execute(Command::Configure { config: *config }).await {
                    Ok(ack) => ack,
                    // Whatever the engine refuses in a configuration is the configuration's fault.
                    Err(e @ RuntimeError::Journal(JournalError::Engine(_))) => {
                        return Ok(error(Some(id), "bad_config", e.to_string()));
                    }
                    Err(e) => return Err(e),
                };
                // What changed, as the `configured` event lists it.
                let changes: Vec<_> = ack
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        omniroute_actors::engine::Event::Configured { changes } => {
                            Some(changes.clone())
                        }
                        _ => None,
                    })
                    .flatten()
                    .collect();
                ok(id, &changes)
            }
        })
    }
}
