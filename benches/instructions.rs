//! Instructions per arrival decision, to separate the algorithm from the cache.
//!
//! Wall time grows with the center because its state stops fitting in cache; the number of
//! instructions a decision executes shows whether the *algorithm* depends on the number of
//! agents. Run under callgrind, counting only the timed call:
//!
//! ```sh
//! cargo bench --bench instructions --no-run
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!     target/release/deps/instructions-<hash> 10000 [proportional]
//! ```
//!
//! The program prints how many decisions it measured; divide callgrind's `Collected`
//! instruction count by it. Without valgrind it just runs (a smoke test of the driver).

mod support;

use support::*;

/// The measured call: one `Engine::submit` (an arrival decision and its offer).
#[inline(never)]
fn measured(f: &mut dyn FnMut()) {
    f()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let agents: usize = match args.first().map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) if n >= 1_000 => n,
        Some(_) => {
            eprintln!("usage: instructions [AGENTS >= 1000] [proportional]");
            std::process::exit(2);
        }
    };
    let shape = if args.get(1).is_some_and(|a| a == "proportional") {
        proportional(agents)
    } else {
        realistic(agents)
    };
    let mut driver = ArrivalDriver::new(shape);
    for _ in 0..20_000 {
        driver.step(|f| f());
    }
    let decisions = 20_000;
    for _ in 0..decisions {
        driver.step(|f| measured(f));
    }
    println!(
        "measured {decisions} arrival decisions: {agents} agents, {} queues, {} skills",
        shape.queues, shape.skills
    );
}
