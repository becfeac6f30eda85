//! `model.safetensors.index.json` parsing and shard-name validation. Invariants: no panic; every
//! accepted shard name is one normal path component that joins to a direct child of the root; no
//! accepted index has a duplicate key.
#![no_main]

use std::path::{Component, Path};

use ckpt::checkpoint::index::{IndexFile, validate_shard_name};
use libfuzzer_sys::fuzz_target;

fn check_name(name: &str) {
    if validate_shard_name(name).is_ok() {
        let root = Path::new("/fuzz/root");
        let p = root.join(name);
        assert_eq!(p.parent(), Some(root), "{name:?} escapes the root");
        let comps: Vec<_> = Path::new(name).components().collect();
        assert!(
            matches!(comps.as_slice(), [Component::Normal(_)]),
            "{name:?}"
        );
        assert!(!name.contains(['/', '\\', '\0']) && name != ".." && name != ".");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_name(s);
    }
    if let Ok(idx) = IndexFile::parse(data) {
        assert!(ckpt::json::first_duplicate_key(data).is_none());
        for (tensor, file) in &idx.weight_map {
            assert!(!tensor.is_empty());
            check_name(file);
            assert!(validate_shard_name(file).is_ok());
            assert!(idx.files.contains(file));
        }
        let mut sorted = idx.files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, idx.files);
    }
});
