//! Every file of the fuzz corpus (fuzz/corpus/frame_decoder/) through the frame decoder's
//! fuzz checks (fuzz/src/lib.rs, included here so they build and run on stable): none may
//! break an invariant. By name: `valid-<type>` holds one message of that type,
//! `valid-*` only messages; `invalid-<code>[-…]` reports `<code>` (among others). Files
//! with other names (inputs the fuzzer added) need only pass the checks.

#[path = "../../fuzz/src/lib.rs"]
mod decode_path;

use omniroute_transport::proto::ClientMsg;
use std::path::Path;

#[test]
fn every_corpus_file_passes_the_fuzz_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_decoder");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let summary = std::panic::catch_unwind(|| decode_path::check(&data))
            .unwrap_or_else(|_| panic!("corpus file {name} breaks an invariant (see above)"));
        if let Some(what) = name.strip_prefix("valid-") {
            assert!(
                summary.errors.is_empty() && summary.clean_end,
                "{name}: {:?}",
                summary.errors
            );
            assert!(!summary.messages.is_empty(), "{name}: no message");
            if ClientMsg::TYPES.contains(&what) {
                let kinds: Vec<_> = summary.messages.iter().map(ClientMsg::kind).collect();
                assert_eq!(kinds, [what], "{name}");
            }
            valid += 1;
        } else if let Some(what) = name.strip_prefix("invalid-") {
            let code = what.split('-').next().unwrap_or_default();
            assert!(
                summary.errors.iter().any(|c| c.as_str() == code),
                "{name}: expected `{code}` among {:?}",
                summary.errors
            );
            invalid += 1;
        }
    }
    assert!(valid >= 3, "{valid} valid seeds in {}", dir.display());
    assert!(invalid >= 2, "{invalid} invalid seeds in {}", dir.display());
}
