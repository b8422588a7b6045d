//! docs/PROTOCOL.md checked against the code.
//!
//! * The **worked example** (between `<!-- worked-example:begin -->` and
//!   `<!-- worked-example:end -->`): its ```` ```hex ```` blocks, in order, are the exact
//!   bytes the real encoder writes for the messages built here; its ```` ```text ````
//!   blocks are those messages as the document renders them, and its
//!   ```` ```text annotated ```` blocks the field-by-field breakdowns. Every client frame
//!   of it decodes as the server decodes requests; every server frame as the Rust client
//!   decodes replies and pushes.
//! * The **named examples** elsewhere (```` ```text example:NAME ````): each is the
//!   rendering of a value of the real type; the request examples decode as the server
//!   decodes requests.
//! * What the framing section says the server reads: fields in any order, optional
//!   fields left out or nil, any integer format, values out of range refused.
//!
//! On a mismatch the test prints the block the document should hold. To print every
//! generated block (to regenerate the document after a deliberate change):
//! `cargo test -p omniroute-transport --test protocol_doc -- --ignored --nocapture`.

use omniroute_actors::conversation::ConversationView;
use omniroute_actors::engine::journal::JournalError;
use omniroute_actors::engine::{
    AgentDef, AssignmentPolicy, AttributeCondition, Candidate, CapacityProfile, CapacityShortfall,
    ChangeKind, ChannelBlock, ChannelCapacity, ChannelDef, ConfigChange, EngineError, Event,
    Exclusion, Explanation, InteractionId, InteractionState, Message, OfferLimitAction, Presence,
    QueueDef, RelaxationAction, RelaxationStep, RescindReason, RoutingRule, Sender, ServiceLevel,
    Settings, SkillDef, SkillLevel, SkillRequirement, TransferTarget, WorkSnapshot,
};
use omniroute_actors::queue::QueueStats;
use omniroute_actors::stats::WindowStats;
use omniroute_actors::transcript::TranscriptEntry;
use omniroute_actors::{AgentView, InboundOutcome, OfferPush, Push, RuntimeError};
use omniroute_transport::frame;
use omniroute_transport::proto::{
    AgentCounts, CenterStats, ClientMsg, Entity, PresenceArg, Role, ServerMsg, ServerPush,
};
use omniroute_transport::server::code_of;
use rmpv::Value;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");

/// The Unix ms the worked example starts at (2025-11-24 16:00:00 UTC).
const T0: u64 = 1_764_000_000_000;

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"))
}

// ---------------------------------------------------------------------------------------
// The worked example.

/// One frame of the worked example.
struct Frame {
    /// `A` (the agent session) or `B` (the channel adapter's session).
    session: char,
    /// Client to server?
    from_client: bool,
    /// What the frame is, in a few words (for the printed regeneration).
    what: &'static str,
    /// The request, for client frames.
    request: Option<ClientMsg>,
    /// Length prefix and body.
    bytes: Vec<u8>,
}

fn client(session: char, what: &'static str, msg: ClientMsg) -> Frame {
    Frame {
        session,
        from_client: true,
        what,
        bytes: frame::encode(&msg),
        request: Some(msg),
    }
}

fn server<T: Serialize>(session: char, what: &'static str, msg: &T) -> Frame {
    Frame {
        session,
        from_client: false,
        what,
        request: None,
        bytes: frame::encode(msg),
    }
}

/// `ok` with `data`, as the server builds it (named MessagePack of the result, read back
/// as a value).
fn ok<T: Serialize>(id: u64, data: &T) -> ServerMsg {
    let bytes = rmp_serde::to_vec_named(data).unwrap();
    ServerMsg::Ok {
        id,
        data: Some(rmpv::decode::read_value(&mut &bytes[..]).unwrap()),
    }
}

fn done(id: u64) -> ServerMsg {
    ServerMsg::Ok { id, data: None }
}

fn system_line(at_ms: u64, text: &str) -> TranscriptEntry {
    TranscriptEntry {
        at_ms,
        from: Sender::System,
        from_id: None,
        channel: String::new(),
        text: text.into(),
        sent_ms: at_ms,
    }
}

fn carol_line() -> TranscriptEntry {
    TranscriptEntry {
        at_ms: T0,
        from: Sender::Customer,
        from_id: None,
        channel: "chat".into(),
        text: "I want the big plan".into(),
        sent_ms: T0,
    }
}

fn ana_line() -> TranscriptEntry {
    TranscriptEntry {
        at_ms: T0 + 9_000,
        from: Sender::Agent,
        from_id: Some("ana".into()),
        channel: "chat".into(),
        text: "Great choice! Setting it up now.".into(),
        sent_ms: T0 + 9_000,
    }
}

fn intent() -> BTreeMap<String, String> {
    BTreeMap::from([("intent".to_string(), "upgrade".to_string())])
}

fn the_offer() -> OfferPush {
    OfferPush {
        interaction: InteractionId(1),
        queue: "sales".into(),
        channel: "chat".into(),
        offer_seq: 1,
        deadline_ms: T0 + 34_000,
        auto_accepted: false,
        customer: "carol".into(),
        attributes: intent(),
        transcript: vec![
            system_line(T0, "created in queue sales"),
            carol_line(),
            system_line(T0 + 4_000, "offered to ana"),
        ],
    }
}

/// The worked example, in the order the document shows it.
fn worked_example() -> Vec<Frame> {
    let i1 = InteractionId(1);
    vec![
        client(
            'A',
            "`hello` (request 1)",
            ClientMsg::Hello {
                id: 1,
                token: "ana-token-0123456789".into(),
            },
        ),
        server(
            'A',
            "`welcome`, the reply to request 1",
            &ServerMsg::Welcome {
                id: 1,
                role: Role::Agent,
                agent: Some("ana".into()),
            },
        ),
        client(
            'B',
            "`hello` (request 1: ids are per session)",
            ClientMsg::Hello {
                id: 1,
                token: "web-token-0123456789".into(),
            },
        ),
        server(
            'B',
            "`welcome`, the reply to request 1 (`agent` nil: not an agent token)",
            &ServerMsg::Welcome {
                id: 1,
                role: Role::Channel,
                agent: None,
            },
        ),
        client(
            'B',
            "`inbound` (request 2): carol writes",
            ClientMsg::Inbound {
                id: 2,
                channel: "chat".into(),
                customer: "carol".into(),
                text: "I want the big plan".into(),
                attributes: intent(),
                queue: None,
                virtual_agent: None,
                interaction: None,
            },
        ),
        server(
            'B',
            "`ok`, the reply to request 2: interaction 1 was created",
            &ok(
                2,
                &InboundOutcome::Created {
                    interaction: InteractionId(1),
                },
            ),
        ),
        client(
            'A',
            "`set_presence` `available` (request 2)",
            ClientMsg::SetPresence {
                id: 2,
                presence: PresenceArg::Available,
                reason: None,
                agent: None,
            },
        ),
        server('A', "`ok`, the reply to request 2", &done(2)),
        server(
            'A',
            "`presence` push",
            &Push::Presence {
                presence: Presence::Available,
            },
        ),
        server(
            'A',
            "`offer` push: interaction 1, to answer by 1764000034000",
            &Push::Offer(Arc::new(the_offer())),
        ),
        client(
            'A',
            "`accept` (request 3)",
            ClientMsg::Accept {
                id: 3,
                interaction: i1,
            },
        ),
        server('A', "`ok`, the reply to request 3", &done(3)),
        server('A', "`assigned` push", &Push::Assigned { interaction: i1 }),
        client(
            'A',
            "`send_message` (request 4)",
            ClientMsg::SendMessage {
                id: 4,
                interaction: i1,
                text: "Great choice! Setting it up now.".into(),
                channel: None,
            },
        ),
        server('A', "`ok`, the reply to request 4", &done(4)),
        server(
            'A',
            "`message` push: ana's message, as logged",
            &Push::Message {
                interaction: i1,
                entry: ana_line(),
            },
        ),
        client(
            'A',
            "`complete` with wrap-up code `sold` (request 5)",
            ClientMsg::Complete {
                id: 5,
                interaction: i1,
                wrap_up_code: Some("sold".into()),
            },
        ),
        server('A', "`ok`, the reply to request 5", &done(5)),
        server(
            'A',
            "`completed` push: wrap-up until 1764000090000",
            &Push::Completed {
                interaction: i1,
                wrap_up_until_ms: Some(T0 + 90_000),
            },
        ),
    ]
}

/// Frames of the worked example that get a field-by-field breakdown.
const ANNOTATED: &[usize] = &[0, 1];

// ---------------------------------------------------------------------------------------
// Rendering: hex, JSON-like text, field-by-field breakdown.

/// 16 bytes per line, lower-case, separated by spaces.
fn hex_block(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(16) {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&hex.join(" "));
        out.push('\n');
    }
    out
}

fn parse_hex(block: &str) -> Vec<u8> {
    block
        .split_whitespace()
        .map(|t| {
            u8::from_str_radix(t, 16)
                .unwrap_or_else(|_| panic!("`{t}` in a hex block is not a hexadecimal byte"))
        })
        .collect()
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One line: `{"key": value, …}`, `[…]`, `"string"`, integers, floats with a point,
/// `true`/`false`, `nil`.
fn flat(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::F32(f) => format!("{f:?}"),
        Value::F64(f) => format!("{f:?}"),
        Value::String(s) => quote(s.as_str().expect("UTF-8 strings only")),
        Value::Binary(b) => format!("<{} bytes of bin>", b.len()),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flat).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(entries) => {
            let items: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", flat(k), flat(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Ext(..) => unreachable!("the protocol has no extension types"),
    }
}

const WIDTH: usize = 88;

/// Like [`flat`], broken over lines (two spaces per level) where a line would pass
/// [`WIDTH`]; `used` is what the current line already holds, `tail` what follows it.
fn pretty(v: &Value, indent: usize, used: usize, tail: usize) -> String {
    let one = flat(v);
    if used + one.len() + tail <= WIDTH {
        return one;
    }
    let pad = " ".repeat(indent + 2);
    let (open, close, items): (&str, &str, Vec<String>) = match v {
        Value::Map(entries) if !entries.is_empty() => (
            "{",
            "}",
            entries
                .iter()
                .enumerate()
                .map(|(n, (k, v))| {
                    let key = format!("{pad}{}: ", flat(k));
                    let comma = usize::from(n + 1 < entries.len());
                    format!("{key}{}", pretty(v, indent + 2, key.len(), comma))
                })
                .collect(),
        ),
        Value::Array(xs) if !xs.is_empty() => (
            "[",
            "]",
            xs.iter()
                .enumerate()
                .map(|(n, x)| {
                    let comma = usize::from(n + 1 < xs.len());
                    format!("{pad}{}", pretty(x, indent + 2, pad.len(), comma))
                })
                .collect(),
        ),
        _ => return one,
    };
    format!(
        "{open}\n{}\n{}{close}",
        items.join(",\n"),
        " ".repeat(indent)
    )
}

fn value_of(body: &[u8]) -> Value {
    let mut rest = body;
    let v = rmpv::decode::read_value(&mut rest).expect("MessagePack");
    assert!(rest.is_empty(), "one value per frame body");
    v
}

/// A value as the document shows it.
fn render<T: Serialize>(value: &T) -> String {
    let bytes = rmp_serde::to_vec_named(value).unwrap();
    pretty(&value_of(&bytes), 0, 0, 0) + "\n"
}

/// The text block of a frame (its body, rendered).
fn render_frame(bytes: &[u8]) -> String {
    pretty(&value_of(&bytes[4..]), 0, 0, 0) + "\n"
}

const COMMENT_AT: usize = 45;

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn commented(out: &mut String, hex: &str, comment: &str) {
    out.push_str(format!("{hex:<COMMENT_AT$}{comment}").trim_end());
    out.push('\n');
}

/// A frame field by field: the length, the map header, then each key and value with
/// what it says.
fn annotate(bytes: &[u8]) -> String {
    let body = &bytes[4..];
    let mut out = String::new();
    commented(
        &mut out,
        &spaced(&bytes[..4]),
        &format!("length {}", body.len()),
    );
    let (header, count) = match body[0] {
        b @ 0x80..=0x8f => (1, usize::from(b & 0x0f)),
        0xde => (3, usize::from(u16::from_be_bytes([body[1], body[2]]))),
        b => panic!("a frame body starts with a map, not {b:#04x}"),
    };
    commented(
        &mut out,
        &spaced(&body[..header]),
        &format!("map of {count}"),
    );
    let mut rest = &body[header..];
    for _ in 0..count {
        let at = rest;
        let key = rmpv::decode::read_value(&mut rest).unwrap();
        let key_bytes = &at[..at.len() - rest.len()];
        let at = rest;
        let value = rmpv::decode::read_value(&mut rest).unwrap();
        let value_bytes = &at[..at.len() - rest.len()];
        let both = format!("{}  {}", spaced(key_bytes), spaced(value_bytes));
        let says = format!("{}: {}", flat(&key), flat(&value));
        if both.len() < COMMENT_AT {
            commented(&mut out, &both, &says);
        } else {
            commented(&mut out, &spaced(key_bytes), &format!("{}:", flat(&key)));
            for (n, chunk) in value_bytes.chunks(14).enumerate() {
                let comment = if n == 0 { flat(&value) } else { String::new() };
                commented(&mut out, &spaced(chunk), &format!("  {comment}"));
            }
        }
    }
    assert!(rest.is_empty());
    out
}

// ---------------------------------------------------------------------------------------
// Reading the document.

/// The fenced blocks of `text`, in order: (info string, content).
fn fenced(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_string(), String::new()));
                }
            }
            Some((_, content)) => {
                if line.trim_end() == "```" {
                    blocks.push(open.take().unwrap());
                } else {
                    content.push_str(line);
                    content.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    blocks
}

fn worked_section(doc: &str) -> &str {
    let begin = "<!-- worked-example:begin -->";
    let end = "<!-- worked-example:end -->";
    let from = doc
        .find(begin)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no `{begin}`"));
    let to = doc
        .find(end)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no `{end}`"));
    &doc[from + begin.len()..to]
}

fn print_frame(n: usize, f: &Frame) -> String {
    let arrow = if f.from_client {
        "client → server"
    } else {
        "server → client"
    };
    let mut out = format!(
        "**{}.** session {}, {arrow}: {}\n\n```text\n{}```\n\n```hex\n{}```\n",
        n + 1,
        f.session,
        f.what,
        render_frame(&f.bytes),
        hex_block(&f.bytes)
    );
    if ANNOTATED.contains(&n) {
        out.push_str(&format!("\n```text annotated\n{}```\n", annotate(&f.bytes)));
    }
    out
}

#[test]
fn the_worked_example_is_what_the_encoders_write_byte_for_byte() {
    let doc = doc();
    let blocks = fenced(worked_section(&doc));
    let frames = worked_example();
    let of = |info: &str| -> Vec<&String> {
        blocks
            .iter()
            .filter(|(i, _)| i == info)
            .map(|(_, c)| c)
            .collect()
    };
    let (hex, text, annotated) = (of("hex"), of("text"), of("text annotated"));
    let everything = || {
        frames
            .iter()
            .enumerate()
            .map(|(n, f)| print_frame(n, f))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        (hex.len(), text.len(), annotated.len()),
        (frames.len(), frames.len(), ANNOTATED.len()),
        "the worked example of PROTOCOL.md should have {} hex blocks, {} text blocks and \
         {} annotated blocks; its frames are:\n\n{}",
        frames.len(),
        frames.len(),
        ANNOTATED.len(),
        everything()
    );
    let mut wrong = Vec::new();
    for (n, f) in frames.iter().enumerate() {
        if parse_hex(hex[n]) != f.bytes {
            wrong.push(format!(
                "frame {} ({}): the hex block should be\n```hex\n{}```",
                n + 1,
                f.what,
                hex_block(&f.bytes)
            ));
        }
        if *text[n] != render_frame(&f.bytes) {
            wrong.push(format!(
                "frame {} ({}): the text block should be\n```text\n{}```",
                n + 1,
                f.what,
                render_frame(&f.bytes)
            ));
        }
    }
    for (k, &n) in ANNOTATED.iter().enumerate() {
        let want = annotate(&frames[n].bytes);
        if *annotated[k] != want {
            wrong.push(format!(
                "frame {}: the annotated block should be\n```text annotated\n{want}```",
                n + 1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn the_worked_examples_frames_decode_as_the_server_and_the_client_decode_them() {
    for (n, f) in worked_example().iter().enumerate() {
        let len = u32::from_be_bytes(f.bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.bytes.len() - 4, "frame {}: length prefix", n + 1);
        let body = &f.bytes[4..];
        if let Some(request) = &f.request {
            let decoded = frame::decode::<ClientMsg>(body, ClientMsg::TYPES)
                .unwrap_or_else(|e| panic!("frame {}: the server refuses it: {e}", n + 1));
            assert_eq!(&decoded, request, "frame {}", n + 1);
            continue;
        }
        // What the Rust client does: replies by `type`, the rest are pushes.
        let (kind, _) = frame::head(body).unwrap();
        if matches!(kind.as_str(), "welcome" | "ok" | "error") {
            rmp_serde::from_slice::<ServerMsg>(body)
                .unwrap_or_else(|e| panic!("frame {}: not a reply: {e}", n + 1));
        } else {
            rmp_serde::from_slice::<Push>(body)
                .unwrap_or_else(|e| panic!("frame {}: not a push: {e}", n + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Named examples.

fn put(id: u64, entity: Entity, position: Option<u32>) -> ClientMsg {
    ClientMsg::Put {
        id,
        entity: Box::new(entity),
        position,
    }
}

fn requests() -> Vec<(&'static str, ClientMsg)> {
    vec![
        (
            "put-channel",
            put(
                10,
                Entity::Channel(ChannelDef {
                    name: "video".into(),
                    default_units: 5,
                    auto_accept: false,
                }),
                None,
            ),
        ),
        (
            "put-skill",
            put(
                11,
                Entity::Skill(SkillDef {
                    name: "spanish".into(),
                    is_language: true,
                }),
                None,
            ),
        ),
        (
            "put-agent",
            put(
                12,
                Entity::Agent(AgentDef {
                    id: "bob".into(),
                    name: "Bob Martin".into(),
                    skills: vec![
                        SkillLevel {
                            skill: "sales".into(),
                            proficiency: 7,
                        },
                        SkillLevel {
                            skill: "spanish".into(),
                            proficiency: 9,
                        },
                    ],
                    capacity: CapacityProfile {
                        total_units: 10,
                        channels: vec![
                            ChannelCapacity {
                                channel: "chat".into(),
                                units: None,
                                max_concurrent: Some(2),
                            },
                            ChannelCapacity {
                                channel: "voice".into(),
                                units: Some(10),
                                max_concurrent: None,
                            },
                        ],
                        blocking: vec![ChannelBlock {
                            while_on: "voice".into(),
                            blocks: vec!["chat".into()],
                        }],
                    },
                }),
                None,
            ),
        ),
        (
            "put-queue",
            put(
                13,
                Entity::Queue(QueueDef {
                    id: "sales-es".into(),
                    channels: vec!["chat".into(), "voice".into()],
                    required_skills: vec![SkillRequirement {
                        skill: "spanish".into(),
                        min_proficiency: 5,
                    }],
                    optional_skills: vec![SkillRequirement {
                        skill: "sales".into(),
                        min_proficiency: 3,
                    }],
                    base_priority: 0,
                    aging_millipoints_per_second: 1_000,
                    policy: AssignmentPolicy::MostSkilled,
                    offer_timeout_ms: 20_000,
                    max_offers: 3,
                    on_offer_limit: OfferLimitAction::Transfer {
                        queue: "sales".into(),
                    },
                    wrap_up_ms: 30_000,
                    wrap_up_codes: vec!["sold".into(), "no_sale".into()],
                    service_level: ServiceLevel {
                        percent: 80,
                        threshold_ms: 20_000,
                    },
                    max_waiting: 500,
                    relaxation: vec![
                        RelaxationStep {
                            after_ms: 30_000,
                            action: RelaxationAction::DropOptionalSkills,
                        },
                        RelaxationStep {
                            after_ms: 60_000,
                            action: RelaxationAction::LowerProficiency {
                                skill: "spanish".into(),
                                to: 3,
                            },
                        },
                        RelaxationStep {
                            after_ms: 120_000,
                            action: RelaxationAction::Overflow {
                                queue: "sales".into(),
                            },
                        },
                    ],
                }),
                None,
            ),
        ),
        (
            "put-rule",
            put(
                14,
                Entity::Rule(RoutingRule {
                    name: "spanish sales".into(),
                    channels: vec!["chat".into(), "voice".into()],
                    conditions: vec![
                        AttributeCondition::OneOf {
                            key: "language".into(),
                            values: vec!["es".into(), "es-MX".into()],
                        },
                        AttributeCondition::Equals {
                            key: "intent".into(),
                            value: "upgrade".into(),
                        },
                        AttributeCondition::Exists {
                            key: "account".into(),
                        },
                    ],
                    queue: "sales-es".into(),
                    priority: Some(5),
                }),
                Some(0),
            ),
        ),
        (
            "put-settings",
            put(
                15,
                Entity::Settings(Settings {
                    max_consecutive_misses: 3,
                    node_id: 0,
                }),
                None,
            ),
        ),
    ]
}

fn window(window_ms: u64, answered: u64, in_threshold: u64, abandoned: u64) -> WindowStats {
    let ended = answered + abandoned;
    let ratio = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
    WindowStats {
        window_ms,
        answered,
        answered_in_threshold: in_threshold,
        abandoned,
        service_level: ratio(in_threshold, ended),
        average_speed_of_answer_ms: (answered > 0).then_some(9_125.5),
        abandon_rate: ratio(abandoned, ended),
    }
}

fn agent_view() -> AgentView {
    AgentView {
        agent: "ana".into(),
        presence: Presence::Available,
        work: vec![
            WorkSnapshot {
                interaction: InteractionId(1),
                channel: "chat".into(),
                units: 3,
                phase: "assigned".into(),
            },
            WorkSnapshot {
                interaction: InteractionId(2),
                channel: "chat".into(),
                units: 3,
                phase: "offered".into(),
            },
        ],
        offers: vec![(InteractionId(2), T0 + 47_000)],
        consecutive_misses: 0,
        sessions: 1,
        grace_until_ms: None,
    }
}

fn message_from_carol() -> Message {
    Message {
        from: Sender::Customer,
        from_id: None,
        channel: "chat".into(),
        text: "I want the big plan".into(),
        sent_ms: T0,
    }
}

/// Every engine event, one of each (the `events` of an `event` push).
fn events() -> Vec<Event> {
    let i = InteractionId(1);
    let a = || Arc::<str>::from("ana");
    let q = || Arc::<str>::from("sales");
    vec![
        Event::Configured {
            changes: vec![ConfigChange {
                kind: "queue".into(),
                id: "sales-es".into(),
                change: ChangeKind::Added,
            }],
        },
        Event::Created {
            interaction: i,
            queue: q(),
            channel: "chat".into(),
            priority: 0,
            rule: None,
        },
        Event::Queued {
            interaction: i,
            queue: q(),
            next_relaxation: Some((0, T0 + 30_000)),
            preferred_fallback_ms: None,
        },
        Event::Offered {
            interaction: i,
            agent: a(),
            queue: q(),
            channel: "chat".into(),
            offer_seq: 1,
            deadline_ms: T0 + 34_000,
            auto_accepted: false,
        },
        Event::Accepted {
            interaction: i,
            agent: a(),
        },
        Event::Rejected {
            interaction: i,
            agent: a(),
        },
        Event::OfferTimedOut {
            interaction: i,
            agent: a(),
        },
        Event::OfferRescinded {
            interaction: i,
            agent: a(),
            reason: RescindReason::CustomerLeft,
        },
        Event::Completed {
            interaction: i,
            agent: a(),
            wrap_up_code: Some("sold".into()),
            wrap_up_until_ms: Some(T0 + 90_000),
        },
        Event::WrapUpEnded {
            interaction: i,
            agent: a(),
        },
        Event::Abandoned {
            interaction: i,
            queue: q(),
            previous_state: InteractionState::Queued,
        },
        Event::Transferred {
            interaction: i,
            from_agent: Some(a()),
            to: TransferTarget::Queue("billing".into()),
        },
        Event::Relaxed {
            interaction: i,
            queue: q(),
            step: 0,
        },
        Event::PreferredFallback { interaction: i },
        Event::OfferLimitReached {
            interaction: i,
            queue: q(),
            offers: 3,
        },
        Event::MessagePosted {
            interaction: i,
            message: message_from_carol(),
        },
        Event::PresenceChanged {
            agent: a(),
            presence: Presence::Away {
                reason: "missed offers".into(),
            },
        },
    ]
}

/// Every agent push but `offer` (the worked example shows one), one of each.
fn pushes() -> Vec<Push> {
    let i = InteractionId(1);
    vec![
        Push::OfferEnded {
            interaction: i,
            reason: "timed_out".into(),
        },
        Push::Assigned { interaction: i },
        Push::Message {
            interaction: i,
            entry: carol_line(),
        },
        Push::Completed {
            interaction: i,
            wrap_up_until_ms: None,
        },
        Push::WrapUpEnded { interaction: i },
        Push::TransferredAway {
            interaction: i,
            to: TransferTarget::Agent("bob".into()),
        },
        Push::Presence {
            presence: Presence::Available,
        },
        Push::Presence {
            presence: Presence::Away {
                reason: "lunch".into(),
            },
        },
        Push::Presence {
            presence: Presence::Offline,
        },
        Push::Lagged { missed: 17 },
    ]
}

fn lines<T: Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|x| {
            let bytes = rmp_serde::to_vec_named(x).unwrap();
            flat(&value_of(&bytes)) + "\n"
        })
        .collect()
}

/// Every named example: its name and its text.
fn named() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = requests()
        .into_iter()
        .map(|(name, msg)| (name.to_string(), render(&msg)))
        .collect();
    let not_yours = RuntimeError::Journal(JournalError::Engine(EngineError::NotAssignedToAgent {
        interaction: InteractionId(1),
        agent: "bob".into(),
    }));
    let malformed = frame::decode::<ClientMsg>(&[0xc1], ClientMsg::TYPES).unwrap_err();
    let conversation = ConversationView {
        interaction: InteractionId(1),
        customer: "carol".into(),
        channel: "chat".into(),
        queue: "sales".into(),
        attributes: intent(),
        state: InteractionState::WrapUp,
        agent: Some("ana".into()),
        participants: ["agent:ana".to_string(), "customer".to_string()].into(),
        channels: vec!["chat".into()],
        transcript: vec![
            system_line(T0, "created in queue sales"),
            carol_line(),
            system_line(T0 + 4_000, "offered to ana"),
            system_line(T0 + 6_000, "accepted by ana"),
            ana_line(),
            system_line(T0 + 60_000, "completed by ana (sold)"),
        ],
    };
    let explanation = Explanation {
        interaction: Some(InteractionId(7)),
        state: InteractionState::Queued,
        queue: "sales".into(),
        policy: AssignmentPolicy::LongestIdle,
        rank_meaning:
            "[optional skills missing (if preferred), work in hand, last work ended at ms, 0]"
                .into(),
        candidates: vec![
            Candidate {
                agent: "bob".into(),
                rank: Some([0, 0, T0 - 50_000, 0]),
                via_overflow_queue: None,
                excluded: None,
            },
            Candidate {
                agent: "ana".into(),
                rank: None,
                via_overflow_queue: None,
                excluded: Some(Exclusion::Capacity {
                    shortfall: CapacityShortfall::NotEnoughUnits { needed: 3, free: 1 },
                }),
            },
            Candidate {
                agent: "dan".into(),
                rank: None,
                via_overflow_queue: None,
                excluded: Some(Exclusion::Presence {
                    presence: Presence::Away {
                        reason: "lunch".into(),
                    },
                }),
            },
        ],
        winner: Some("bob".into()),
        summary: "1 eligible of 3 agents; `bob` ranks first under LongestIdle with \
                  [0, 0, 1763999950000, 0]"
            .into(),
    };
    let stats = CenterStats {
        at_ms: T0 + 120_000,
        queues: vec![QueueStats {
            queue: "sales".into(),
            at_ms: T0 + 120_000,
            depth: 2,
            max_waiting: 10_000,
            longest_wait_ms: 41_250,
            service_level_threshold_ms: 20_000,
            service_level_target_percent: 80,
            windows: vec![
                window(300_000, 0, 0, 0),
                window(900_000, 9, 8, 1),
                window(3_600_000, 30, 24, 2),
            ],
        }],
        agents: AgentCounts {
            offline: 3,
            idle: 1,
            busy: 2,
            wrap_up: 1,
            away: 1,
        },
        occupancy_percent: 62.5,
        live_interactions: 4,
    };
    let event = ServerPush::Event {
        seq: 42,
        at_ms: T0,
        command: "submit".into(),
        events: vec![
            Event::Created {
                interaction: InteractionId(1),
                queue: "sales".into(),
                channel: "chat".into(),
                priority: 0,
                rule: None,
            },
            Event::Queued {
                interaction: InteractionId(1),
                queue: "sales".into(),
                next_relaxation: None,
                preferred_fallback_ms: None,
            },
        ],
    };
    out.extend([
        (
            "error".to_string(),
            render(&ServerMsg::Error {
                id: Some(5),
                code: code_of(&not_yours).into(),
                message: not_yours.to_string(),
            }),
        ),
        (
            "frame-error".into(),
            render(&ServerMsg::Error {
                id: None,
                code: malformed.code().as_str().into(),
                message: malformed.to_string(),
            }),
        ),
        (
            "put-reply".into(),
            render(&ok(
                13,
                &vec![ConfigChange {
                    kind: "queue".into(),
                    id: "sales-es".into(),
                    change: ChangeKind::Added,
                }],
            )),
        ),
        ("conversation".into(), render(&ok(6, &conversation))),
        ("agent-view".into(), render(&ok(7, &agent_view()))),
        ("explain".into(), render(&ok(8, &explanation))),
        ("stats".into(), render(&ServerPush::Stats(stats))),
        ("event".into(), render(&event)),
        ("events".into(), lines(&events())),
        ("pushes".into(), lines(&pushes())),
    ]);
    out
}

#[test]
fn the_named_examples_are_renderings_of_the_real_types() {
    let doc = doc();
    let found: Vec<(String, String)> = fenced(&doc)
        .into_iter()
        .filter_map(|(info, content)| {
            info.strip_prefix("text example:")
                .map(|name| (name.trim().to_string(), content))
        })
        .collect();
    let mut wrong = Vec::new();
    for (name, want) in named() {
        match found.iter().filter(|(n, _)| *n == name).count() {
            1 => {}
            n => wrong.push(format!(
                "PROTOCOL.md should hold the example `{name}` once, not {n} times:\n\
                 ```text example:{name}\n{want}```"
            )),
        }
        if let Some((_, got)) = found.iter().find(|(n, _)| *n == name)
            && *got != want
        {
            wrong.push(format!(
                "the example `{name}` should be\n```text example:{name}\n{want}```"
            ));
        }
    }
    let known: Vec<String> = named().into_iter().map(|(n, _)| n).collect();
    for (name, _) in &found {
        if !known.contains(name) {
            wrong.push(format!(
                "PROTOCOL.md names an example `{name}` this test does not know"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn the_request_examples_decode_as_the_server_decodes_them() {
    for (name, msg) in requests() {
        let bytes = frame::encode(&msg);
        let decoded = frame::decode::<ClientMsg>(&bytes[4..], ClientMsg::TYPES)
            .unwrap_or_else(|e| panic!("{name}: the server refuses it: {e}"));
        assert_eq!(decoded, msg, "{name}");
    }
}

/// Encodes a map with string keys, as a client in another language may write it.
fn map(entries: &[(&str, Value)]) -> Vec<u8> {
    let v = Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    out
}

#[test]
fn what_the_framing_section_says_the_server_reads_holds() {
    // `id` before `type`, `reason` and `agent` left out.
    let body = map(&[
        ("id", Value::from(9)),
        ("type", Value::from("set_presence")),
        ("presence", Value::from("away")),
    ]);
    assert_eq!(
        frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap(),
        ClientMsg::SetPresence {
            id: 9,
            presence: PresenceArg::Away,
            reason: None,
            agent: None,
        }
    );
    // `attributes`, `queue`, `virtual_agent` left out; an unknown field ignored.
    let body = map(&[
        ("type", Value::from("inbound")),
        ("id", Value::from(10)),
        ("channel", Value::from("chat")),
        ("customer", Value::from("carol")),
        ("text", Value::from("hi")),
        ("queue", Value::Nil),
        ("x-trace", Value::from("abc")),
    ]);
    assert!(matches!(
        frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap(),
        ClientMsg::Inbound { id: 10, queue: None, ref attributes, .. } if attributes.is_empty()
    ));
    // A wider integer encoding than needed is fine (uint 64 for `id` 1).
    let mut body = map(&[("type", Value::from("get_config"))]);
    body[0] += 1; // map of 2
    body.extend_from_slice(&[0xa2, b'i', b'd', 0xcf, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(
        frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap(),
        ClientMsg::GetConfig { id: 1 }
    );
    // `attributes: nil` is not a map: a bad field.
    let body = map(&[
        ("type", Value::from("inbound")),
        ("id", Value::from(11)),
        ("channel", Value::from("chat")),
        ("customer", Value::from("carol")),
        ("text", Value::from("hi")),
        ("attributes", Value::Nil),
    ]);
    let e = frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap_err();
    assert_eq!(e.code().as_str(), "bad_field", "{e}");
    // A string `id` makes the frame malformed (its head cannot be read).
    let body = map(&[
        ("type", Value::from("get_config")),
        ("id", Value::from("1")),
    ]);
    let e = frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap_err();
    assert_eq!(e.code().as_str(), "malformed_frame", "{e}");
    // A signed format holding a non-negative value is fine (int 8 for `interaction` 5).
    let mut body = map(&[("type", Value::from("accept")), ("id", Value::from(2))]);
    body[0] += 1; // map of 3
    body.extend_from_slice(&[0xab]);
    body.extend_from_slice(b"interaction");
    body.extend_from_slice(&[0xd0, 5]);
    assert_eq!(
        frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap(),
        ClientMsg::Accept {
            id: 2,
            interaction: InteractionId(5),
        }
    );
    // A value out of its field's range is a bad field (proficiency is a `u8`).
    let Some((_, ClientMsg::Put { entity, .. })) = requests()
        .into_iter()
        .find(|(name, _)| *name == "put-agent")
    else {
        panic!("put-agent")
    };
    let mut v = value_of(
        &rmp_serde::to_vec_named(&ClientMsg::Put {
            id: 3,
            entity,
            position: None,
        })
        .unwrap(),
    );
    let proficiency = v["entity"]["skills"][0]["proficiency"].clone();
    assert_eq!(proficiency, Value::from(7));
    if let Value::Map(entries) = &mut v
        && let Some((_, Value::Map(entity))) = entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some("entity"))
        && let Some((_, Value::Array(skills))) = entity
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some("skills"))
        && let Value::Map(level) = &mut skills[0]
        && let Some((_, p)) = level
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some("proficiency"))
    {
        *p = Value::from(300);
    }
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &v).unwrap();
    let e = frame::decode::<ClientMsg>(&body, ClientMsg::TYPES).unwrap_err();
    assert_eq!(e.code().as_str(), "bad_field", "{e}");
}

#[test]
#[ignore = "prints the generated blocks, to regenerate PROTOCOL.md"]
fn print_the_generated_blocks() {
    println!("<!-- worked-example:begin -->\n");
    for (n, f) in worked_example().iter().enumerate() {
        println!("{}", print_frame(n, f));
    }
    println!("<!-- worked-example:end -->\n");
    for (name, text) in named() {
        println!("```text example:{name}\n{text}```\n");
    }
}
