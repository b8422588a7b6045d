//! Every bad input gets a typed error that says what was wrong, and changes nothing.

mod common;

use common::*;
use omniroute_engine::*;

fn busy_engine() -> Harness {
    let mut h = Harness::new(center(vec![
        voice_chat_agent("ana", &[("billing", 5)]),
        voice_chat_agent("ben", &[("billing", 5)]),
    ]));
    h.available("ana");
    h.submit(NewInteraction::new("voice", "c1"));
    h.submit(NewInteraction::new("voice", "c2"));
    h.submit(NewInteraction::new("voice", "c3"));
    h
}

/// Everything observable, to compare before and after a refused operation.
fn observe(h: &Harness) -> String {
    let mut s = String::new();
    for id in h.engine.interaction_ids() {
        s += &format!("{:?}\n", h.engine.interaction(id).unwrap());
    }
    for a in ["ana", "ben"] {
        s += &format!("{:?}\n", h.engine.agent(a).unwrap());
    }
    for q in ["billing", "tech", "billing-es"] {
        s += &format!("{:?}\n", h.engine.queue(q, h.now).unwrap());
    }
    s
}

#[test]
fn refused_operations_leave_state_unchanged() {
    let h = busy_engine();
    let before = observe(&h);
    let offered = h.engine.interaction_ids()[0];
    let queued = h.engine.interaction_ids()[1];
    let unknown = InteractionId(999_999);
    let e = &h.engine;
    let mut out = Vec::new();
    let cases: Vec<(&str, Result<()>)> = vec![
        (
            "accept by unknown agent",
            e.accept("nobody", offered, 0, &mut out),
        ),
        (
            "accept unknown interaction",
            e.accept("ana", unknown, 0, &mut out),
        ),
        (
            "accept another agent's offer",
            e.accept("ben", offered, 0, &mut out),
        ),
        (
            "accept a queued interaction",
            e.accept("ana", queued, 0, &mut out),
        ),
        (
            "reject another's offer",
            e.reject("ben", offered, 0, &mut out),
        ),
        (
            "complete an offer",
            e.complete("ana", offered, None, 0, &mut out),
        ),
        (
            "complete unknown",
            e.complete("ana", unknown, None, 0, &mut out),
        ),
        (
            "transfer an offer",
            e.transfer(
                "ana",
                offered,
                TransferTarget::Queue("tech".into()),
                0,
                &mut out,
            ),
        ),
        ("abandon unknown", e.abandon(unknown, 0, &mut out)),
        (
            "presence of unknown agent",
            e.set_presence("nobody", Presence::Available, 0, &mut out),
        ),
        (
            "submit to unknown queue",
            e.submit(
                NewInteraction::new("voice", "x").to_queue("nope"),
                0,
                &mut out,
            )
            .map(|_| ()),
        ),
        (
            "submit on unknown channel",
            e.submit(NewInteraction::new("pigeon", "x"), 0, &mut out)
                .map(|_| ()),
        ),
        (
            "submit with unknown preferred agent",
            e.submit(
                NewInteraction {
                    preferred_agent: Some("ghost".into()),
                    preferred_fallback_ms: 10,
                    ..NewInteraction::new("voice", "x")
                },
                0,
                &mut out,
            )
            .map(|_| ()),
        ),
    ];
    for (what, result) in &cases {
        let err = result.as_ref().expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}: error has a message");
    }
    assert!(
        out.is_empty(),
        "refused operations emit no events: {out:#?}"
    );
    assert_eq!(before, observe(&h), "state changed by a refused operation");
    h.assert_invariants();
    // Messages name the culprit.
    assert_eq!(
        cases[0].1.as_ref().unwrap_err().to_string(),
        "unknown agent `nobody`"
    );
    assert_eq!(
        cases[1].1.as_ref().unwrap_err().to_string(),
        "unknown interaction i-999999"
    );
    assert!(
        cases[2]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("not offered to agent `ben`")
    );
}

#[test]
fn invalid_configurations_are_refused_with_the_place_named() {
    let base = || center(vec![voice_chat_agent("ana", &[("billing", 5)])]);
    let check = |config: CenterConfig, expect: &str| {
        let err = Engine::new(config).err().expect(expect).to_string();
        assert!(err.contains(expect), "expected `{expect}` in `{err}`");
    };
    let mut c = base();
    c.agents[0].skills[0].proficiency = 11;
    check(c, "proficiency 11 out of range 1-10 for skill `billing`");
    let mut c = base();
    c.agents[0].skills[0].proficiency = 0;
    check(c, "proficiency 0 out of range");
    let mut c = base();
    c.queues[0].required_skills[0].min_proficiency = 12;
    check(c, "proficiency 12 out of range");
    let mut c = base();
    c.agents[0].skills[0].skill = "knitting".into();
    check(
        c,
        "unknown skill `knitting` (referenced by agent `ana` skills)",
    );
    let mut c = base();
    c.agents[0].capacity = CapacityProfile::simple(1, &["voice"]);
    check(
        c,
        "costs 10 units but the profile has only 1 in total: it can never fit",
    );
    let mut c = base();
    c.agents[0].capacity = CapacityProfile::simple(10, &[]);
    check(c, "can never fit any channel");
    let mut c = base();
    c.agents[0].capacity.total_units = 0;
    check(c, "total_units: must be at least 1");
    let mut c = base();
    c.agents[0].capacity.channels[0].channel = "fax".into();
    check(c, "unknown channel `fax`");
    let mut c = base();
    c.agents[0].capacity.blocking = vec![ChannelBlock {
        while_on: "sms".into(),
        blocks: vec!["chat".into()],
    }];
    check(c, "blocking: `sms` is not one of this agent's channels");
    let mut c = base();
    c.agents.push(c.agents[0].clone());
    check(c, "duplicate agent `ana`");
    let mut c = base();
    c.routing.default_queue = Some("nowhere".into());
    check(c, "unknown queue `nowhere`");
    let mut c = base();
    c.queues[0].relaxation = vec![RelaxationStep {
        after_ms: 1,
        action: RelaxationAction::LowerProficiency {
            skill: "billing".into(),
            to: 4,
        },
    }];
    c.queues[0].required_skills[0].min_proficiency = 2;
    check(c, "does not lower the current minimum 2");
    let mut c = base();
    c.queues[0].relaxation = vec![RelaxationStep {
        after_ms: 1,
        action: RelaxationAction::Overflow {
            queue: "billing".into(),
        },
    }];
    check(c, "cannot overflow into itself");
    let mut c = base();
    c.queues[0].max_waiting = 0;
    check(c, "queue `billing`.max_waiting: must be at least 1");
    let mut c = base();
    c.queues[0].service_level.percent = 120;
    check(c, "120 is not a percentage");
    let mut c = base();
    c.channels.extend((0..60).map(|n| ChannelDef {
        name: format!("custom-{n}"),
        default_units: 1,
        auto_accept: false,
    }));
    check(c, "at most 64");
}

#[test]
fn reconfigure_with_an_error_changes_nothing() {
    let h = busy_engine();
    let before = observe(&h);
    let mut config = h.engine.config();
    config.agents[0].skills[0].proficiency = 42;
    let mut out = Vec::new();
    assert!(h.engine.reconfigure(config, h.now, &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(before, observe(&h));
    assert_eq!(h.engine.config().agents[0].skills[0].proficiency, 5);
}
