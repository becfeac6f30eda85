//! Helpers shared by the benchmarks: running the release binary, the FMA peak loop.
#![allow(dead_code)]

pub mod peak;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Drop the page cache (root only); false when not permitted.
pub fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Build and return `target/release/ckpt`.
pub fn release_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/release/ckpt");
    let ok = Command::new("cargo")
        .args(["build", "--release", "--bin", "ckpt"])
        .current_dir(root)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok && bin.exists(), "cargo build --release failed");
    bin
}

/// Total size of the regular files in a directory.
pub fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Run a command under `/usr/bin/time -v`; returns (seconds, peak RSS in KiB).
pub fn timed(cmd: &[&str]) -> (f64, Option<u64>) {
    let t = Instant::now();
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .args(cmd)
        .output()
        .expect("run /usr/bin/time");
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{cmd:?} failed: {err}");
    let rss = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    (secs, rss)
}
