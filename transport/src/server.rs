//! The server: QUIC connections whose bidirectional streams are sessions. A session's
//! first frame is `hello` with a token; then requests, which run concurrently (up to a
//! limit) and are answered with their `id`, and pushes (an agent's offers and messages,
//! a supervisor's subscriptions), all framed on the same stream. See docs/PROTOCOL.md.

use crate::frame;
use crate::proto::{
    AgentCounts, CenterStats, ClientMsg, Entity, EntityKind, PresenceArg, Role, ServerMsg,
    ServerPush, Subscription,
};
use dashmap::DashMap;
use omniroute_actors::bus::Delivery;
use omniroute_actors::engine::journal::{Command, JournalError};
use omniroute_actors::engine::{CenterConfig, EngineError, Presence};
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
    /// A channel token's channels (empty: every channel): it submits, ends and
    /// subscribes to conversations on these only.
    pub channels: Vec<String>,
}

/// The rules every token obeys, wherever it comes from (the configuration file's
/// `[[tokens]]`, `create_token`, the tokens file): `Err((field, why))` names the first
/// broken. (Whether its agent and channels exist is the caller's to check.)
pub fn token_shape(
    role: Role,
    agent: Option<&str>,
    name: &str,
    channels: &[String],
) -> Result<(), (&'static str, &'static str)> {
    if name.is_empty() || name.contains(['\t', '\n', '\r']) {
        return Err(("name", "a token needs a name, without tabs or line breaks"));
    }
    match (role, agent) {
        (Role::Agent, None) => return Err(("agent", "an agent token names its agent")),
        (Role::Agent, Some(a)) if a == "-" || a.contains(['\t', '\n', '\r']) => {
            return Err((
                "agent",
                "an agent id usable in a token has no tabs or line breaks and is not `-`",
            ));
        }
        (Role::Agent, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(("agent", "only agent tokens name an agent")),
    }
    if role != Role::Channel && !channels.is_empty() {
        return Err(("channels", "only channel tokens are scoped to channels"));
    }
    if channels
        .iter()
        .any(|c| c.is_empty() || c.contains([',', '\t', '\n', '\r']))
    {
        return Err((
            "channels",
            "a channel name in a token has no commas, tabs or line breaks",
        ));
    }
    Ok(())
}

impl Grant {
    /// Whether this grant covers `channel` (a channel token scoped to others does not).
    pub fn covers(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }
}

/// A token's channels as stored (`-`: every channel).
fn channels_field(channels: &[String]) -> String {
    if channels.is_empty() {
        "-".to_string()
    } else {
        channels.join(",")
    }
}

/// The tokens, stored hashed (SHA-256): the server never keeps a token itself.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    grants: HashMap<[u8; 32], Grant>,
    /// Names of the tokens that came from the configuration file (a start with the
    /// file removes those it no longer lists).
    from_file: std::collections::HashSet<String>,
}

/// The SHA-256 of a token (what the server stores).
pub fn hash(token: &str) -> [u8; 32] {
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
    /// then optionally `\t<source: file or api>` and `\t<channels, comma-separated, or ->`
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
            let (hash_hex, role, agent, name, source, channels) = match fields[..] {
                [h, r, a, n] => (h, r, a, n, "api", "-"),
                [h, r, a, n, s] => (h, r, a, n, s, "-"),
                [h, r, a, n, s, c] => (h, r, a, n, s, c),
                _ => {
                    return Err(bad(
                        "expected 4 to 6 tab-separated fields: hash, role, agent, name[, source[, channels]]",
                    ));
                }
            };
            let channels: Vec<String> = if channels == "-" {
                Vec::new()
            } else {
                channels.split(',').map(str::to_string).collect()
            };
            let hash = crate::config::parse_hash(hash_hex)
                .ok_or_else(|| bad("the hash is not 64 hexadecimal digits"))?;
            if source == "file" {
                tokens.from_file.insert(name.to_string());
            } else if source != "api" {
                return Err(bad("the source is `file` or `api`"));
            }
            let role: Role = role.parse().map_err(|e: String| bad(&e))?;
            let agent = (agent != "-").then(|| agent.to_string());
            // Names as earlier versions wrote them load (one with a carriage return
            // could be created then); the rest is checked as everywhere.
            if name.is_empty() {
                return Err(bad("a token needs a name"));
            }
            token_shape(role, agent.as_deref(), "-", &channels).map_err(|(field, why)| {
                bad(&format!("{field}: {why} (the file gives `-` for none)"))
            })?;
            tokens.grants.insert(
                hash,
                Grant {
                    role,
                    agent,
                    name: name.to_string(),
                    channels,
                },
            );
        }
        Ok(tokens)
    }

    fn check(&self, token: &str) -> Option<(&Grant, [u8; 32])> {
        let h = hash(token);
        self.grants.get(&h).map(|g| (g, h))
    }

    /// Whether a token (by hash) is still valid.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.grants.contains_key(hash)
    }

    /// Adds or replaces (by name) a token given by its hash.
    pub fn put_hashed(&mut self, hash: [u8; 32], grant: Grant) {
        self.grants.retain(|_, g| g.name != grant.name);
        self.from_file.remove(&grant.name);
        self.grants.insert(hash, grant);
    }

    /// Adds or replaces (by name) a token of the configuration file.
    pub fn put_from_file(&mut self, hash: [u8; 32], grant: Grant) {
        let name = grant.name.clone();
        self.put_hashed(hash, grant);
        self.from_file.insert(name);
    }

    /// Removes the configuration file's tokens whose names are not in `listed` (the
    /// file no longer lists them); returns their names.
    pub fn drop_file_tokens_except(&mut self, listed: &[&str]) -> Vec<String> {
        let gone: Vec<String> = self
            .from_file
            .iter()
            .filter(|n| !listed.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            self.remove(name);
        }
        gone
    }

    /// Removes the token named `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.grants.len();
        self.grants.retain(|_, g| g.name != name);
        self.from_file.remove(name);
        before != self.grants.len()
    }

    /// The hashes of the tokens named `name`.
    pub fn hashes_named(&self, name: &str) -> Vec<[u8; 32]> {
        self.grants
            .iter()
            .filter(|(_, g)| g.name == name)
            .map(|(h, _)| *h)
            .collect()
    }

    /// Whether a token has this name.
    pub fn has_name(&self, name: &str) -> bool {
        self.grants.values().any(|g| g.name == name)
    }

    /// The grants, by name.
    pub fn list(&self) -> Vec<Grant> {
        let mut v: Vec<Grant> = self.grants.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Writes the tokens file (hashes only, mode 0600) atomically: a temporary file,
    /// synced, renamed over the old one, and the directory synced.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut text = String::from(
            "# omniroute tokens: sha-256 of the token, role, agent, name, source (file or api), channels\n",
        );
        let mut entries: Vec<(&[u8; 32], &Grant)> = self.grants.iter().collect();
        entries.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        for (h, g) in entries {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                g.role.as_str(),
                g.agent.as_deref().unwrap_or("-"),
                g.name,
                if self.from_file.contains(&g.name) {
                    "file"
                } else {
                    "api"
                },
                channels_field(&g.channels)
            ));
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// A fresh random token (36 hexadecimal digits, 144 bits).
pub fn random_token() -> std::io::Result<String> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
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
    /// Where tokens created or deleted through the API are saved (none: in memory
    /// only).
    pub tokens_file: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            sessions_per_token: 64,
            requests_in_flight: 64,
            tokens: Tokens::new(),
            tokens_file: None,
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
    /// The tokens (changed by `create_token` / `delete_token`, see
    /// `Job::edit_tokens`).
    tokens: std::sync::RwLock<Tokens>,
    /// Token edits run one at a time (each saves the whole tokens file).
    token_edits: Arc<tokio::sync::Mutex<()>>,
    /// Configuration changes run one at a time (each reads, changes and writes the
    /// whole configuration).
    admin: tokio::sync::Mutex<()>,
    /// Hashes of revoked tokens, so their sessions end at once.
    revoked: tokio::sync::broadcast::Sender<[u8; 32]>,
}

/// Serves on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, runtime: Arc<Runtime>, config: ServerConfig) {
    let state = Arc::new(State {
        runtime,
        tokens: std::sync::RwLock::new(config.tokens.clone()),
        token_edits: Arc::new(tokio::sync::Mutex::new(())),
        config,
        connections: AtomicUsize::new(0),
        sessions: DashMap::new(),
        admin: tokio::sync::Mutex::new(()),
        revoked: tokio::sync::broadcast::channel(64).0,
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
            EngineError::NoRoute { .. } => "no_route",
            EngineError::MessageTooLong { .. } => "bad_request",
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
    /// A supervisor's subscriptions: the tasks pushing them.
    subs: HashMap<Subscription, tokio::task::JoinHandle<()>>,
    /// An agent session's push forwarder.
    forwarder: Option<tokio::task::JoinHandle<()>>,
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
    /// Reply, then end the session.
    Close(ServerMsg),
    Run(Job),
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, task) in self.subs.drain() {
            task.abort();
        }
        if let Some(task) = self.forwarder.take() {
            task.abort();
        }
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
        // Frames ready together go out in one write (fewer, fuller QUIC packets: on
        // loopback the UDP send is most of the cost of a small frame).
        let mut batch = Vec::with_capacity(16 * 1024);
        while let Some(frame) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while batch.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if send.write_all(&batch).await.is_err() {
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
        subs: HashMap::new(),
        forwarder: None,
    };
    let mut revoked = s.state.revoked.subscribe();
    // The stream is read on its own task: reading a frame is not cancel-safe, and the
    // session also waits for revocations.
    let (frames_tx, mut frames) = mpsc::channel(1);
    let reader = tokio::spawn(async move {
        loop {
            let read = frame::read_frame(&mut recv, max).await;
            let end = match &read {
                Ok(None) => true,
                Ok(Some(_)) => false,
                Err(e) if !e.stream_usable() => {
                    let _ = recv.stop(STREAM_FRAMING.into());
                    true
                }
                Err(_) => false,
            };
            if frames_tx.send(read).await.is_err() || end {
                return;
            }
        }
    });
    loop {
        let read = tokio::select! {
            read = frames.recv() => match read {
                Some(read) => read,
                None => break,
            },
            gone = revoked.recv() => {
                let mine = s.grant.as_ref().map(|(_, h)| *h);
                match gone {
                    Ok(h) if Some(h) != mine => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed some: check ours directly.
                        let still = mine.is_none_or(|h| {
                            s.state.tokens.read().expect("tokens lock").contains(&h)
                        });
                        if still {
                            continue;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => continue,
                    Ok(_) => {}
                }
                let _ = s
                    .out
                    .send(frame::encode(&error(
                        None,
                        "bad_token",
                        "this session's token was revoked; the session ends",
                    )))
                    .await;
                break;
            }
        };
        let reply = match read {
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
                    Prepared::Close(reply) => {
                        let _ = s.out.send(frame::encode(&reply)).await;
                        break;
                    }
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
    reader.abort();
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
        let h = self.grant.as_ref().map(|(_, h)| *h).expect("checked above");
        if !self.state.tokens.read().expect("tokens lock").contains(&h) {
            return Prepared::Close(error(
                Some(id),
                "bad_token",
                "this session's token was revoked; the session ends",
            ));
        }
        if !msg.allowed(role) {
            let names_agent = match &msg {
                ClientMsg::SetPresence { agent, .. } | ClientMsg::AgentView { agent, .. } => {
                    Some(agent.is_some())
                }
                _ => None,
            };
            let why = match (role, names_agent) {
                (Role::Agent, Some(true)) => format!(
                    "an agent acts only as itself: send `{}` without `agent`",
                    msg.kind()
                ),
                (Role::Supervisor, Some(false)) => format!(
                    "a supervisor names the agent: send `{}` with `agent`",
                    msg.kind()
                ),
                _ => format!("the {} role may not send `{}`", role.as_str(), msg.kind()),
            };
            return Prepared::Reply(error(Some(id), "forbidden", why));
        }
        // A channel token scoped to some channels acts on those only.
        let scope = &grant.channels;
        if !scope.is_empty() {
            let outside = match &msg {
                ClientMsg::Inbound { channel, .. } => {
                    (!grant.covers(channel)).then(|| channel.clone())
                }
                ClientMsg::CustomerLeft { interaction, .. } => self
                    .state
                    .runtime
                    .read(|e| e.interaction_owner(*interaction).ok().map(|(_, c)| c))
                    .filter(|c| !grant.covers(c)),
                ClientMsg::SubscribeOutbound { channels, .. } => {
                    channels.iter().find(|c| !grant.covers(c)).cloned()
                }
                _ => None,
            };
            if let Some(channel) = outside {
                return Prepared::Reply(error(
                    Some(id),
                    "forbidden",
                    format!(
                        "this token serves {} only, not `{channel}`",
                        scope.join(", ")
                    ),
                ));
            }
        }
        // Subscriptions belong to the session, so they are handled here.
        match &msg {
            ClientMsg::SubscribeStats { interval_ms, .. } => {
                let interval = interval_ms.unwrap_or(1_000);
                if interval < 100 {
                    return Prepared::Reply(error(
                        Some(id),
                        "bad_field",
                        format!("interval_ms is {interval}; 100 is the least"),
                    ));
                }
                let (state, out) = (self.state.clone(), self.out.clone());
                let task = tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(std::time::Duration::from_millis(interval));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let stats = center_stats(&state.runtime).await;
                        if out
                            .send(frame::encode(&ServerPush::Stats(stats)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                if let Some(old) = self.subs.insert(Subscription::Stats, task) {
                    old.abort();
                }
                return Prepared::Reply(done(id));
            }
            ClientMsg::SubscribeEvents { .. } => {
                let mut sub = self.state.runtime.subscribe();
                let out = self.out.clone();
                let task = tokio::spawn(async move {
                    loop {
                        let push = match sub.next().await {
                            Delivery::Record(r) => ServerPush::Event {
                                seq: r.seq,
                                at_ms: r.at_ms,
                                command: r.command.to_string(),
                                events: r.events.clone(),
                            },
                            Delivery::Lagged { missed } => ServerPush::EventsLagged { missed },
                            Delivery::Closed => return,
                        };
                        if out.send(frame::encode(&push)).await.is_err() {
                            return;
                        }
                    }
                });
                if let Some(old) = self.subs.insert(Subscription::Events, task) {
                    old.abort();
                }
                return Prepared::Reply(done(id));
            }
            ClientMsg::SubscribeOutbound { channels, .. } => {
                let unknown: Vec<&String> = channels
                    .iter()
                    .filter(|c| !self.state.runtime.read(|e| e.has_channel(c)))
                    .collect();
                if !unknown.is_empty() {
                    return Prepared::Reply(error(
                        Some(id),
                        "unknown_id",
                        format!("unknown channel(s) {unknown:?}"),
                    ));
                }
                let mut sub = self.state.runtime.subscribe();
                let (runtime, out) = (self.state.runtime.clone(), self.out.clone());
                // None named: every channel the token serves.
                let channels = if channels.is_empty() {
                    scope.clone()
                } else {
                    channels.clone()
                };
                let wanted = move |c: &str| channels.is_empty() || channels.iter().any(|x| x == c);
                let task = tokio::spawn(async move {
                    use omniroute_actors::engine::{Event, Sender};
                    loop {
                        let record = match sub.next().await {
                            Delivery::Record(r) => r,
                            Delivery::Lagged { missed } => {
                                let push = ServerPush::EventsLagged { missed };
                                if out.send(frame::encode(&push)).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            Delivery::Closed => return,
                        };
                        for event in &record.events {
                            let push = match event {
                                Event::MessagePosted {
                                    interaction,
                                    message,
                                } if message.from == Sender::Agent && wanted(&message.channel) => {
                                    let customer = runtime
                                        .read(|e| e.interaction_owner(*interaction).map(|(c, _)| c))
                                        .unwrap_or_default();
                                    ServerPush::Outbound {
                                        interaction: *interaction,
                                        customer,
                                        channel: message.channel.clone(),
                                        from: message.from,
                                        from_id: message.from_id.clone(),
                                        text: message.text.clone(),
                                        at_ms: record.at_ms,
                                    }
                                }
                                Event::Completed { interaction, .. }
                                | Event::Abandoned { interaction, .. } => {
                                    let Ok((customer, channel)) =
                                        runtime.read(|e| e.interaction_owner(*interaction))
                                    else {
                                        continue;
                                    };
                                    if !wanted(&channel) {
                                        continue;
                                    }
                                    ServerPush::ConversationEnded {
                                        interaction: *interaction,
                                        customer,
                                        channel,
                                        reason: if matches!(event, Event::Completed { .. }) {
                                            "completed".into()
                                        } else {
                                            "abandoned".into()
                                        },
                                    }
                                }
                                _ => continue,
                            };
                            if out.send(frame::encode(&push)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                if let Some(old) = self.subs.insert(Subscription::Outbound, task) {
                    old.abort();
                }
                return Prepared::Reply(done(id));
            }
            ClientMsg::Unsubscribe { what, .. } => {
                return Prepared::Reply(match self.subs.remove(what) {
                    Some(task) => {
                        task.abort();
                        done(id)
                    }
                    None => error(
                        Some(id),
                        "bad_request",
                        format!("this session has no {what:?} subscription").to_lowercase(),
                    ),
                });
            }
            _ => {}
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
        let found = {
            let tokens = self.state.tokens.read().expect("tokens lock");
            tokens.check(token).map(|(g, h)| (g.clone(), h))
        };
        let Some((grant, h)) = found else {
            return error(Some(id), "bad_token", "unknown token");
        };
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
        if grant.role == Role::Agent {
            let agent = grant.agent.clone().unwrap_or_default();
            match self.state.runtime.connect_agent(&agent) {
                Ok(mut session) => {
                    if let Some(mut pushes) = session.take_pushes() {
                        let out = self.out.clone();
                        self.forwarder = Some(tokio::spawn(async move {
                            while let Some(push) = pushes.recv().await {
                                if out.send(frame::encode(&push)).await.is_err() {
                                    return;
                                }
                            }
                        }));
                    }
                    self.agent = Some(Arc::new(session));
                }
                Err(e) => {
                    // Not authenticated after all: the session may say hello again.
                    if let Some(mut n) = self.state.sessions.get_mut(&h) {
                        *n = n.saturating_sub(1);
                    }
                    return error(Some(id), code_of(&e), e.to_string());
                }
            }
        }
        self.grant = Some((grant.clone(), h));
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
                interaction,
            } => {
                let outcome = rt
                    .inbound(Inbound {
                        channel,
                        customer,
                        text,
                        attributes,
                        queue,
                        virtual_agent,
                        interaction,
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
            ClientMsg::EndWrapUp { id, interaction } => {
                self.agent_session()?.end_wrap_up(interaction).await?;
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
            ClientMsg::History { id, customer } => {
                // An agent reads the history of customers whose work it holds (offered,
                // assigned or in wrap-up), not of anyone.
                if let Some(me) = &me {
                    let serving = rt.read(|e| {
                        e.agent(me).is_ok_and(|a| {
                            a.work.iter().any(|w| {
                                e.interaction_owner(w.interaction)
                                    .is_ok_and(|(c, _)| c == customer)
                            })
                        })
                    });
                    if !serving {
                        return Ok(error(
                            Some(id),
                            "forbidden",
                            format!(
                                "an agent reads the history of customers whose work it holds; `{me}` holds none of `{customer}`'s"
                            ),
                        ));
                    }
                }
                ok(id, &rt.customer_history(&customer))
            }
            ClientMsg::AgentView { id, agent } => match agent {
                Some(agent) => ok(id, &rt.agent_view(&agent).await?),
                None => ok(id, &self.agent_session()?.view().await?),
            },
            ClientMsg::QueueStats { id, queue } => ok(id, &rt.queue_stats(&queue).await?),
            ClientMsg::GetConfig { id } => ok(id, &rt.read(|e| e.config())),
            ClientMsg::Configure { id, config } => {
                let _one_at_a_time = self.state.admin.lock().await;
                apply_config(&rt, id, *config).await?
            }
            ClientMsg::Put {
                id,
                entity,
                position,
            } => {
                self.reconfigure(id, move |c| put_entity(c, *entity, position))
                    .await?
            }
            ClientMsg::Delete { id, kind, name } => {
                self.reconfigure(id, move |c| delete_entity(c, kind, &name))
                    .await?
            }
            ClientMsg::SetWrapUpCodes { id, queue, codes } => {
                self.reconfigure(id, move |c| {
                    let q = c
                        .queues
                        .iter_mut()
                        .find(|q| q.id == queue)
                        .ok_or_else(|| ("unknown_id", format!("unknown queue `{queue}`")))?;
                    q.wrap_up_codes = codes;
                    Ok(())
                })
                .await?
            }
            ClientMsg::SetDefaultQueue { id, queue } => {
                self.reconfigure(id, move |c| {
                    c.routing.default_queue = queue;
                    Ok(())
                })
                .await?
            }
            ClientMsg::CreateToken {
                id,
                name,
                role,
                agent,
                channels,
            } => self.create_token(id, name, role, agent, channels).await?,
            ClientMsg::DeleteToken { id, name } => {
                let edited = self
                    .edit_tokens(|tokens| {
                        let hashes = tokens.hashes_named(&name);
                        if !tokens.remove(&name) {
                            return Err(error(
                                Some(id),
                                "unknown_id",
                                format!("no token is named `{name}`"),
                            ));
                        }
                        Ok(hashes)
                    })
                    .await?;
                match edited {
                    Ok(hashes) => {
                        for h in hashes {
                            let _ = self.state.revoked.send(h);
                        }
                        done(id)
                    }
                    Err(reply) => reply,
                }
            }
            ClientMsg::ListTokens { id } => {
                let list: Vec<TokenInfo> = self
                    .state
                    .tokens
                    .read()
                    .expect("tokens lock")
                    .list()
                    .into_iter()
                    .map(|g| TokenInfo {
                        name: g.name,
                        role: g.role,
                        agent: g.agent,
                        channels: g.channels,
                    })
                    .collect();
                ok(id, &list)
            }
            ClientMsg::Stats { id } => ok(id, &center_stats(&rt).await),
            ClientMsg::SubscribeStats { .. }
            | ClientMsg::SubscribeEvents { .. }
            | ClientMsg::SubscribeOutbound { .. }
            | ClientMsg::Unsubscribe { .. } => unreachable!("handled by the session"),
            ClientMsg::Explain {
                id,
                interaction,
                queue,
                channel,
            } => {
                let now = rt.clock().now_ms();
                let explained = match (interaction, queue, channel) {
                    (Some(i), None, None) => rt.read(|e| e.explain(i, now)),
                    (None, Some(q), Some(c)) => rt.read(|e| e.explain_next(&q, &c, now)),
                    _ => {
                        return Ok(error(
                            Some(id),
                            "bad_field",
                            "give `interaction`, or `queue` and `channel`",
                        ));
                    }
                };
                ok(
                    id,
                    &explained.map_err(|e| RuntimeError::Journal(JournalError::Engine(e)))?,
                )
            }
            ClientMsg::CheckInvariants { id } => {
                let now = rt.clock().now_ms();
                ok(id, &rt.read(|e| e.check_invariants(now)))
            }
        })
    }

    /// Reads the configuration, changes it, applies it (one change at a time).
    async fn reconfigure(
        &self,
        id: u64,
        change: impl FnOnce(&mut CenterConfig) -> Result<(), (&'static str, String)>,
    ) -> Result<ServerMsg, RuntimeError> {
        let _one_at_a_time = self.state.admin.lock().await;
        let rt = &self.state.runtime;
        let mut config = rt.read(|e| e.config());
        if let Err((code, message)) = change(&mut config) {
            return Ok(error(Some(id), code, message));
        }
        apply_config(rt, id, config).await
    }

    async fn create_token(
        &self,
        id: u64,
        name: String,
        role: Role,
        agent: Option<String>,
        channels: Vec<String>,
    ) -> Result<ServerMsg, RuntimeError> {
        if let Err((field, why)) = token_shape(role, agent.as_deref(), &name, &channels) {
            return Ok(error(Some(id), "bad_field", format!("{field}: {why}")));
        }
        if let Some(c) = channels
            .iter()
            .find(|c| !self.state.runtime.read(|e| e.has_channel(c)))
        {
            return Ok(error(
                Some(id),
                "unknown_id",
                format!("channels: unknown channel `{c}`"),
            ));
        }
        if let Some(a) = &agent
            && self.state.runtime.read(|e| e.agent(a).is_err())
        {
            return Ok(error(
                Some(id),
                "unknown_id",
                format!("unknown agent `{a}`"),
            ));
        }
        let token = random_token()
            .map_err(|e| RuntimeError::Unavailable(format!("cannot make a token: {e}")))?;
        let edited = self
            .edit_tokens(|tokens| {
                if tokens.has_name(&name) {
                    return Err(error(
                        Some(id),
                        "bad_request",
                        format!("a token named `{name}` exists; delete it first"),
                    ));
                }
                tokens.put_hashed(
                    hash(&token),
                    Grant {
                        role,
                        agent,
                        name: name.clone(),
                        channels,
                    },
                );
                Ok(())
            })
            .await?;
        Ok(match edited {
            Ok(()) => ok(id, &NewToken { name, token }),
            Err(reply) => reply,
        })
    }

    /// Changes the tokens, one edit at a time: `edit` works on a copy, which is saved
    /// to the tokens file (synced to disk) before it replaces the tokens every request
    /// reads — so no request waits on the disk, and a failed save changes nothing.
    /// `edit` may refuse with a reply (`Ok(Err(reply))`).
    async fn edit_tokens<R>(
        &self,
        edit: impl FnOnce(&mut Tokens) -> Result<R, ServerMsg>,
    ) -> Result<Result<R, ServerMsg>, RuntimeError> {
        let one_at_a_time = self.state.token_edits.clone().lock_owned().await;
        let mut next = self.state.tokens.read().expect("tokens lock").clone();
        let done = match edit(&mut next) {
            Ok(done) => done,
            Err(reply) => return Ok(Err(reply)),
        };
        let state = self.state.clone();
        // Saved and swapped in on a blocking thread (not a worker), which also holds
        // the edit lock: an edit finishes even if its request is dropped meanwhile.
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = one_at_a_time;
            if let Some(path) = &state.config.tokens_file {
                next.save(path).map_err(|e| {
                    RuntimeError::Unavailable(format!("cannot save the tokens file: {e}"))
                })?;
            }
            *state.tokens.write().expect("tokens lock") = next;
            Ok::<(), RuntimeError>(())
        })
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("the tokens writer ({e})")))??;
        Ok(Ok(done))
    }
}

/// `list_tokens` entries.
#[derive(Serialize)]
struct TokenInfo {
    name: String,
    role: Role,
    agent: Option<String>,
    /// A channel token's channels (empty: every channel).
    channels: Vec<String>,
}

/// `create_token`'s reply.
#[derive(Serialize)]
struct NewToken {
    name: String,
    token: String,
}

fn put_entity(
    c: &mut CenterConfig,
    entity: Entity,
    position: Option<u32>,
) -> Result<(), (&'static str, String)> {
    fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
        match list.iter().position(|x| same(x, &item)) {
            Some(i) => list[i] = item,
            None => list.push(item),
        }
    }
    if position.is_some() && !matches!(entity, Entity::Rule(_)) {
        return Err(("bad_field", "position: applies to rules only".into()));
    }
    match entity {
        Entity::Channel(x) => upsert(&mut c.channels, x, |a, b| a.name == b.name),
        Entity::Skill(x) => upsert(&mut c.skills, x, |a, b| a.name == b.name),
        Entity::Agent(x) => upsert(&mut c.agents, x, |a, b| a.id == b.id),
        Entity::Queue(x) => upsert(&mut c.queues, x, |a, b| a.id == b.id),
        Entity::Settings(x) => c.settings = x,
        Entity::Rule(x) => {
            let rules = &mut c.routing.rules;
            let existing = rules.iter().position(|r| r.name == x.name);
            match (existing, position) {
                (Some(i), None) => rules[i] = x,
                (existing, Some(p)) => {
                    if let Some(i) = existing {
                        rules.remove(i);
                    }
                    let p = (p as usize).min(rules.len());
                    rules.insert(p, x);
                }
                (None, None) => rules.push(x),
            }
        }
    }
    Ok(())
}

fn delete_entity(
    c: &mut CenterConfig,
    kind: EntityKind,
    name: &str,
) -> Result<(), (&'static str, String)> {
    fn remove<T>(list: &mut Vec<T>, is: impl Fn(&T) -> bool) -> bool {
        let before = list.len();
        list.retain(|x| !is(x));
        before != list.len()
    }
    let found = match kind {
        EntityKind::Channel => remove(&mut c.channels, |x| x.name == name),
        EntityKind::Skill => remove(&mut c.skills, |x| x.name == name),
        EntityKind::Agent => remove(&mut c.agents, |x| x.id == name),
        EntityKind::Queue => remove(&mut c.queues, |x| x.id == name),
        EntityKind::Rule => remove(&mut c.routing.rules, |x| x.name == name),
    };
    if found {
        Ok(())
    } else {
        Err((
            "unknown_id",
            format!("no {} named `{name}`", format!("{kind:?}").to_lowercase()),
        ))
    }
}

/// Applies a whole configuration; the reply lists what changed.
async fn apply_config(
    rt: &Runtime,
    id: u64,
    config: CenterConfig,
) -> Result<ServerMsg, RuntimeError> {
    let ack = match rt.execute(Command::Configure { config }).await {
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
            omniroute_actors::engine::Event::Configured { changes } => Some(changes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(ok(id, &changes))
}

/// The center's statistics now.
pub async fn center_stats(rt: &Runtime) -> CenterStats {
    use omniroute_actors::engine::AgentStatus;
    let at_ms = rt.clock().now_ms();
    let (queue_ids, agents, used, total) = rt.read(|e| {
        e.with_config(|config| {
            let mut counts = AgentCounts::default();
            let (mut used, mut total) = (0u64, 0u64);
            for a in &config.agents {
                let Ok(s) = e.agent(&a.id) else { continue };
                match s.status {
                    AgentStatus::Offline => counts.offline += 1,
                    AgentStatus::Idle => counts.idle += 1,
                    AgentStatus::Busy => counts.busy += 1,
                    AgentStatus::WrapUp => counts.wrap_up += 1,
                    AgentStatus::Away => counts.away += 1,
                }
                if matches!(
                    s.status,
                    AgentStatus::Idle | AgentStatus::Busy | AgentStatus::WrapUp
                ) {
                    used += u64::from(s.used_units);
                    total += u64::from(s.total_units);
                }
            }
            let queues: Vec<String> = config.queues.iter().map(|q| q.id.clone()).collect();
            (queues, counts, used, total)
        })
    });
    let mut queues = Vec::with_capacity(queue_ids.len());
    for q in queue_ids {
        if let Ok(stats) = rt.queue_stats(&q).await {
            queues.push(stats);
        }
    }
    CenterStats {
        at_ms,
        queues,
        agents,
        occupancy_percent: if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        },
        live_interactions: rt.live_interactions() as u64,
    }
}

#[cfg(test)]
mod token_file_tests {
    use super::*;

    #[test]
    fn every_token_obeys_one_set_of_rules_and_roles_read_back_from_their_names() {
        let ch = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            token_shape(Role::Agent, Some("ana"), "ana-desk", &[]),
            Ok(())
        );
        assert_eq!(
            token_shape(Role::Channel, None, "sms", &ch(&["sms"])),
            Ok(())
        );
        let field = |r: Result<(), (&'static str, &'static str)>| r.unwrap_err().0;
        assert_eq!(field(token_shape(Role::Admin, None, "a\rb", &[])), "name");
        assert_eq!(field(token_shape(Role::Admin, None, "", &[])), "name");
        assert_eq!(field(token_shape(Role::Agent, None, "x", &[])), "agent");
        assert_eq!(
            field(token_shape(Role::Agent, Some("-"), "x", &[])),
            "agent"
        );
        assert_eq!(
            field(token_shape(Role::Agent, Some("a\tb"), "x", &[])),
            "agent"
        );
        assert_eq!(
            field(token_shape(Role::Supervisor, Some("ana"), "x", &[])),
            "agent"
        );
        let sms = ch(&["sms"]);
        assert_eq!(field(token_shape(Role::Admin, None, "x", &sms)), "channels");
        let comma = ch(&["sms,chat"]);
        assert_eq!(
            field(token_shape(Role::Channel, None, "x", &comma)),
            "channels"
        );
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        let e = "root".parse::<Role>().unwrap_err();
        assert!(e.contains("unknown role `root`"), "{e}");
    }

    #[test]
    fn a_tokens_file_keeps_roles_agents_sources_and_channel_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let mut tokens = Tokens::new();
        let grant = |role, agent: Option<&str>, name: &str, channels: &[&str]| Grant {
            role,
            agent: agent.map(String::from),
            name: name.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        };
        tokens.put_hashed(
            hash("a-token-0000000000"),
            grant(Role::Admin, None, "admin", &[]),
        );
        tokens.put_from_file(
            hash("s-token-0000000000"),
            grant(Role::Channel, None, "gateway", &["sms", "whatsapp"]),
        );
        tokens.put_hashed(
            hash("g-token-0000000000"),
            grant(Role::Agent, Some("ana"), "ana", &[]),
        );
        tokens.save(&path).unwrap();
        let back = Tokens::load_file(&path).unwrap();
        assert_eq!(back.list(), tokens.list());
        let (g, _) = back.check("s-token-0000000000").unwrap();
        assert!(g.covers("sms") && g.covers("whatsapp") && !g.covers("chat"));
        assert!(back.check("a-token-0000000000").unwrap().0.covers("chat"));
        // The file's tokens are still known as the file's.
        let mut back = back;
        assert_eq!(
            back.drop_file_tokens_except(&[]),
            vec!["gateway".to_string()]
        );
        // Older files (4 or 5 fields) still load; a scope on another role is refused.
        let h = "0".repeat(64);
        std::fs::write(
            &path,
            format!("{h}\tchannel\t-\told\n{h}\tadmin\t-\tx\tapi\n"),
        )
        .unwrap();
        assert_eq!(Tokens::load_file(&path).unwrap().len(), 1);
        // A name with a carriage return, as an earlier version could write, loads.
        std::fs::write(&path, format!("{h}\tadmin\t-\tdesk\r2\tapi\n")).unwrap();
        assert_eq!(Tokens::load_file(&path).unwrap().list()[0].name, "desk\r2");
        std::fs::write(&path, format!("{h}\tadmin\t-\t\tapi\n")).unwrap();
        let e = Tokens::load_file(&path).unwrap_err().to_string();
        assert!(e.contains("a token needs a name"), "{e}");
        std::fs::write(&path, format!("{h}\tadmin\t-\tx\tapi\tsms\n")).unwrap();
        let e = Tokens::load_file(&path).unwrap_err().to_string();
        assert!(
            e.contains(":1:") && e.contains("only channel tokens"),
            "{e}"
        );
    }
}
