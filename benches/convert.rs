//! Convert throughput (Yi -> LLaMA rename) against `cp -r` + `sync` and `cp -r --reflink=auto` +
//! `sync`, in alternating rounds of one run (issue #17 item 4), and the converter's peak memory.
//!
//! Generates a Yi-named BF16 checkpoint of about `CKPT_BENCH_GB` GB (default 3) with random data in
//! four shards, in a temporary directory under `target/` (same disk as the build; override with
//! `CKPT_BENCH_DIR`), then runs `CKPT_BENCH_ROUNDS` rounds (default 5). Each round times, each from
//! a cold page cache, `ckpt convert`, `cp -r` + `sync`, `cp -r --reflink=auto` + `sync` and
//! `ckpt convert --no-verify-bytes` (the byte check's cost), in the orders of a balanced Latin square
//! (over four rounds each run takes each place once and follows each other run once). The cache is dropped with `echo 3 > /proc/sys/vm/drop_caches` when permitted (root), else
//! the inputs are evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` (outputs are deleted between
//! runs); the output says which. `sync` is part of the cp times since the converter fsyncs.
//!
//! Checks: every output tensor's bytes equal its source's (round 1), and the converter's outputs of
//! all rounds are identical (a SipHash of every file, taken while it is cached; round 2's output is
//! also compared byte for byte with round 1's). On ext4 (no reflink) `--reflink=auto` is a plain copy; on XFS or
//! btrfs both it and the converter (whose output data offsets are page-congruent with the source's)
//! can share extents.
//!
//! `cargo bench --bench convert`

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{dir_bytes, drop_caches, release_binary, timed};

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

fn main() {
    let gb: f64 = std::env::var("CKPT_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::var("CKPT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let base = std::env::var_os("CKPT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("bench-convert-")
        .tempdir_in(&base)
        .expect("temp dir");
    let src = tmp.path().join("yi");

    // Yi-like BF16 dims scaled to the requested size.
    let mut d = Dims {
        hidden: 2048,
        layers: 1,
        heads: 16,
        kv_heads: 4,
        intermediate: 5504,
        vocab: 32000,
        tied: false,
    };
    let per_layer =
        2 * (2 * d.hidden * d.hidden + 2 * 512 * d.hidden + 3 * d.hidden * d.intermediate);
    let emb = 2 * 2 * d.vocab * d.hidden;
    d.layers = (((gb * 1e9) as usize).saturating_sub(emb) / per_layer).max(1);
    let mut specs = synth::llama_tensors(&d, Dtype::BF16, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = d.config_json("Yi", "YiForCausalLM", "bfloat16");
    let t = Instant::now();
    synth::write_checkpoint(&src, Some(&cfg), &specs, 4, Fill::Random(1)).expect("synth");
    println!(
        "source: {} layers, {} tensors, {:.2} GB in 4 shards at {} (generated in {:.1} s)",
        d.layers,
        specs.len(),
        dir_bytes(&src) as f64 / 1e9,
        src.display(),
        t.elapsed().as_secs_f64()
    );
    run(&bin, tmp.path(), &src, rounds);
    if std::env::var_os("CKPT_BENCH_KEEP").is_some() {
        println!("kept {}", tmp.keep().display());
    }
}

/// How the page cache is made cold before each run.
#[derive(Clone, Copy, PartialEq)]
enum Cold {
    DropCaches,
    Fadvise,
}

fn make_cold(src: &Path) -> Cold {
    if drop_caches() {
        return Cold::DropCaches;
    }
    for e in std::fs::read_dir(src).into_iter().flatten().flatten() {
        if let Ok(f) = std::fs::File::open(e.path()) {
            // SAFETY: plain syscall on an open fd; the result is ignored (best effort).
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
    Cold::Fadvise
}

fn cp(src: &Path, dst: &Path, reflink: bool) -> f64 {
    let t = Instant::now();
    let mut c = Command::new("cp");
    c.arg("-r");
    if reflink {
        c.arg("--reflink=auto");
    }
    let ok = c.arg(src).arg(dst).status().is_ok_and(|s| s.success());
    assert!(ok, "cp failed");
    let ok = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(ok, "sync failed");
    t.elapsed().as_secs_f64()
}

fn convert(bin: &Path, src: &Path, out: &Path, verify: bool) -> (f64, Option<u64>) {
    let mut cmd = vec![
        bin.to_str().unwrap_or_default(),
        "convert",
        src.to_str().unwrap_or_default(),
        out.to_str().unwrap_or_default(),
        "--to",
        "llama",
        "--quiet",
    ];
    if !verify {
        cmd.push("--no-verify-bytes");
    }
    timed(&cmd)
}

/// Every tensor of `out` has the bytes of the source tensor it was renamed from.
fn check_tensors(src: &Path, out: &Path) {
    let a = Checkpoint::open(src).expect("open source");
    let b = Checkpoint::open(out).expect("open output");
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let n = t
            .name
            .replace(".ln1.", ".input_layernorm.")
            .replace(".ln2.", ".post_attention_layernorm.");
        let u = b.get(&n).unwrap_or_else(|| panic!("missing {n}"));
        assert!(
            a.data(t).expect("source data") == b.data(u).expect("output data"),
            "tensor bytes differ: {n}"
        );
    }
}

/// Whether two directories hold the same files with the same bytes (compared in 16 MiB reads).
fn same_files(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let names = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let (na, nb) = (names(a), names(b));
    if na != nb {
        return false;
    }
    for n in na {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() || pb.is_dir() {
            if !(pa.is_dir() && pb.is_dir() && same_files(&pa, &pb)) {
                return false;
            }
            continue;
        }
        let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(&pa), std::fs::File::open(&pb)) else {
            return false;
        };
        let (mut ba, mut bb) = (vec![0u8; 16 << 20], vec![0u8; 16 << 20]);
        loop {
            let ka = fa.read(&mut ba).expect("read");
            let mut kb = 0;
            while kb < ka {
                let k = fb.read(&mut bb[kb..ka]).expect("read");
                if k == 0 {
                    break;
                }
                kb += k;
            }
            if ka != kb || ba[..ka] != bb[..kb] {
                return false;
            }
            if ka == 0 {
                break;
            }
        }
    }
    true
}

/// (file name, SipHash of its bytes) of every file of a directory, sorted.
fn digest(d: &Path) -> Vec<(std::ffi::OsString, u64)> {
    use std::hash::Hasher;
    use std::io::Read;
    let mut v: Vec<_> = std::fs::read_dir(d)
        .expect("list")
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let mut h = std::hash::DefaultHasher::new();
            let mut f = std::fs::File::open(e.path()).expect("open");
            let mut buf = vec![0u8; 16 << 20];
            loop {
                let k = f.read(&mut buf).expect("read");
                if k == 0 {
                    break;
                }
                h.write(&buf[..k]);
            }
            (e.file_name(), h.finish())
        })
        .collect();
    v.sort();
    v
}

/// Delete a run's output, then `sync` (untimed): on a filesystem mounted with `discard`, freeing
/// 2 GB of blocks is paid at the next journal commit, which would otherwise land in the next
/// run's `sync` or `fsync`.
fn remove_synced(d: &Path) {
    if d.exists() {
        let _ = std::fs::remove_dir_all(d);
        let _ = Command::new("sync").status();
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn run(bin: &Path, work: &Path, src: &Path, rounds: usize) {
    let bytes = dir_bytes(src);
    let gbs = |secs: f64| bytes as f64 / 1e9 / secs;
    let first = work.join("first");
    let out = work.join("out");
    let cp_dst = work.join("cp");
    let (mut conv, mut plain, mut reflink, mut nover) = (vec![], vec![], vec![], vec![]);
    let mut rss = None;
    let mut cold = Cold::DropCaches;
    let mut identical = true;
    let mut first_digest = Vec::new();
    println!(
        "round  convert   cp -r+sync  cp --reflink=auto+sync  convert --no-verify-bytes   ratio convert/cp (cp s / convert s)"
    );
    for r in 0..rounds {
        let mut run_convert = |conv: &mut Vec<f64>| {
            cold = make_cold(src);
            let dst = if r == 0 { &first } else { &out };
            let (secs, peak) = convert(bin, src, dst, true);
            rss = rss.max(peak);
            conv.push(secs);
            // Compared while the output is still in the page cache: a digest of every round's
            // output, and once (round 2) byte for byte with round 1's.
            let dig = digest(dst);
            if r == 0 {
                check_tensors(src, &first);
                first_digest = dig;
            } else {
                identical &= dig == first_digest;
                if r == 1 {
                    identical &= same_files(&first, &out);
                    // Digests from here on: free the disk space of a third copy.
                    remove_synced(&first);
                }
                remove_synced(&out);
            }
        };
        let run_cp = |v: &mut Vec<f64>, reflink: bool| {
            make_cold(src);
            v.push(cp(src, &cp_dst, reflink));
            remove_synced(&cp_dst);
        };
        // The four runs of a round in the orders of a balanced Latin square (Williams design):
        // over four rounds each run takes each place once and follows each other run once. A run
        // pays for what the one before it left on the disk (on the VM measured, a run right after a
        // convert was slower whatever it was), which would otherwise always fall on the same one.
        const ORDERS: [[usize; 4]; 4] = [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]];
        for i in ORDERS[r % 4] {
            match i {
                0 => run_convert(&mut conv),
                1 => run_cp(&mut plain, false),
                2 => run_cp(&mut reflink, true),
                _ => {
                    make_cold(src);
                    let (secs, _) = convert(bin, src, &out, false);
                    nover.push(secs);
                }
            }
            remove_synced(&out);
        }
        println!(
            "{:>5}  {:6.2} s  {:6.2} s    {:6.2} s                {:6.2} s                   {:.2}x  (vs reflink=auto {:.2}x)",
            r + 1,
            conv[r],
            plain[r],
            reflink[r],
            nover[r],
            plain[r] / conv[r],
            reflink[r] / conv[r]
        );
    }
    let _ = std::fs::remove_dir_all(&first);
    let ratios: Vec<f64> = plain.iter().zip(&conv).map(|(p, c)| p / c).collect();
    let ratios_reflink: Vec<f64> = reflink.iter().zip(&conv).map(|(p, c)| p / c).collect();
    println!();
    for (label, v) in [
        ("convert (verify bytes)", &conv),
        ("cp -r + sync", &plain),
        ("cp -r --reflink=auto + sync", &reflink),
        ("convert --no-verify-bytes", &nover),
    ] {
        println!(
            "{label:<28} min {:6.2} s  median {:6.2} s  ({:5.2} GB/s at the median)",
            min(v),
            median(v),
            gbs(median(v))
        );
    }
    for (label, ratios) in [
        ("cp -r + sync:", &ratios),
        ("cp -r --reflink=auto + sync:", &ratios_reflink),
    ] {
        println!(
            "convert vs {label:<29} ratio per round {}; min {:.2}x, median {:.2}x; {} of {rounds} rounds >= 1.0x",
            ratios
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" "),
            min(ratios),
            median(ratios),
            ratios.iter().filter(|&&r| r >= 1.0).count()
        );
    }
    println!(
        "byte check cost: {:+.2} s at the median ({:+.1}%)",
        median(&conv) - median(&nover),
        100.0 * (median(&conv) / median(&nover) - 1.0)
    );
    println!(
        "converter peak RSS {}",
        rss.map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
    );
    println!("output tensors identical to the source's: yes (checked on round 1)");
    println!(
        "outputs of all rounds byte-identical (SipHash of every file each round; round 2 also byte for byte): {}",
        if identical { "yes" } else { "NO" }
    );
    assert!(identical, "convert outputs differ between runs");
    println!(
        "page cache: {}",
        match cold {
            Cold::DropCaches => "dropped before each run (echo 3 > /proc/sys/vm/drop_caches; cold)",
            Cold::Fadvise =>
                "not permitted to drop; inputs evicted with posix_fadvise(DONTNEED) before each run",
        }
    );
    println!(
        "filesystem: reflink needs XFS or btrfs; on ext4 --reflink=auto and copy_file_range copy the data (no extent sharing)"
    );
}
