//! The server's configuration file (TOML): the center (channels, skills, agents, queues,
//! routing rules with wrap-up codes per queue, settings), tokens, limits, durability and
//! the listening address. Documented field by field in docs/CONFIG.md; a commented
//! example is `omniroute.example.toml` at the top of the repository.
//!
//! A mistake stops the start with the file, line, column and field and what was
//! expected: syntax and type errors come from the TOML parser's spans; keys no field
//! takes are found by comparing what was written with what was understood; the center
//! is then compiled by the engine, whose error names the entity, which is located back
//! in the file.

use crate::frame;
use crate::proto::Role;
use crate::server::ServerConfig;
use omniroute_actors::RuntimeConfig;
use omniroute_actors::engine::journal::Durability;
use omniroute_actors::engine::{
    AgentDef, CenterConfig, ChannelDef, Engine, EngineError, QueueDef, RoutingConfig, RoutingRule,
    Settings, SkillDef,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A mistake in the configuration file: where it is and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the whole file is concerned).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a path (`queues[2].offer_timeout_ms`), or empty.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `[server]`: where to listen and the files it keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// UDP address (default 127.0.0.1:4433; `--listen` overrides).
    pub listen: Option<SocketAddr>,
    /// Data directory (default `omniroute-data`; `--data-dir` overrides). Relative
    /// paths are relative to the configuration file.
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain (with `key`); default a self-signed one in the data
    /// directory.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[limits]`: every limit of the server and the actor runtime. Absent fields keep
/// their defaults (docs/CONFIG.md lists them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest frame body accepted, bytes (default 1 MiB; 1 KiB to 64 MiB).
    pub max_frame_bytes: Option<usize>,
    /// QUIC connections at once (default 10,000).
    pub max_connections: Option<usize>,
    /// Sessions at once per token (default 64).
    pub sessions_per_token: Option<usize>,
    /// Requests of one session running at once (default 64).
    pub requests_in_flight: Option<usize>,
    /// Live interactions admitted at once (default 100,000).
    pub max_live_interactions: Option<usize>,
    /// Pushes buffered per session before it is told it lagged (default 1,024).
    pub session_buffer: Option<usize>,
    /// Timeout of calls into actors, ms (default 2,000).
    pub call_timeout_ms: Option<u64>,
    /// A customer's message within this long joins their open conversation, ms
    /// (default 600,000).
    pub switch_window_ms: Option<u64>,
    /// A returning customer waits this long for their last agent, ms (default 60,000).
    pub return_to_agent_ms: Option<u64>,
    /// An agent without sessions keeps its work this long, ms (default 30,000).
    pub disconnect_grace_ms: Option<u64>,
    /// After a server restart, agents' assigned work waits this long for them, ms
    /// (default 120,000).
    pub restart_grace_ms: Option<u64>,
    /// Records an event subscriber may fall behind by (default 4,096).
    pub event_buffer: Option<usize>,
}

/// `[durability]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySection {
    /// `sync` (every acknowledgement after an fsync shared by concurrent writers) or
    /// `batched` (acknowledged at once, flushed every `interval_ms`).
    pub mode: String,
    /// For `batched`: the flush interval, ms (default 10).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Records between snapshots (default 100,000; 0 never).
    #[serde(default)]
    pub snapshot_every: Option<u64>,
    /// How long finished interactions stay readable (conversations, history) before a
    /// snapshot purges them, seconds (default 86,400). Shorter keeps snapshots — and the
    /// pause they cost — small.
    #[serde(default)]
    pub retain_finished_s: Option<u64>,
}

/// A `[[tokens]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Unique name (for logs and for `delete_token`).
    pub name: String,
    /// `admin`, `supervisor`, `agent` or `channel`.
    pub role: Role,
    /// The agent an agent token is bound to.
    #[serde(default)]
    pub agent: Option<String>,
    /// The token itself (at least 16 characters)…
    #[serde(default)]
    pub token: Option<String>,
    /// …or its SHA-256 in hexadecimal, so the file need not hold it.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A channel token's channels (default: every channel): it submits, ends and
    /// subscribes to conversations on these only.
    #[serde(default)]
    pub channels: Vec<String>,
}

impl TokenSpec {
    /// The token's SHA-256.
    pub fn hash(&self) -> [u8; 32] {
        match (&self.token, &self.token_sha256) {
            (Some(t), _) => crate::server::hash(t),
            (None, Some(h)) => parse_hash(h).expect("validated at load"),
            (None, None) => unreachable!("validated at load"),
        }
    }
}

/// 64 hexadecimal digits → 32 bytes.
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    default_queue: Option<String>,
    #[serde(default)]
    rules: Vec<Spanned<RoutingRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    durability: Option<Spanned<DurabilitySection>>,
    #[serde(default)]
    settings: Option<Spanned<Settings>>,
    #[serde(default)]
    channels: Option<Vec<Spanned<ChannelDef>>>,
    #[serde(default)]
    skills: Vec<Spanned<SkillDef>>,
    #[serde(default)]
    agents: Vec<Spanned<AgentDef>>,
    #[serde(default)]
    queues: Vec<Spanned<QueueDef>>,
    #[serde(default)]
    routing: Option<Spanned<RawRouting>>,
    #[serde(default)]
    tokens: Vec<Spanned<TokenSpec>>,
}

/// A configuration file, read and checked.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// `[server]` (paths resolved against the file's directory).
    pub server: ServerSection,
    /// `[limits]`.
    pub limits: Limits,
    /// `[durability]`, if given.
    pub durability: Option<Durability>,
    /// `[durability] snapshot_every`, if given.
    pub snapshot_every: Option<u64>,
    /// `[durability] retain_finished_s`, if given.
    pub retain_finished_s: Option<u64>,
    /// The center (validated by the engine).
    pub center: CenterConfig,
    /// `[[tokens]]`.
    pub tokens: Vec<TokenSpec>,
}

impl FileConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        let mut config = FileConfig::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.server.data_dir,
            &mut config.server.cert,
            &mut config.server.key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Checks a configuration given as text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        let doc = Doc { text, path };
        let raw: RawFile = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        // Keys no field took (the engine's types accept and ignore unknown keys, which
        // would silently drop a misspelt setting).
        let value: toml::Table = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        doc.unknown_keys(&value, &raw)?;

        if raw.server.cert.is_some() != raw.server.key.is_some() {
            let field = if raw.server.cert.is_some() {
                "server.key"
            } else {
                "server.cert"
            };
            return Err(doc.error_in(
                0..text.len(),
                if raw.server.cert.is_some() {
                    "server.cert"
                } else {
                    "server.key"
                },
                format!("give both `cert` and `key` (or neither): `{field}` is missing"),
            ));
        }
        let limits = raw.limits.clone();
        doc.check_limits(&limits)?;
        let retain_finished_s = raw
            .durability
            .as_ref()
            .and_then(|d| d.get_ref().retain_finished_s);
        if let (Some(d), Some(r)) = (&raw.durability, retain_finished_s)
            && r == 0
        {
            return Err(doc.error_in(
                d.span(),
                "durability.retain_finished_s",
                "expected at least 1 second, found 0",
            ));
        }
        let (durability, snapshot_every) = match &raw.durability {
            None => (None, None),
            Some(d) => {
                let at = d.span();
                let d = d.get_ref();
                let durability = match (d.mode.as_str(), d.interval_ms) {
                    ("sync", None) => Durability::Sync,
                    ("sync", Some(_)) => {
                        return Err(doc.error_in(
                            at,
                            "durability.interval_ms",
                            "interval_ms applies to mode = \"batched\" only",
                        ));
                    }
                    ("batched", ms) => {
                        // As `--durability batched` on the command line.
                        let ms = ms.unwrap_or(10);
                        if ms == 0 || ms > 60_000 {
                            return Err(doc.error_in(
                                at,
                                "durability.interval_ms",
                                format!("expected 1 to 60000 ms, found {ms}"),
                            ));
                        }
                        Durability::Batched { flush_every_ms: ms }
                    }
                    (other, _) => {
                        return Err(doc.error_in(
                            at,
                            "durability.mode",
                            format!("expected \"sync\" or \"batched\", found \"{other}\""),
                        ));
                    }
                };
                (Some(durability), d.snapshot_every)
            }
        };

        let channels = match &raw.channels {
            Some(list) => list.iter().map(|c| c.get_ref().clone()).collect(),
            None => ChannelDef::builtin(),
        };
        let center = CenterConfig {
            channels,
            skills: raw.skills.iter().map(|s| s.get_ref().clone()).collect(),
            agents: raw.agents.iter().map(|a| a.get_ref().clone()).collect(),
            queues: raw.queues.iter().map(|q| q.get_ref().clone()).collect(),
            routing: RoutingConfig {
                rules: raw
                    .routing
                    .as_ref()
                    .map(|r| {
                        r.get_ref()
                            .rules
                            .iter()
                            .map(|r| r.get_ref().clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                default_queue: raw
                    .routing
                    .as_ref()
                    .and_then(|r| r.get_ref().default_queue.clone()),
            },
            settings: raw
                .settings
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
        };
        if let Err(e) = Engine::new(center.clone()) {
            return Err(doc.engine_error(&raw, &e));
        }
        let tokens = doc.check_tokens(&raw, &center)?;
        Ok(FileConfig {
            path: path.to_path_buf(),
            server: raw.server,
            limits,
            durability,
            snapshot_every,
            retain_finished_s,
            center,
            tokens,
        })
    }

    /// The actor runtime's limits, defaults where the file is silent.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let l = &self.limits;
        let d = RuntimeConfig::default();
        RuntimeConfig {
            max_live_interactions: l.max_live_interactions.unwrap_or(d.max_live_interactions),
            session_max_in_flight: l.requests_in_flight.unwrap_or(d.session_max_in_flight),
            session_buffer: l.session_buffer.unwrap_or(d.session_buffer),
            call_timeout: l
                .call_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(d.call_timeout),
            switch_window_ms: l.switch_window_ms.unwrap_or(d.switch_window_ms),
            return_to_agent_ms: l.return_to_agent_ms.unwrap_or(d.return_to_agent_ms),
            disconnect_grace_ms: l.disconnect_grace_ms.unwrap_or(d.disconnect_grace_ms),
            bus_capacity: l.event_buffer.unwrap_or(d.bus_capacity),
            ..d
        }
    }

    /// The server's limits (tokens are added by the caller), defaults where silent.
    pub fn server_config(&self) -> ServerConfig {
        let l = &self.limits;
        let d = ServerConfig::default();
        ServerConfig {
            max_frame: l.max_frame_bytes.unwrap_or(d.max_frame),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            sessions_per_token: l.sessions_per_token.unwrap_or(d.sessions_per_token),
            requests_in_flight: l.requests_in_flight.unwrap_or(d.requests_in_flight),
            ..d
        }
    }
}

struct Doc<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Doc<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn error_at(
        &self,
        offset: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = offset.map_or((0, 0), |o| self.position(o));
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error about `field` (a dotted path whose last part is a key) inside `span`:
    /// located at that key's line when it is written there, else at the span.
    fn error_in(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        let key = field
            .rsplit(['.', ']'])
            .next()
            .filter(|k| !k.is_empty() && !k.contains('['))
            .unwrap_or("");
        // The last `[index]` before the key, if the field has one past the entity's own
        // (`queues[2].relaxation[1].after_ms` → 1; `…channels[chat].units` → "chat").
        let inner = field
            .strip_suffix(key)
            .unwrap_or(field)
            .trim_end_matches('.')
            .strip_suffix(']')
            .and_then(|f| f.rsplit_once('['))
            .map(|(before, index)| (before.contains('.'), index));
        let offset = if key.is_empty() {
            span.start
        } else {
            let found = match inner {
                Some((true, index)) => match index.parse::<usize>() {
                    Ok(n) => self.find_key_nth(span.clone(), key, n),
                    Err(_) => {
                        let quoted = format!("\"{index}\"");
                        let end = span.end.max(self.next_header(span.start));
                        self.text[span.start.min(end)..end]
                            .find(&quoted)
                            .and_then(|at| {
                                let from = span.start + at;
                                self.find_key(from..span.end.max(from), key)
                            })
                    }
                },
                _ => None,
            };
            found
                .or_else(|| self.find_key(span.clone(), key))
                .unwrap_or(span.start)
        };
        self.error_at(Some(offset), field, message)
    }

    /// Where the `[[table]]` or `[table]` after `start` begins (or the end).
    fn next_header(&self, start: usize) -> usize {
        let start = start.min(self.text.len());
        self.text[start..]
            .match_indices("\n[")
            .map(|(i, _)| start + i + 1)
            .find(|&i| i > start + 1)
            .unwrap_or(self.text.len())
    }

    /// The `n`-th (from 0) `key = …` inside `span`.
    fn find_key_nth(&self, span: Range<usize>, key: &str, n: usize) -> Option<usize> {
        let mut from = span.start;
        let end = span.end.max(self.next_header(span.start));
        for _ in 0..n {
            from = self.find_key(from..end, key)? + key.len();
        }
        self.find_key(from..end, key)
    }

    /// Where `key = …` is written inside `span`.
    fn find_key(&self, span: Range<usize>, key: &str) -> Option<usize> {
        // The span of a `[[table]]` covers its header only: its keys run to the next
        // header.
        let start = span.start.min(self.text.len());
        let end = span.end.max(self.next_header(start)).min(self.text.len());
        let region = &self.text[start..end];
        let mut from = 0;
        while let Some(i) = region[from..].find(key) {
            let at = from + i;
            let before_ok = at == 0
                || !region[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
            let after = region[at + key.len()..].trim_start_matches([' ', '\t']);
            let line_start = region[..at].rfind('\n').map_or(0, |i| i + 1);
            let commented = region[line_start..at].contains('#');
            if before_ok && !commented && after.starts_with('=') {
                return Some(start + at);
            }
            from = at + key.len();
        }
        None
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        // The message names the field ("missing field `x`", "unknown field `y`,
        // expected one of …", "invalid type: …"); the span says where.
        let message = e.message().trim().to_string();
        let mut field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .unwrap_or("")
            .to_string();
        if field.is_empty()
            && let Some(start) = e.span().map(|s| s.start.min(self.text.len()))
        {
            // A bad value: the key written before it on its line (`key = value`).
            let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
            let before = &self.text[line_start..start];
            let line_end = self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |i| start + i);
            let from_here = &self.text[start..line_end];
            if !before.contains('=')
                && let Some((key, _)) = from_here.split_once('=')
                && !key.trim().is_empty()
                && !key.trim().contains(' ')
            {
                // The error is at a key (`duplicate key`): that key.
                field = key.trim().trim_matches('"').to_string();
            } else if let Some((key, _)) = before.rsplit_once('=') {
                let key = key
                    .rsplit([',', '{'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('"');
                if !key.is_empty() && !key.contains(' ') {
                    field = key.to_string();
                }
            }
        }
        self.error_at(e.span().map(|s| s.start), field, message)
    }

    fn unknown_keys(&self, value: &toml::Table, raw: &RawFile) -> Result<(), ConfigError> {
        fn sections<T: Serialize>(
            doc: &Doc<'_>,
            value: &toml::Table,
            name: &str,
            items: &[Spanned<T>],
        ) -> Result<(), ConfigError> {
            let Some(toml::Value::Array(written)) = value.get(name) else {
                return Ok(());
            };
            for (i, (w, item)) in written.iter().zip(items).enumerate() {
                let understood = toml::Value::try_from(item.get_ref())
                    .expect("configuration types serialise to TOML");
                if let Some(path) = first_unknown(w, &understood, String::new()) {
                    let field = format!("{name}[{i}]{path}");
                    return Err(doc.error_in(
                        item.span(),
                        &field,
                        format!(
                            "unknown field `{}`; see docs/CONFIG.md for the fields of {name}",
                            path.rsplit('.').next().unwrap_or(&path)
                        ),
                    ));
                }
            }
            Ok(())
        }
        if let Some(channels) = &raw.channels {
            sections(self, value, "channels", channels)?;
        }
        sections(self, value, "skills", &raw.skills)?;
        sections(self, value, "agents", &raw.agents)?;
        sections(self, value, "queues", &raw.queues)?;
        if let (Some(toml::Value::Table(routing)), Some(r)) = (value.get("routing"), &raw.routing) {
            sections(self, routing, "rules", &r.get_ref().rules).map_err(|e| ConfigError {
                field: format!("routing.{}", e.field),
                ..e
            })?;
        }
        if let (Some(w), Some(s)) = (value.get("settings"), &raw.settings) {
            let understood = toml::Value::try_from(s.get_ref()).expect("settings serialise");
            if let Some(path) = first_unknown(w, &understood, String::new()) {
                return Err(self.error_in(
                    s.span(),
                    &format!("settings{path}"),
                    "unknown field; expected max_consecutive_misses or node_id",
                ));
            }
        }
        Ok(())
    }

    fn check_limits(&self, l: &Limits) -> Result<(), ConfigError> {
        let whole = 0..self.text.len();
        let at = |field: &str, message: String| self.error_in(whole.clone(), field, message);
        if let Some(n) = l.max_frame_bytes
            && !(1024..=frame::DISCARD_LIMIT).contains(&n)
        {
            return Err(at(
                "limits.max_frame_bytes",
                format!("expected 1024 to {} bytes, found {n}", frame::DISCARD_LIMIT),
            ));
        }
        let positive = [
            ("max_connections", l.max_connections),
            ("sessions_per_token", l.sessions_per_token),
            ("requests_in_flight", l.requests_in_flight),
            ("max_live_interactions", l.max_live_interactions),
            ("session_buffer", l.session_buffer),
            ("event_buffer", l.event_buffer),
        ];
        for (name, v) in positive {
            if v == Some(0) {
                return Err(at(
                    &format!("limits.{name}"),
                    "expected at least 1, found 0".into(),
                ));
            }
        }
        if l.call_timeout_ms == Some(0) {
            return Err(at(
                "limits.call_timeout_ms",
                "expected at least 1 ms, found 0".into(),
            ));
        }
        Ok(())
    }

    /// Places an engine error on the entity it names.
    fn engine_error(&self, raw: &RawFile, e: &EngineError) -> ConfigError {
        let whole = 0..0;
        let find = |kind: &str, id: &str, nth: usize| -> Option<(String, Range<usize>)> {
            // (list name, each entry's id and span)
            fn ids<T>(list: &[Spanned<T>], id: impl Fn(&T) -> &str) -> Vec<(&str, Range<usize>)> {
                list.iter().map(|x| (id(x.get_ref()), x.span())).collect()
            }
            let (list, entries) = match kind {
                "channel" => (
                    "channels",
                    ids(raw.channels.as_deref().unwrap_or_default(), |c| &c.name),
                ),
                "skill" => ("skills", ids(&raw.skills, |c| &c.name)),
                "agent" => ("agents", ids(&raw.agents, |c| &c.id)),
                "queue" => ("queues", ids(&raw.queues, |c| &c.id)),
                _ => return None,
            };
            let matches: Vec<(usize, Range<usize>)> = entries
                .into_iter()
                .enumerate()
                .filter(|(_, (x, _))| *x == id)
                .map(|(i, (_, span))| (i, span))
                .collect();
            matches
                .get(nth)
                .or(matches.first())
                .map(|(i, span)| (format!("{list}[{i}]"), span.clone()))
        };
        let (entity, span) = match e {
            EngineError::Duplicate { kind: "rule", id } => raw
                .routing
                .as_ref()
                .and_then(|r| {
                    let rules = &r.get_ref().rules;
                    let mut same = rules
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| &x.get_ref().name == id);
                    same.nth(1)
                        .map(|(i, x)| (format!("routing.rules[{i}].name"), x.span()))
                })
                .unwrap_or_default(),
            EngineError::Duplicate { kind, id } => find(kind, id, 1).unwrap_or_default(),
            EngineError::UnknownQueue(q) => {
                let rules = raw.routing.as_ref().map(|r| &r.get_ref().rules[..]);
                let by_rule = rules.and_then(|rules| {
                    rules
                        .iter()
                        .position(|r| &r.get_ref().queue == q)
                        .map(|i| (format!("routing.rules[{i}].queue"), rules[i].span()))
                });
                by_rule
                    .or_else(|| {
                        raw.routing
                            .as_ref()
                            .filter(|r| r.get_ref().default_queue.as_ref() == Some(q))
                            .map(|r| ("routing.default_queue".to_string(), r.span()))
                    })
                    .unwrap_or_default()
            }
            _ => {
                let context = match e {
                    EngineError::UnknownSkill { context, .. }
                    | EngineError::UnknownChannel { context, .. }
                    | EngineError::InvalidConfig { context, .. }
                    | EngineError::ProficiencyOutOfRange { context, .. } => context.clone(),
                    other => other.to_string(),
                };
                locate(&context, raw, &find).unwrap_or((String::new(), whole))
            }
        };
        // The field inside the entity, when the context names one (`….offer_timeout_ms`).
        // What follows the entity in the context (`queue `x` relaxation[1].after_ms`).
        let context_field = match e {
            EngineError::InvalidConfig { context, .. }
            | EngineError::ProficiencyOutOfRange { context, .. } => context
                .rsplit_once('`')
                .map(|(_, rest)| rest.trim_matches([' ', '.', ')']).to_string())
                .filter(|f| !f.is_empty() && !f.contains(' ')),
            _ => None,
        };
        let field = match &context_field {
            Some(f) if !entity.is_empty() => format!("{entity}.{f}"),
            _ => entity.clone(),
        };
        if span.is_empty() {
            return self.error_at(None, field, e.to_string());
        }
        self.error_in(span, &field, e.to_string())
    }

    fn check_tokens(
        &self,
        raw: &RawFile,
        center: &CenterConfig,
    ) -> Result<Vec<TokenSpec>, ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            let span = t.span();
            let spec = t.get_ref();
            let f = |name: &str| format!("tokens[{i}].{name}");
            if let Err((field, why)) = crate::server::token_shape(
                spec.role,
                spec.agent.as_deref(),
                &spec.name,
                &spec.channels,
            ) {
                let why = match field {
                    "agent" if spec.agent.is_none() => {
                        "an agent token names its agent (`agent = \"…\"`)"
                    }
                    _ => why,
                };
                return Err(self.error_in(span, &f(field), why));
            }
            if !names.insert(spec.name.as_str()) {
                return Err(self.error_in(
                    span,
                    &f("name"),
                    format!("duplicate token name `{}`", spec.name),
                ));
            }
            match (&spec.token, &spec.token_sha256) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(self.error_in(
                        span,
                        &f("token"),
                        "give exactly one of `token` and `token_sha256`",
                    ));
                }
                (Some(t), None) if t.chars().count() < 16 => {
                    return Err(self.error_in(
                        span,
                        &f("token"),
                        "a token has at least 16 characters",
                    ));
                }
                (None, Some(h)) if parse_hash(h).is_none() => {
                    return Err(self.error_in(
                        span,
                        &f("token_sha256"),
                        "expected 64 hexadecimal digits (the SHA-256 of the token)",
                    ));
                }
                _ => {}
            }
            if !hashes.insert(spec.hash()) {
                return Err(self.error_in(span, &f("token"), "the same token is given twice"));
            }
            if let Some(a) = &spec.agent
                && !center.agents.iter().any(|x| &x.id == a)
            {
                return Err(self.error_in(
                    span,
                    &f("agent"),
                    format!("unknown agent `{a}`: not in [[agents]]"),
                ));
            }
            if let Some(c) = spec
                .channels
                .iter()
                .find(|c| !center.channels.iter().any(|x| &x.name == *c))
            {
                return Err(self.error_in(
                    span,
                    &f("channels"),
                    format!("unknown channel `{c}`: not in [[channels]]"),
                ));
            }
        }
        Ok(raw.tokens.iter().map(|t| t.get_ref().clone()).collect())
    }
}

type Finder<'a> = dyn Fn(&str, &str, usize) -> Option<(String, Range<usize>)> + 'a;

/// The entity an engine error's context names: `agent `x``, `queue `x``, `channel
/// `x``, `routing rule N`, `default queue`.
fn locate(context: &str, raw: &RawFile, find: &Finder<'_>) -> Option<(String, Range<usize>)> {
    if let Some(rest) = context.split("routing rule ").nth(1) {
        let n: usize = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        let rules = &raw.routing.as_ref()?.get_ref().rules;
        return rules
            .get(n)
            .map(|r| (format!("routing.rules[{n}]"), r.span()));
    }
    for kind in ["agent", "queue", "channel", "skill"] {
        let marker = format!("{kind} `");
        if let Some(rest) = context.split(marker.as_str()).nth(1)
            && let Some(id) = rest.split('`').next()
            && let Some(found) = find(kind, id, 0)
        {
            return Some(found);
        }
    }
    if context.contains("default") || context.starts_with("unknown queue") {
        return raw
            .routing
            .as_ref()
            .map(|r| ("routing.default_queue".to_string(), r.span()));
    }
    None
}

/// The first key of `written` that `understood` lacks, as `.a.b` / `[i]` path.
fn first_unknown(written: &toml::Value, understood: &toml::Value, path: String) -> Option<String> {
    match (written, understood) {
        (toml::Value::Table(w), toml::Value::Table(u)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match u.get(k) {
                    None => return Some(p),
                    Some(uv) => {
                        if let Some(found) = first_unknown(wv, uv, p) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        (toml::Value::Array(w), toml::Value::Array(u)) => w
            .iter()
            .zip(u)
            .enumerate()
            .find_map(|(i, (wv, uv))| first_unknown(wv, uv, format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:4500"

[limits]
max_frame_bytes = 65536

[durability]
mode = "batched"
interval_ms = 10

[[skills]]
name = "billing"

[[agents]]
id = "ana"
skills = [{ skill = "billing", proficiency = 7 }]
capacity = { total_units = 10, channels = [{ channel = "chat" }] }

[[queues]]
id = "billing"
required_skills = [{ skill = "billing", min_proficiency = 3 }]
offer_timeout_ms = 20000
max_waiting = 100

[routing]
default_queue = "billing"

[[tokens]]
name = "admin"
role = "admin"
token = "0123456789abcdef-admin"
"#;

    fn err(text: &str) -> ConfigError {
        FileConfig::parse(text, Path::new("center.toml")).unwrap_err()
    }

    #[test]
    fn a_good_file_loads() {
        let c = FileConfig::parse(GOOD, Path::new("center.toml")).unwrap();
        assert_eq!(c.center.agents[0].id, "ana");
        assert_eq!(c.center.channels.len(), ChannelDef::builtin().len());
        assert_eq!(c.server_config().max_frame, 65536);
        assert!(matches!(c.durability, Some(Durability::Batched { .. })));
        assert_eq!(c.tokens[0].role, Role::Admin);
    }

    #[test]
    fn a_missing_field_names_file_line_and_field() {
        let text = GOOD.replace("offer_timeout_ms = 20000\n", "");
        let e = err(&text);
        assert_eq!(e.field, "offer_timeout_ms", "{e}");
        assert!(e.to_string().starts_with("center.toml:"), "{e}");
        assert!(e.message.contains("missing field"), "{e}");
        // The [[queues]] table it is missing from.
        assert_eq!(text.lines().nth(e.line - 1).unwrap(), "[[queues]]", "{e}");
    }

    #[test]
    fn a_wrong_type_points_at_the_value() {
        let text = GOOD.replace("max_waiting = 100", "max_waiting = \"lots\"");
        let e = err(&text);
        assert!(
            text.lines()
                .nth(e.line - 1)
                .unwrap()
                .contains("max_waiting"),
            "{e}"
        );
        assert!(e.message.contains("invalid type"), "{e}");
        assert_eq!(e.field, "max_waiting", "{e}");
    }

    #[test]
    fn a_misspelt_key_is_refused_where_it_is() {
        let text = GOOD.replace("max_waiting = 100", "max_waiting = 100\nmax_wiating = 5");
        let e = err(&text);
        assert_eq!(e.field, "queues[0].max_wiating", "{e}");
        assert!(
            text.lines()
                .nth(e.line - 1)
                .unwrap()
                .starts_with("max_wiating"),
            "{e}"
        );
        let e = err(&GOOD.replace("[limits]", "[limits]\nmax_frames = 3"));
        assert!(e.message.contains("max_frames"), "{e}");
        let e = err(&GOOD.replace(
            "skills = [{ skill = \"billing\", proficiency = 7 }]",
            "skills = [{ skill = \"billing\", proficiency = 7, level = 2 }]",
        ));
        assert_eq!(e.field, "agents[0].skills[0].level", "{e}");
    }

    #[test]
    fn engine_validation_is_placed_on_the_entity() {
        let text = GOOD.replace(
            "{ skill = \"billing\", min_proficiency = 3 }",
            "{ skill = \"bill\", min_proficiency = 3 }",
        );
        let e = err(&text);
        assert_eq!(e.field, "queues[0]", "{e}");
        assert!(e.message.contains("unknown skill `bill`"), "{e}");
        assert_eq!(text.lines().nth(e.line - 1).unwrap(), "[[queues]]", "{e}");

        let text = GOOD.replace("offer_timeout_ms = 20000", "offer_timeout_ms = 0");
        let e = err(&text);
        assert_eq!(e.field, "queues[0].offer_timeout_ms", "{e}");
        assert!(
            text.lines()
                .nth(e.line - 1)
                .unwrap()
                .starts_with("offer_timeout_ms"),
            "{e}"
        );

        let text = format!(
            "{GOOD}\n[[agents]]\nid = \"ana\"\nskills = []\ncapacity = {{ total_units = 1, channels = [] }}\n"
        );
        let e = err(&text);
        assert!(e.message.contains("duplicate agent `ana`"), "{e}");
        assert_eq!(e.field, "agents[1]", "{e}");
        assert!(e.line > 30, "{e}");

        let e = err(&GOOD.replace("default_queue = \"billing\"", "default_queue = \"nope\""));
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn errors_inside_lists_and_rules_point_at_their_own_line() {
        let text = format!("{GOOD}\n[[routing.rules]]\nname = \"vip\"\nqueue = \"nowhere\"\n");
        let e = err(&text);
        assert_eq!(e.field, "routing.rules[0].queue", "{e}");
        assert_eq!(
            text.lines().nth(e.line - 1).unwrap(),
            "queue = \"nowhere\"",
            "{e}"
        );
        let text = GOOD.replace(
            "max_waiting = 100",
            "max_waiting = 100\nrelaxation = [\n  { after_ms = 5000, action = \"lower_proficiency\", skill = \"billing\", to = 2 },\n  { after_ms = 1000, action = \"lower_proficiency\", skill = \"billing\", to = 1 },\n]",
        );
        let e = err(&text);
        assert!(e.field.starts_with("queues[0].relaxation[1]"), "{e}");
        assert!(
            text.lines()
                .nth(e.line - 1)
                .unwrap()
                .contains("after_ms = 1000"),
            "{e}"
        );
        // A commented-out key is not where the error is.
        let text = GOOD
            .replace(
                "[limits]\n",
                "[limits]\n# max_frame_bytes = 10 would be too small\n",
            )
            .replace("max_frame_bytes = 65536", "max_frame_bytes = 10");
        let e = err(&text);
        assert!(
            text.lines()
                .nth(e.line - 1)
                .unwrap()
                .starts_with("max_frame_bytes"),
            "{e}"
        );
    }

    #[test]
    fn server_paths_and_token_names_are_checked() {
        let e = err(&GOOD.replace("[server]", "[server]\ncert = \"c.pem\""));
        assert!(e.message.contains("both `cert` and `key`"), "{e}");
        let e = err(&GOOD.replace("name = \"admin\"", "name = \"ad\\tmin\""));
        assert!(e.message.contains("without tabs"), "{e}");
        assert!(parse_hash(&format!("+f{}", "0".repeat(62))).is_none());
    }

    #[test]
    fn tokens_are_checked() {
        let e = err(&GOOD.replace("role = \"admin\"", "role = \"root\""));
        assert!(e.message.contains("unknown variant `root`"), "{e}");
        let e = err(&GOOD.replace("role = \"admin\"", "role = \"agent\"\nagent = \"zoe\""));
        assert!(e.message.contains("unknown agent `zoe`"), "{e}");
        assert_eq!(e.field, "tokens[0].agent");
        let e = err(&GOOD.replace("\"0123456789abcdef-admin\"", "\"short\""));
        assert!(e.message.contains("16 characters"), "{e}");
        let e = err(&GOOD.replace("token = ", "token_sha256 = \"00\"\ntoken = "));
        assert!(e.message.contains("exactly one"), "{e}");
        let e = err(&GOOD.replace(
            "role = \"admin\"",
            "role = \"admin\"\nchannels = [\"chat\"]",
        ));
        assert_eq!(e.field, "tokens[0].channels");
        assert!(e.message.contains("only channel tokens"), "{e}");
        let e = err(&GOOD.replace(
            "role = \"admin\"",
            "role = \"channel\"\nchannels = [\"pigeon\"]",
        ));
        assert!(e.message.contains("unknown channel `pigeon`"), "{e}");
        let c = FileConfig::parse(
            &GOOD.replace(
                "role = \"admin\"",
                "role = \"channel\"\nchannels = [\"chat\"]",
            ),
            Path::new("center.toml"),
        )
        .unwrap();
        assert_eq!(c.tokens[0].channels, vec!["chat".to_string()]);
    }

    #[test]
    fn limits_and_durability_are_checked() {
        let e = err(&GOOD.replace("max_frame_bytes = 65536", "max_frame_bytes = 10"));
        assert_eq!(e.field, "limits.max_frame_bytes");
        assert!(e.line > 0, "{e}");
        let e = err(&GOOD.replace("mode = \"batched\"", "mode = \"later\""));
        assert!(e.message.contains("\"sync\" or \"batched\""), "{e}");
        let c = FileConfig::parse(
            &GOOD.replace(
                "interval_ms = 10",
                "interval_ms = 10\nretain_finished_s = 600",
            ),
            Path::new("center.toml"),
        )
        .unwrap();
        assert_eq!(c.retain_finished_s, Some(600));
        let e = err(&GOOD.replace(
            "interval_ms = 10",
            "interval_ms = 10\nretain_finished_s = 0",
        ));
        assert_eq!(e.field, "durability.retain_finished_s", "{e}");
        let e = err("[[queues]\nid = 1");
        assert_eq!(e.line, 1, "{e}");
    }
}
