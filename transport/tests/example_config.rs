//! `omniroute.example.toml` loads and holds what its comments and docs/CONFIG.md promise;
//! the error messages docs/CONFIG.md quotes are the ones the parser really gives.

use omniroute_actors::RuntimeConfig;
use omniroute_actors::engine::journal::{Durability, JournalConfig};
use omniroute_actors::engine::{AssignmentPolicy, AttributeCondition, OfferLimitAction};
use omniroute_actors::engine::{RelaxationAction, ServiceLevel};
use omniroute_transport::config::{FileConfig, Limits};
use omniroute_transport::proto::Role;
use omniroute_transport::server::{self, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../omniroute.example.toml")
}

fn load() -> FileConfig {
    FileConfig::load(&example_path()).unwrap_or_else(|e| panic!("the example is refused: {e}"))
}

#[test]
fn the_example_loads_with_what_it_promises() {
    let c = load();
    let center = &c.center;

    // Channels: at least voice, chat, email and WhatsApp; one auto-accepted.
    for name in ["voice", "chat", "email", "whatsapp"] {
        assert!(
            center.channels.iter().any(|ch| ch.name == name),
            "no {name} channel"
        );
    }
    assert!(center.channels.iter().any(|ch| ch.auto_accept));

    // Skills: 3 or 4, one a language.
    assert!((3..=4).contains(&center.skills.len()));
    assert!(center.skills.iter().any(|s| s.is_language));

    // Agents: 5 to 8, with different capacity profiles, a voice-blocks-chat rule and a
    // per-channel maximum.
    assert!((5..=8).contains(&center.agents.len()));
    let mut totals: Vec<u16> = center
        .agents
        .iter()
        .map(|a| a.capacity.total_units)
        .collect();
    totals.sort_unstable();
    totals.dedup();
    assert!(totals.len() > 1, "every agent has the same budget");
    assert!(center.agents.iter().any(|a| {
        a.capacity
            .blocking
            .iter()
            .any(|b| b.while_on == "voice" && b.blocks.iter().any(|x| x == "chat"))
    }));
    assert!(
        center
            .agents
            .iter()
            .flat_map(|a| &a.capacity.channels)
            .any(|ch| ch.max_concurrent.is_some())
    );
    assert!(
        center
            .agents
            .iter()
            .flat_map(|a| &a.capacity.channels)
            .any(|ch| ch.units.is_some())
    );

    // Queues: 3 or 4, every policy, wrap-up codes, service levels of their own, each
    // relaxation action, an on_offer_limit transfer.
    assert!((3..=4).contains(&center.queues.len()));
    for policy in AssignmentPolicy::ALL {
        assert!(
            center.queues.iter().any(|q| q.policy == policy),
            "no queue is {policy:?}"
        );
    }
    assert!(center.queues.iter().any(|q| !q.wrap_up_codes.is_empty()));
    assert!(center.queues.iter().any(|q| q.wrap_up_ms > 0));
    assert!(
        center
            .queues
            .iter()
            .any(|q| q.service_level != ServiceLevel::default())
    );
    let actions: Vec<&RelaxationAction> = center
        .queues
        .iter()
        .flat_map(|q| &q.relaxation)
        .map(|s| &s.action)
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, RelaxationAction::LowerProficiency { .. }))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, RelaxationAction::DropOptionalSkills))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, RelaxationAction::Overflow { .. }))
    );
    assert!(
        center.queues.iter().any(
            |q| matches!(q.on_offer_limit, OfferLimitAction::Transfer { .. }) && q.max_offers > 0
        )
    );

    // Routing: a default queue, a rule with each condition op, a rule on channels.
    assert_eq!(center.routing.default_queue.as_deref(), Some("general"));
    let conditions: Vec<&AttributeCondition> = center
        .routing
        .rules
        .iter()
        .flat_map(|r| &r.conditions)
        .collect();
    assert!(
        conditions
            .iter()
            .any(|c| matches!(c, AttributeCondition::Equals { .. }))
    );
    assert!(
        conditions
            .iter()
            .any(|c| matches!(c, AttributeCondition::OneOf { .. }))
    );
    assert!(
        conditions
            .iter()
            .any(|c| matches!(c, AttributeCondition::Exists { .. }))
    );
    assert!(center.routing.rules.iter().any(|r| !r.channels.is_empty()));
    assert!(center.routing.rules.iter().any(|r| r.priority.is_some()));

    // Tokens: every role; hashed and clear ones; agent tokens bound to agents.
    for role in [Role::Admin, Role::Supervisor, Role::Agent, Role::Channel] {
        assert!(c.tokens.iter().any(|t| t.role == role), "no {role:?} token");
    }
    assert!(c.tokens.iter().any(|t| t.token_sha256.is_some()));
    assert!(c.tokens.iter().any(|t| t.token.is_some()));
    for t in c.tokens.iter().filter(|t| t.role == Role::Agent) {
        let agent = t.agent.as_deref().expect("agent tokens name their agent");
        assert!(center.agents.iter().any(|a| a.id == agent));
    }
    // The comment says which token the admin hash is of.
    let admin = c.tokens.iter().find(|t| t.role == Role::Admin).unwrap();
    assert_eq!(admin.hash(), server::hash("example-admin-token-change-me"));

    // Settings: the defaults, written out.
    assert_eq!(center.settings, Default::default());
}

/// `[limits]` and `[durability]` show every field, each with its default value.
#[test]
fn the_example_shows_every_limit_at_its_default() {
    let c = load();
    // Naming every field: a new limit fails to compile here until the example (and
    // docs/CONFIG.md) show it.
    let Limits {
        max_frame_bytes,
        max_connections,
        sessions_per_token,
        requests_in_flight,
        max_live_interactions,
        session_buffer,
        call_timeout_ms,
        switch_window_ms,
        return_to_agent_ms,
        disconnect_grace_ms,
        restart_grace_ms,
        event_buffer,
    } = c.limits.clone();
    let runtime = RuntimeConfig::default();
    let server = ServerConfig::default();
    let journal = JournalConfig::default();
    assert_eq!(max_frame_bytes, Some(server.max_frame));
    assert_eq!(max_connections, Some(server.max_connections));
    assert_eq!(sessions_per_token, Some(server.sessions_per_token));
    assert_eq!(requests_in_flight, Some(server.requests_in_flight));
    assert_eq!(requests_in_flight, Some(runtime.session_max_in_flight));
    assert_eq!(max_live_interactions, Some(runtime.max_live_interactions));
    assert_eq!(session_buffer, Some(runtime.session_buffer));
    assert_eq!(
        call_timeout_ms.map(Duration::from_millis),
        Some(runtime.call_timeout)
    );
    assert_eq!(switch_window_ms, Some(runtime.switch_window_ms));
    assert_eq!(return_to_agent_ms, Some(runtime.return_to_agent_ms));
    assert_eq!(disconnect_grace_ms, Some(runtime.disconnect_grace_ms));
    assert_eq!(restart_grace_ms, Some(journal.reconnect_grace_ms));
    assert_eq!(event_buffer, Some(runtime.bus_capacity));

    assert_eq!(c.durability, Some(Durability::Sync));
    assert_eq!(journal.durability, Durability::Sync);
    assert_eq!(c.snapshot_every, Some(journal.snapshot_every));

    // [server]: the default address; the data directory next to the file.
    assert_eq!(
        c.server.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 4433)))
    );
    assert_eq!(
        c.server.data_dir,
        Some(example_path().parent().unwrap().join("omniroute-data"))
    );
}

/// The error examples of docs/CONFIG.md: the same edit of the example, the line quoted.
/// (`replace` must occur exactly once in the example.)
const DOC_ERRORS: &[(&str, &str, &str)] = &[
    // A missing field: the billing queue without offer_timeout_ms.
    (
        "offer_timeout_ms = 15_000\n",
        "",
        "omniroute.example.toml:250:1: offer_timeout_ms: missing field `offer_timeout_ms`",
    ),
    // A wrong type.
    (
        "max_waiting = 500",
        "max_waiting = \"lots\"",
        "omniroute.example.toml:258:15: max_waiting: invalid type: string \"lots\", expected u32",
    ),
    // A misspelt key in an entity.
    (
        "wrap_up_codes = [\"resolved\", \"refund_issued\", \"escalated\", \"callback_booked\"]",
        "wrap_up_code = [\"resolved\", \"refund_issued\", \"escalated\", \"callback_booked\"]",
        "omniroute.example.toml:256:1: queues[0].wrap_up_code: unknown field `wrap_up_code`; \
         see docs/CONFIG.md for the fields of queues",
    ),
    // A misspelt key in [limits].
    (
        "session_buffer = 1_024",
        "sesion_buffer = 1_024",
        "omniroute.example.toml:40:1: sesion_buffer: unknown field `sesion_buffer`, expected one \
         of `max_frame_bytes`, `max_connections`, `sessions_per_token`, `requests_in_flight`, \
         `max_live_interactions`, `session_buffer`, `call_timeout_ms`, `switch_window_ms`, \
         `return_to_agent_ms`, `disconnect_grace_ms`, `restart_grace_ms`, `event_buffer`",
    ),
    // An unknown skill in a queue.
    (
        "{ skill = \"tech\", min_proficiency = 5 }",
        "{ skill = \"technical\", min_proficiency = 5 }",
        "omniroute.example.toml:290:1: queues[2]: unknown skill `technical` (referenced by queue \
         `tech` required_skills)",
    ),
    // A value the engine refuses.
    (
        "offer_timeout_ms = 30_000",
        "offer_timeout_ms = 0",
        "omniroute.example.toml:297:1: queues[2].offer_timeout_ms: invalid configuration: queue \
         `tech`.offer_timeout_ms: must be at least 1 ms",
    ),
    // A token too short.
    (
        "token = \"example-channel-token-change-me\"",
        "token = \"s3cret\"",
        "omniroute.example.toml:385:1: tokens[2].token: a token has at least 16 characters",
    ),
    // A role that does not exist.
    (
        "role = \"channel\"",
        "role = \"adapter\"",
        "omniroute.example.toml:384:8: role: unknown variant `adapter`, expected one of `admin`, \
         `supervisor`, `agent`, `channel`",
    ),
    // A durability mode that does not exist.
    (
        "mode = \"sync\"",
        "mode = \"fast\"",
        "omniroute.example.toml:55:1: durability.mode: expected \"sync\" or \"batched\", found \
         \"fast\"",
    ),
    // A TOML syntax error.
    (
        "[[queues]]\nid = \"tech\"",
        "[[queues]\nid = \"tech\"",
        "omniroute.example.toml:290:10: unclosed array table, expected `]`",
    ),
];

/// The shorter quotes of docs/CONFIG.md ("other messages"): `FIELD: MESSAGE` only.
const DOC_MESSAGES: &[(&str, &str, &str)] = &[
    (
        "token_sha256 = \"2ceb",
        "token_sha256 = \"2ce",
        "tokens[0].token_sha256: expected 64 hexadecimal digits (the SHA-256 of the token)",
    ),
    (
        "agent = \"chloe\"\n",
        "",
        "tokens[4].agent: an agent token names its agent (`agent = \"…\"`)",
    ),
    (
        "agent = \"chloe\"\n",
        "agent = \"zoe\"\n",
        "tokens[4].agent: unknown agent `zoe`: not in [[agents]]",
    ),
    (
        "channels = [{ channel = \"chat\", max_concurrent = 2 }]",
        "channels = [{ channel = \"web\", max_concurrent = 2 }]",
        "agents[6]: unknown channel `web` (referenced by agent `gus` capacity)",
    ),
    (
        "{ skill = \"billing\", proficiency = 8 }",
        "{ skill = \"billing\", proficiency = 11 }",
        "agents[0].skills: proficiency 11 out of range 1-10 for skill `billing` (agent `ana` skills)",
    ),
    (
        "channels = [\"voice\", \"callback\"]\nconditions",
        "channels = [\"phone\", \"callback\"]\nconditions",
        "routing.rules[0]: unknown channel `phone` (referenced by routing rule 0 \
         (`vip billing by phone`))",
    ),
    (
        "default_queue = \"general\"",
        "default_queue = \"genral\"",
        "routing.default_queue: unknown queue `genral`",
    ),
    (
        "\"escalated\", \"callback_booked\"]",
        "\"escalated\", \"escalated\"]",
        "queues[0].wrap_up_codes: invalid configuration: queue `billing`.wrap_up_codes: \
         `escalated` is empty or listed twice",
    ),
    (
        "mode = \"sync\"",
        "mode = \"sync\"\ninterval_ms = 5",
        "durability.interval_ms: interval_ms applies to mode = \"batched\" only",
    ),
    (
        "max_frame_bytes = 1_048_576",
        "max_frame_bytes = 100",
        "limits.max_frame_bytes: expected 1024 to 67108864 bytes, found 100",
    ),
];

/// The example with `replace` (which must occur once) replaced, and the parser's error.
fn broken(example: &str, replace: &str, with: &str) -> String {
    assert_eq!(
        example.matches(replace).count(),
        1,
        "`{replace}` must occur once in the example"
    );
    let text = example.replacen(replace, with, 1);
    FileConfig::parse(&text, Path::new("omniroute.example.toml"))
        .err()
        .unwrap_or_else(|| panic!("replacing `{replace}` with `{with}` is accepted"))
        .to_string()
}

#[test]
fn the_errors_quoted_in_config_md_are_the_parsers() {
    let example = std::fs::read_to_string(example_path()).unwrap();
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    for (replace, with, quoted) in DOC_ERRORS {
        let said = broken(&example, replace, with);
        assert_eq!(
            &said, quoted,
            "the parser's message changed (or the example moved): update docs/CONFIG.md \
             and this test"
        );
        assert!(
            doc.contains(quoted),
            "docs/CONFIG.md does not quote the error `{quoted}`"
        );
    }
    for (replace, with, quoted) in DOC_MESSAGES {
        let said = broken(&example, replace, with);
        assert!(
            said.ends_with(&format!(": {quoted}")),
            "the parser says `{said}`, docs/CONFIG.md quotes `{quoted}`"
        );
        assert!(
            doc.contains(quoted),
            "docs/CONFIG.md does not quote `{quoted}`"
        );
    }
}
