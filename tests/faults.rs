//! Fault injection for writing (RELIABILITY.md part B, issue 8): `kill -9` at random points of a
//! convert of a few-hundred-MB checkpoint, and a read-only destination mount. After every trial the
//! destination is absent or complete (every tensor byte-identical to the source), never partial, and
//! `ckpt convert --clean` leaves no temporary files.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

const BIN: &str = env!("CARGO_BIN_EXE_ckpt");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A Yi-named f32 checkpoint of about `mb` MB in 3 shards.
fn yi_checkpoint(dir: &Path, mb: usize) {
    let hidden = 512;
    let d = Dims {
        hidden,
        layers: 1,
        heads: 8,
        kv_heads: 4,
        intermediate: 1536,
        vocab: 8000,
        tied: false,
    };
    let per_layer = 4 * (hidden * hidden * 2 + hidden * 256 * 2 + 3 * hidden * 1536);
    let layers = (mb * 1_000_000).saturating_sub(4 * 2 * 8000 * hidden) / per_layer;
    let d = Dims {
        layers: layers.max(1),
        ..d
    };
    let mut specs = synth::llama_tensors(&d, Dtype::F32, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = d.config_json("Yi", "YiForCausalLM", "float32");
    synth::write_checkpoint(dir, Some(&cfg), &specs, 3, Fill::Random(11)).unwrap();
}

/// Every tensor of `dst` equals the source's under LLaMA names.
fn assert_complete(src: &Checkpoint, dst: &Path) {
    let out = Checkpoint::open(dst).expect("a destination that exists must open: never partial");
    assert_eq!(out.tensors.len(), src.tensors.len());
    for t in &src.tensors {
        let name = t
            .name
            .replace(".ln1.", ".input_layernorm.")
            .replace(".ln2.", ".post_attention_layernorm.");
        let o = out
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing from a committed output"));
        assert_eq!(src.data(t).unwrap(), out.data(o).unwrap(), "{name} differs");
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ckpt-tmp-") || n.contains(".ckpt-old-"))
        .collect()
}

#[test]
fn kill_9_at_random_points_never_leaves_a_partial_destination() {
    const TRIALS: usize = 20;
    let t = tempfile::tempdir().unwrap();
    let src_dir = t.path().join("src");
    yi_checkpoint(&src_dir, 200);
    let src = Checkpoint::open(&src_dir).unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // One uninterrupted run gives the time span to kill within.
    let start = Instant::now();
    let full = work.join("full");
    let ok = Command::new(BIN)
        .args(["convert", s(&src_dir), s(&full), "-q"])
        .status()
        .unwrap();
    assert!(ok.success());
    let span = start.elapsed();
    assert_complete(&src, &full);
    std::fs::remove_dir_all(&full).unwrap();

    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut absent, mut complete) = (0, 0);
    for trial in 0..TRIALS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Uniform over [0, 1.1 x span): a few trials finish before the kill.
        let delay = Duration::from_micros(rng % (span.as_micros() as u64 * 11 / 10).max(1));
        let dst = work.join(format!("out{trial}"));
        let mut child = Command::new(BIN)
            .args(["convert", s(&src_dir), s(&dst), "-q"])
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if dst.exists() {
            complete += 1;
            assert_complete(&src, &dst);
            std::fs::remove_dir_all(&dst).unwrap();
        } else {
            absent += 1;
        }
    }
    eprintln!(
        "kill -9 trials on a {:.0} MB checkpoint (full run {:.2} s): {absent} absent, {complete} complete, 0 partial",
        src.data_bytes() as f64 / 1e6,
        span.as_secs_f64()
    );
    assert_eq!(absent + complete, TRIALS);
    // The next run's clean-up leaves nothing behind, and the source was never modified.
    let o = Command::new(BIN)
        .args(["convert", "--clean", s(&work)])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(leftovers(&work), Vec::<String>::new());
    let again = Checkpoint::open(&src_dir).unwrap();
    for (a, b) in src.tensors.iter().zip(&again.tensors) {
        assert_eq!(src.data(a).unwrap(), again.data(b).unwrap());
    }
}

#[test]
fn read_only_destination_mount_is_a_clean_error_naming_dst() {
    // A read-only tmpfs in a private mount namespace (root ignores chmod, so a mount is needed).
    let t = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/yi");
    let mnt = t.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs {m} && mount -o remount,ro {m} || exit 77; \
         {bin} convert {src} {m}/out; echo \"rc=$?\"; ls -A {m}; exit 0",
        m = s(&mnt),
        bin = BIN,
        src = s(&src)
    );
    let Ok(o) = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
    else {
        eprintln!("skipped: unshare is not available");
        return;
    };
    if o.status.code() == Some(77) || !o.status.success() {
        eprintln!("skipped: unshare/mount not permitted here");
        return;
    }
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("rc=2"), "{out}");
    assert!(out.contains("error[cannot-create]"), "{out}");
    assert!(
        out.contains(&format!("{}/out", s(&mnt))),
        "names DST: {out}"
    );
    assert!(!out.contains("ckpt-tmp"), "{out}");
    assert!(!out.lines().any(|l| l.trim() == "out"), "{out}");
}

/// The regular files of `dir` other than ckpt's temporaries and journals, with their bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".ckpt-"))
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

/// A copy of a fixture whose safetensors headers have 512 bytes of spare room (for `--in-place`).
fn padded_copy(fixture: &str, dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    std::fs::create_dir(dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "expected.safetensors" {
            continue;
        }
        let mut bytes = std::fs::read(e.path()).unwrap();
        if name.ends_with(".safetensors") {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let mut out = ((n + 512) as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&bytes[8..8 + n]);
            out.extend(std::iter::repeat_n(b' ', 512));
            out.extend_from_slice(&bytes[8 + n..]);
            bytes = out;
        }
        std::fs::write(dst.join(&name), bytes).unwrap();
    }
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault injection (CKPT_TEST_*) exists only in debug builds"
)]
fn kill_9_at_every_step_of_an_in_place_run_is_recoverable() {
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    padded_copy("llama-sharded", &base);
    let rename = |dir: &Path, kill_at: Option<usize>| {
        let mut c = Command::new(BIN);
        c.args([
            "rename",
            s(dir),
            "--in-place",
            "--rename",
            r"model\.(.*)=m.$1",
            "-q",
        ]);
        if let Some(n) = kill_at {
            c.env("CKPT_TEST_KILL_AT_STEP", n.to_string());
        }
        c.output().unwrap()
    };
    let old = files(&base);
    let full = t.path().join("full");
    padded_copy("llama-sharded", &full);
    assert!(rename(&full, None).status.success());
    let new = files(&full);
    assert_ne!(old, new);

    let mut killed = 0;
    for step in 1.. {
        assert!(step < 100, "the run never completed");
        let d = t.path().join(format!("k{step}"));
        padded_copy("llama-sharded", &d);
        let o = rename(&d, Some(step));
        if o.status.success() {
            assert_eq!(files(&d), new);
            break;
        }
        assert_eq!(o.status.signal(), Some(libc::SIGKILL), "step {step}");
        killed += 1;
        let pending = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(".ckpt-hdr-journal")
            });
        if pending {
            // Readers refuse the half-renamed checkpoint; `--recover` always restores it.
            let i = Command::new(BIN).args(["inspect", s(&d)]).output().unwrap();
            assert_eq!(i.status.code(), Some(2), "step {step}");
            let r = Command::new(BIN)
                .args(["convert", "--recover", s(&d)])
                .output()
                .unwrap();
            assert!(
                r.status.success(),
                "step {step}: --recover failed: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            assert_eq!(
                files(&d),
                old,
                "step {step}: --recover restores the old state"
            );
        }
        let c = Command::new(BIN)
            .args(["convert", "--clean", s(&d)])
            .output()
            .unwrap();
        assert!(c.status.success(), "step {step}");
        assert_eq!(leftovers(&d), Vec::<String>::new(), "step {step}");
        let now = files(&d);
        assert!(
            now == old || now == new,
            "step {step}: a mix of old and new"
        );
        assert!(Checkpoint::open(&d).is_ok(), "step {step}");
    }
    assert!(killed >= 5, "only {killed} kill points");
}

#[test]
fn clean_restores_the_old_copy_of_a_force_run_killed_between_its_two_renames() {
    // Without RENAME_EXCHANGE, `--force` moves the old destination aside, then the new one in; a
    // kill between the two leaves only `.out.ckpt-old-*` (the old checkpoint) and the staging.
    let t = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llama-mha");
    let old = t.path().join(".out.ckpt-old-0123456789ab");
    let staging = t.path().join(".out.ckpt-tmp-Ab12Cd");
    for d in [&old, &staging] {
        std::fs::create_dir(d).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(f), d.join(f)).unwrap();
        }
    }
    std::fs::create_dir(t.path().join(".other.ckpt-old-0000")).unwrap();
    // Not a checkpoint: never something `--force` moved aside, so not restored.
    std::fs::create_dir(t.path().join(".stray.ckpt-old-0000")).unwrap();
    std::fs::write(t.path().join(".stray.ckpt-old-0000/notes.txt"), b"x").unwrap();
    std::fs::create_dir(t.path().join("other")).unwrap();
    let o = Command::new(BIN)
        .args(["convert", "--clean", s(t.path())])
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = t.path().join("out");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(fixture.join("model.safetensors")).unwrap(),
        "the old checkpoint is back under its name"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("restored"));
    // The staging and the old copy of a destination that exists are leftovers as before.
    assert_eq!(leftovers(t.path()), Vec::<String>::new());
    assert!(t.path().join("other").is_dir());
    assert!(!t.path().join("stray").exists());
}
