//! Crash recovery, black-box: `omniroute drive` runs the demo center through the durable
//! log with four writer threads, printing each acknowledgement once durable; the test
//! kills it with SIGKILL at random moments, several times, restarting it on the same
//! directory, and after every kill checks that everything acknowledged is there exactly
//! once, in a state at least as far along as acknowledged, with its original enqueue
//! time, and that every queue is in order.
//!
//! `OMNIROUTE_CRASH_CYCLES=50 cargo test --test crash` for a longer run;
//! `OMNIROUTE_CRASH_SEED=<n>` replays a run's kill schedule.

use omniroute_engine::journal::{Journal, JournalConfig, JournalError, SledStore};
use omniroute_engine::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn wall_ms() -> TimeMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as TimeMs
}

/// How far along an interaction's life a state is; acknowledged progress never goes
/// back (the drive does no transfers).
fn progress(state: InteractionState) -> u8 {
    match state {
        InteractionState::Queued | InteractionState::Offered => 0,
        InteractionState::Assigned | InteractionState::Transferred => 1,
        InteractionState::WrapUp => 2,
        InteractionState::Completed | InteractionState::Abandoned => 3,
    }
}

#[derive(Default)]
struct Acked {
    /// Interaction → when its submit ran (its enqueue time).
    submitted: BTreeMap<u64, TimeMs>,
    /// Interaction → (progress acknowledged, whether it was an abandon).
    progress: BTreeMap<u64, (u8, bool)>,
    /// Every record key acknowledged.
    seqs: std::collections::BTreeSet<u64>,
    max_seq: u64,
    /// The largest key acknowledged before the current run of the drive.
    before_this_run: u64,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 5, "malformed ack line `{line}`");
        let seq: u64 = parts[1].parse().unwrap();
        // Writers print concurrently, so keys arrive out of order within a run; but no
        // key is acknowledged twice, and a run only acknowledges keys past every key
        // acknowledged before its restart (else a record acknowledged before the crash
        // was lost and its key reused).
        assert!(self.seqs.insert(seq), "record key {seq} acknowledged twice");
        assert!(
            seq > self.before_this_run,
            "record key {seq} acknowledged after a restart, but {} was acknowledged before it: an acknowledged record was lost",
            self.before_this_run
        );
        self.max_seq = self.max_seq.max(seq);
        let at: TimeMs = parts[4].parse().unwrap();
        let id = parts[3].parse::<u64>().ok();
        let reached = match parts[2] {
            "submit" => {
                self.submitted.insert(id.unwrap(), at);
                return;
            }
            "accept" => (1, false),
            "complete" => (2, false),
            "abandon" => (3, true),
            _ => return,
        };
        let entry = self.progress.entry(id.unwrap()).or_insert((0, false));
        if reached.0 >= entry.0 {
            *entry = reached;
        }
    }
}

fn check(dir: &Path, acked: &Acked, cycle: usize) {
    let now = wall_ms();
    let opened = Journal::<SledStore>::open_dir(dir, None, JournalConfig::default(), now);
    // Killed before its first record was durable (a timed kill during start-up):
    // nothing was acknowledged, so an empty directory is right.
    if acked.max_seq == 0 && matches!(opened, Err(JournalError::Empty)) {
        return;
    }
    let (journal, report) =
        opened.unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed: {e}"));
    assert!(
        report.last_seq > acked.max_seq,
        "cycle {cycle}: the log ends at {} (after the restart record) but record {} was acknowledged",
        report.last_seq,
        acked.max_seq
    );
    journal.read(|e| {
        let problems = e.check_invariants(now);
        assert!(problems.is_empty(), "cycle {cycle}: {problems:?}");
        let mut waiting_in: BTreeMap<InteractionId, Vec<String>> = BTreeMap::new();
        for queue in ["billing", "tech", "billing-es"] {
            let q = e.queue(queue, now).unwrap();
            for pair in q.waiting.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let in_order = a.effective_priority > b.effective_priority
                    || (a.effective_priority == b.effective_priority
                        && (a.enqueued_ms, a.interaction) < (b.enqueued_ms, b.interaction));
                assert!(
                    in_order,
                    "cycle {cycle}: {queue} out of order: {a:?} before {b:?}"
                );
            }
            for w in &q.waiting {
                waiting_in
                    .entry(w.interaction)
                    .or_default()
                    .push(queue.to_string());
            }
        }
        for (&id, &at) in &acked.submitted {
            let id = InteractionId(id);
            let s = e
                .interaction(id)
                .unwrap_or_else(|_| panic!("cycle {cycle}: acknowledged {id} is lost"));
            assert_eq!(
                s.enqueued_ms, at,
                "cycle {cycle}: {id} changed its enqueue time"
            );
            assert_ne!(
                s.state,
                InteractionState::Offered,
                "cycle {cycle}: {id} still offered after a restart (agents are offline)"
            );
            if s.state == InteractionState::Queued {
                let queues = waiting_in.get(&id).cloned().unwrap_or_default();
                assert!(
                    queues.contains(&s.queue),
                    "cycle {cycle}: queued {id} is not in its queue {} (found in {queues:?})",
                    s.queue
                );
                let own = queues.iter().filter(|q| **q == s.queue).count();
                assert_eq!(own, 1, "cycle {cycle}: {id} in {} {own} times", s.queue);
            }
            if let Some(&(reached, abandoned)) = acked.progress.get(&id.0) {
                assert!(
                    progress(s.state) >= reached,
                    "cycle {cycle}: {id} is {:?} but progress {reached} was acknowledged",
                    s.state
                );
                if abandoned {
                    assert_eq!(s.state, InteractionState::Abandoned, "cycle {cycle}: {id}");
                }
            }
        }
        // Exactly once in agents' hands: every interaction an agent holds is held by
        // that agent alone, and names it.
        let mut holders: BTreeMap<InteractionId, Vec<String>> = BTreeMap::new();
        for agent in ["ana", "ben", "chloe", "dev", "eva", "femi", "gus"] {
            for w in e.agent(agent).unwrap().work {
                holders
                    .entry(w.interaction)
                    .or_default()
                    .push(agent.to_string());
            }
        }
        for (id, agents) in &holders {
            assert_eq!(agents.len(), 1, "cycle {cycle}: {id} held by {agents:?}");
            let s = e.interaction(*id).unwrap();
            assert_eq!(
                s.agent.as_deref(),
                Some(agents[0].as_str()),
                "cycle {cycle}: {id}"
            );
        }
        for &id in acked.submitted.keys() {
            let s = e.interaction(InteractionId(id)).unwrap();
            let held = holders.contains_key(&InteractionId(id));
            let should = matches!(
                s.state,
                InteractionState::Assigned | InteractionState::WrapUp
            );
            assert_eq!(held, should, "cycle {cycle}: i-{id} is {:?}", s.state);
        }
    });
}

#[test]
fn acknowledged_work_survives_sigkill() {
    let cycles: usize = std::env::var("OMNIROUTE_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("OMNIROUTE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| wall_ms() % 1_000_000);
    eprintln!("crash test: {cycles} cycles, OMNIROUTE_CRASH_SEED={seed}");
    let mut rng = SeededRng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut acked = Acked::default();
    for cycle in 0..cycles {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omniroute"))
            .args(["drive", "--data-dir"])
            .arg(&dir)
            .args([
                "--writers",
                "4",
                "--ops",
                "100000000",
                "--snapshot-every",
                "200",
            ])
            .args(["--seed", &(seed + cycle as u64).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("omniroute runs");
        let stdout = child.stdout.take().unwrap();
        // One kill in four comes after a random delay, whatever the child is doing
        // (possibly mid-recovery or mid-snapshot); the others after a random number of
        // acknowledgements.
        let by_time = rng.below(4) == 0;
        let kill_after_acks = 20 + rng.below(600) as u64;
        let kill_after = Duration::from_millis(rng.below(400) as u64);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        if by_time {
            std::thread::sleep(kill_after);
        } else {
            let deadline = started + Duration::from_secs(30);
            let mut seen = 0;
            while seen < kill_after_acks && Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) => {
                        seen += u64::from(line.starts_with("ACK "));
                        lines.push(line);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        panic!("cycle {cycle}: the drive exited by itself: {lines:?}")
                    }
                }
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        // What the child printed before it died was acknowledged too.
        lines.extend(rx.try_iter());
        acked.before_this_run = acked.max_seq;
        let mut count = 0;
        for line in &lines {
            if line.starts_with("ACK ") {
                acked.take(line);
                count += 1;
            } else {
                assert!(
                    line.starts_with("RECOVERED ") || line.starts_with("DONE "),
                    "cycle {cycle}: unexpected output `{line}`"
                );
            }
        }
        eprintln!(
            "cycle {cycle}: killed after {:?} ({}), {count} acknowledgements",
            started.elapsed(),
            if by_time { "timed" } else { "by progress" }
        );
        check(&dir, &acked, cycle);
    }
    assert!(
        acked.submitted.len() > 20,
        "the drive acknowledged too little work to test anything ({} submits)",
        acked.submitted.len()
    );
}

fn drive(dir: &Path, ops: u64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["drive", "--data-dir"])
        .arg(dir)
        .args(["--ops", &ops.to_string(), "--writers", "2"])
        .output()
        .expect("omniroute runs")
}

fn damage(dir: &Path, key: u64, how: impl FnOnce(&mut Vec<u8>)) {
    use omniroute_engine::journal::LogStore;
    let store = SledStore::open(dir).unwrap();
    let (_, mut value) = store.read_from(key).next().unwrap().unwrap();
    how(&mut value);
    store.append(key, &value).unwrap();
    store.sync().unwrap();
}

fn last_key(dir: &Path) -> u64 {
    use omniroute_engine::journal::LogStore;
    let store = SledStore::open(dir).unwrap();
    let (raw, _) = store.read_from(0).last().unwrap().unwrap();
    u64::from_be_bytes(raw.try_into().unwrap())
}

#[test]
fn damage_is_reported_and_repaired_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    assert!(drive(&dir, 60).status.success());

    // A flipped byte in the last record: cut, reported on stderr, the server starts.
    let last = last_key(&dir);
    damage(&dir, last, |v| {
        let at = v.len() - 1;
        v[at] ^= 0x10;
    });
    let out = drive(&dir, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("damaged")
            && stderr.contains(&format!("cut back to record {}", last - 1))
            && stderr.contains(&format!("key={last}")),
        "no clear log line for the cut tail:\n{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("tail_cut={last}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A flipped byte in the middle: refused with the key and the repair command.
    damage(&dir, 5, |v| v[9] ^= 0x01);
    let out = drive(&dir, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let repair = format!("omniroute repair --data-dir {} --cut-at 5", dir.display());
    assert!(
        stderr.contains("log record 5 is damaged") && stderr.contains(&repair),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["repair", "--data-dir"])
        .arg(&dir)
        .args(["--cut-at", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the log now ends at 4"));
    assert!(drive(&dir, 5).status.success());
}

#[test]
fn a_second_server_on_the_same_directory_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut first = Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(["drive", "--data-dir"])
        .arg(&dir)
        .args(["--ops", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let recovered = lines.next().unwrap().unwrap();
    assert!(recovered.starts_with("RECOVERED "), "{recovered}");
    let second = drive(&dir, 5);
    first.kill().unwrap();
    first.wait().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another omniroute process")
            && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
}

#[test]
fn damage_inside_sled_never_silently_loses_acknowledged_work() {
    for fraction in [4u64, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let out = drive(&dir, 300);
        assert!(out.status.success());
        let acked = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("ACK "))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let db = dir.join("sled").join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let at = bytes.len() / fraction as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&db, bytes).unwrap();
        let out = drive(&dir, 1);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.success() {
            // The flip hit space sled no longer uses: everything must still be there.
            let last: u64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix("RECOVERED "))
                .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("last_seq=")))
                .and_then(|v| v.parse().ok())
                .unwrap();
            assert!(
                last > acked,
                "record {acked} was acknowledged, the log ends at {last}"
            );
        } else {
            assert!(
                stderr.contains(&format!("records up to {acked} were acknowledged"))
                    && stderr.contains("--accept-loss"),
                "{stderr}"
            );
            let repaired = Command::new(env!("CARGO_BIN_EXE_omniroute"))
                .args(["repair", "--data-dir"])
                .arg(&dir)
                .arg("--accept-loss")
                .output()
                .unwrap();
            assert!(
                repaired.status.success(),
                "{}",
                String::from_utf8_lossy(&repaired.stderr)
            );
            assert!(drive(&dir, 1).status.success());
        }
    }
}

#[test]
fn bad_repair_and_durability_arguments_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_omniroute"))
            .args(args)
            .output()
            .unwrap()
    };
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    for args in [
        vec!["repair", "--data-dir", dir],
        vec![
            "repair",
            "--data-dir",
            dir,
            "--cut-at",
            "3",
            "--accept-loss",
        ],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("give exactly one of --cut-at <key> and --accept-loss"),
            "{args:?}"
        );
    }
    let out = run(&["drive", "--data-dir", dir, "--durability", "batched:0"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`0` in `batched:0` is not a positive number of milliseconds"),
        "{stderr}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "a refused command touched nothing"
    );
}
