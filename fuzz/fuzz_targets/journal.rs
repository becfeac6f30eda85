//! The `--in-place` rollback journal parser (`ckpt::write::inplace::parse_journal`): the file a
//! hostile checkpoint can plant. Invariants: no panic; an accepted journal names only shard files
//! (`*.safetensors`, one plain component, not hidden) in header entries and only `config.json`,
//! `params.json` or the index in file entries, never the same file twice; its run id is 12 hex
//! digits; its blobs have the recorded lengths; and it re-serialises to bytes that parse to the
//! same journal. The first byte selects raw bytes (0) or a description framed with a valid
//! checksum (1), so the fuzzer reaches past the SHA-256.
#![no_main]

use ckpt::write::inplace::{JournalEntry, frame_journal, parse_journal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // description JSON, then (after a NUL) the blobs.
        let (desc, blobs) = match rest.iter().position(|&b| b == 0) {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None => (rest, &[][..]),
        };
        frame_journal(desc, blobs)
    };
    let Ok(j) = parse_journal(&bytes) else {
        return;
    };
    assert!(j.run.len() == 12 && j.run.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut seen = std::collections::HashSet::new();
    for (e, old, new) in &j.entries {
        match e {
            JournalEntry::Header { file, len, .. } => {
                assert!(file.ends_with(".safetensors") && !file.starts_with('.'), "{file:?}");
                assert!(!file.contains(['/', '\\', '\0']) && file != "..", "{file:?}");
                assert_eq!(old.as_ref().map(Vec::len), Some(*len as usize));
                assert_eq!(new.len(), *len as usize);
                assert!(seen.insert(file.clone()));
            }
            JournalEntry::File {
                file,
                old_len,
                new_len,
                ..
            } => {
                assert!(
                    ["config.json", "params.json", "model.safetensors.index.json"]
                        .contains(&file.as_str()),
                    "{file:?}"
                );
                assert_eq!(old.as_ref().map_or(0, Vec::len), *old_len as usize);
                assert_eq!(new.len(), *new_len as usize);
                assert!(seen.insert(file.clone()));
            }
        }
    }
    assert_eq!(parse_journal(&j.to_bytes()).as_ref(), Ok(&j));
});
