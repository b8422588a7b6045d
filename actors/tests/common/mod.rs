//! A center with one skill `s` and one queue `q` (the default), no agents.

use omniroute_engine::*;

pub fn one_queue_center() -> CenterConfig {
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
    config
}
