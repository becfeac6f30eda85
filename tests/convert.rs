//! `ckpt convert` / `ckpt rename`: output layout, crash safety and fault tests (RELIABILITY.md B, C.5).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::{Dtype, serialize_header};
use ckpt::mapping::view::{Segment, View, ViewTensor};
use ckpt::synth::{self, Dims, Fill};
use ckpt::write::{self, WriteOptions, inplace};

const BIN: &str = env!("CARGO_BIN_EXE_ckpt");
const LN1: &str = r"(.*)\.ln1\.(.*)=$1.input_layernorm.$2";
const LN2: &str = r"(.*)\.ln2\.(.*)=$1.post_attention_layernorm.$2";

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures")).join(name)
}

fn ckpt(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ckpt")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Hidden entries (temporaries, journals) in a directory.
fn hidden(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Every tensor of `b` has the bytes of the tensor of `a` it was renamed from.
fn same_tensors(a: &Checkpoint, b: &Checkpoint, rename: &dyn Fn(&str) -> String) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let n = rename(&t.name);
        let u = b.get(&n).unwrap_or_else(|| panic!("missing {n}"));
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{n}");
        assert_eq!(a.data(t).unwrap(), b.data(u).unwrap(), "{n}");
    }
}

fn yi_to_llama(n: &str) -> String {
    n.replace(".ln1.", ".input_layernorm.")
        .replace(".ln2.", ".post_attention_layernorm.")
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn rename_writes_a_hub_ready_directory() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("out");
    let o = ckpt(&[
        "rename",
        s(&fixture("yi")),
        s(&dst),
        "--rename",
        LN1,
        "--rename",
        LN2,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("wrote 21 tensors"), "{}", text(&o));
    let a = Checkpoint::open(fixture("yi")).unwrap();
    let b = Checkpoint::open(&dst).unwrap();
    same_tensors(&a, &b, &yi_to_llama);
    // Layer by layer, source order; metadata kept; config byte-identical; other files copied.
    let names: Vec<String> = b.tensors.iter().map(|t| t.name.clone()).collect();
    let want: Vec<String> = a.tensors.iter().map(|t| yi_to_llama(&t.name)).collect();
    assert_eq!(names, want);
    assert_eq!(
        b.shards[0].header.metadata,
        Some(vec![("format".into(), "pt".into())])
    );
    assert_eq!(b.shards[0].data_start() % 8, 0);
    assert_eq!(
        std::fs::read(dst.join("config.json")).unwrap(),
        std::fs::read(fixture("yi/config.json")).unwrap()
    );
    for f in [
        "generation_config.json",
        "tokenizer_config.json",
        "modeling_yi.py",
    ] {
        assert_eq!(
            std::fs::read(dst.join(f)).unwrap(),
            std::fs::read(fixture("yi").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(hidden(t.path()).is_empty());
}

#[test]
fn small_max_shard_size_gives_shards_and_a_complete_index() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("sharded");
    let o = ckpt(&[
        "rename",
        s(&fixture("llama-mha")),
        s(&dst),
        "--rename",
        // A rule that matches every name and keeps it (a rule matching nothing is refused).
        "(.*)=$1",
        "--max-shard-size",
        "100KB",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty(), "--quiet prints nothing");
    let b = Checkpoint::open(&dst).unwrap();
    let a = Checkpoint::open(fixture("llama-mha")).unwrap();
    same_tensors(&a, &b, &|n| n.to_string());
    let n = b.shards.len();
    assert!(n > 2, "{n} shards");
    for (k, sh) in b.shards.iter().enumerate() {
        assert_eq!(
            sh.file_name,
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        );
        assert!(sh.header.data_len <= 100_000 || sh.header.tensors.len() == 1);
    }
    let index = b.index.as_ref().unwrap();
    assert_eq!(index.total_size, Some(a.data_bytes()));
    assert_eq!(index.weight_map.len(), a.tensors.len());
    let raw = std::fs::read_to_string(dst.join("model.safetensors.index.json")).unwrap();
    assert!(
        raw.starts_with("{\n  \"metadata\": {\n    \"total_size\": "),
        "{raw}"
    );
    assert!(raw.ends_with("}\n"));
}

#[test]
fn dry_run_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("out");
    let o = ckpt(&["convert", s(&fixture("yi")), s(&dst), "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("model.layers.{0..1}.ln1.weight"), "{out}");
    assert!(
        out.contains("model.layers.{0..1}.input_layernorm.weight"),
        "{out}"
    );
    assert!(out.contains("rename"), "{out}");
    assert!(out.contains("~ model_type: \"Yi\" -> \"llama\""), "{out}");
    assert!(
        out.contains("not copied (remote code): modeling_yi.py"),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    assert!(!dst.exists());
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
}

/// Converting into a family whose class is not in transformers (Yi, InternLM2) says that the
/// output needs the model's own code, which ckpt does not write; a family transformers has
/// (Mistral) gets no such note.
#[test]
fn converting_to_a_remote_code_class_says_so() {
    let t = tempfile::tempdir().unwrap();
    for (to, class, noted) in [
        ("yi", "YiForCausalLM", true),
        ("internlm2", "InternLM2ForCausalLM", true),
        ("mistral", "MistralForCausalLM", false),
    ] {
        let dst = t.path().join(to);
        let o = ckpt(&["convert", s(&fixture("llama-gqa")), s(&dst), "--to", to]);
        assert!(o.status.success(), "{to}: {}", text(&o));
        let out = text(&o);
        let note = format!("note: `{class}` is not a transformers class");
        assert_eq!(out.contains(&note), noted, "{to}: {out}");
        if noted {
            assert!(out.contains("`trust_remote_code=True`"), "{out}");
        }
        let cfg = std::fs::read_to_string(dst.join("config.json")).unwrap();
        assert!(cfg.contains(class), "{to}: {cfg}");
    }
}

/// Converting a llama3-scaled model into Qwen2 is exact in transformers' Qwen2 class, but
/// llama.cpp's converter drops llama3 scaling for that class (`[config] llama_cpp_rope_types`):
/// convert says so. Into Mistral (a LLaMA-like class in llama.cpp, which writes the factors) and
/// for an unscaled model into Qwen2, nothing is said.
#[test]
fn converting_llama3_scaling_to_a_class_llama_cpp_runs_unscaled_says_so() {
    let t = tempfile::tempdir().unwrap();
    for (src, to, noted) in [
        ("llama3-scaling", "qwen2", true),
        ("llama3-scaling", "mistral", false),
        ("llama-gqa", "qwen2", false),
    ] {
        let dst = t.path().join(format!("{src}-{to}"));
        let o = ckpt(&["convert", s(&fixture(src)), s(&dst), "--to", to]);
        assert!(o.status.success(), "{src} {to}: {}", text(&o));
        let out = text(&o);
        let note = "llama.cpp's converter does not carry rope scaling `llama3` over for `Qwen2ForCausalLM` (only linear and yarn there";
        assert_eq!(out.contains(note), noted, "{src} {to}: {out}");
        assert_eq!(
            out.contains("llama.cpp's converter does not carry"),
            noted,
            "{out}"
        );
    }
}

/// llama.cpp builds Qwen2's q and o projections hidden x hidden (`[config]
/// llama_cpp_square_attention`): converting a model whose heads x head_dim is not the hidden size
/// into Qwen2 says that a GGUF of the output does not load there. Into Mistral (built from
/// heads x head_dim in llama.cpp), and for a model whose attention is hidden wide, nothing is said.
#[test]
fn converting_wide_heads_to_a_class_llama_cpp_builds_square_says_so() {
    let t = tempfile::tempdir().unwrap();
    let d = Dims {
        hidden: 64,
        layers: 1,
        heads: 4,
        kv_heads: 2,
        intermediate: 96,
        vocab: 256,
        tied: false,
    };
    let hd = 32;
    let mut specs = synth::llama_tensors(&d, Dtype::F32, false);
    for (name, _, shape) in &mut specs {
        if name.ends_with("q_proj.weight") {
            *shape = vec![d.heads * hd, d.hidden];
        } else if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
            *shape = vec![d.kv_heads * hd, d.hidden];
        } else if name.ends_with("o_proj.weight") {
            *shape = vec![d.hidden, d.heads * hd];
        }
    }
    let mut config = d.config_json("llama", "LlamaForCausalLM", "float32");
    config["head_dim"] = serde_json::json!(hd);
    let src = t.path().join("wide");
    synth::write_checkpoint(&src, Some(&config), &specs, 1, Fill::Random(5)).unwrap();
    let note = "llama.cpp builds `Qwen2ForCausalLM`'s q and o projections as hidden x hidden (64), but this model's attention is heads x head_dim = 4 x 32";
    for (from, to, noted) in [
        (src.clone(), "qwen2", true),
        (src.clone(), "mistral", false),
        (fixture("llama-gqa"), "qwen2", false),
    ] {
        let dst = t.path().join(format!(
            "{}-{to}",
            from.file_name().unwrap().to_string_lossy()
        ));
        let o = ckpt(&["convert", s(&from), s(&dst), "--to", to, "--verify"]);
        assert!(o.status.success(), "{to}: {}", text(&o));
        let out = text(&o);
        assert_eq!(out.contains(note), noted, "{to}: {out}");
        assert_eq!(out.contains("does not load in llama.cpp"), noted, "{out}");
    }
}

#[test]
fn existing_destination_is_refused_without_force_and_replaced_with_it() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("out");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("keep.txt"), b"old").unwrap();
    // An earlier output (--force replaces only a checkpoint directory).
    std::fs::write(dst.join("model.safetensors"), b"old").unwrap();
    std::fs::write(dst.join("config.json"), b"{}").unwrap();
    let args = |force: bool| {
        let mut v = vec![
            "convert".to_string(),
            s(&fixture("yi")).to_string(),
            s(&dst).to_string(),
        ];
        if force {
            v.push("--force".into());
        }
        v
    };
    let o = Command::new(BIN).args(args(false)).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("error[cannot-create]"), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read(dst.join("keep.txt")).unwrap(), b"old");
    assert_eq!(hidden(t.path()), Vec::<String>::new());

    let o = Command::new(BIN).args(args(true)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!dst.join("keep.txt").exists());
    assert!(Checkpoint::open(&dst).is_ok());
    assert_eq!(
        hidden(t.path()),
        Vec::<String>::new(),
        "old copy removed last"
    );
}

#[test]
fn destination_inside_source_or_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    copy_dir(&fixture("yi"), &src);
    let before = file_bytes(&src);
    let o = ckpt(&["rename", s(&src), s(&src.join("sub")), "--rename", "a=b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("inside the source"), "{}", text(&o));
    // The source itself, with --force: would delete the source.
    let o = ckpt(&["rename", s(&src), s(&src), "--rename", "a=b", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A directory holding the source.
    let o = ckpt(&["rename", s(&src), s(t.path()), "--rename", "a=b", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("contains the source"), "{}", text(&o));
    // A symlink as the destination.
    let target = t.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = ckpt(&["rename", s(&src), s(&link), "--rename", "a=b", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("symlink"), "{}", text(&o));
    assert_eq!(file_bytes(&src), before, "source untouched");
    assert!(std::fs::read_dir(&target).unwrap().next().is_none());
}

#[test]
fn destination_holding_a_hard_link_to_an_input_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    copy_dir(&fixture("yi"), &src);
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::fs::hard_link(src.join("model.safetensors"), dst.join("x.safetensors")).unwrap();
    let o = ckpt(&["rename", s(&src), s(&dst), "--rename", "a=b", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("same file as an input"), "{}", text(&o));
    assert!(dst.join("x.safetensors").exists());
}

#[test]
fn truncated_source_fails_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    copy_dir(&fixture("yi"), &src);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("model.safetensors"))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    let dst = t.path().join("out");
    let o = ckpt(&["rename", s(&src), s(&dst), "--rename", "a=b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("model.safetensors"), "{}", text(&o));
    assert!(!dst.exists());
    assert_eq!(hidden(t.path()), Vec::<String>::new());
}

fn synth_ckpt(dir: &Path, layers: usize, hidden: usize, shards: usize) {
    let d = Dims {
        layers,
        hidden,
        intermediate: hidden * 3 / 2,
        vocab: 1000,
        ..Dims::TINYLLAMA
    };
    let mut specs = synth::llama_tensors(&d, Dtype::F32, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = d.config_json("Yi", "YiForCausalLM", "float32");
    synth::write_checkpoint(dir, Some(&cfg), &specs, shards, Fill::Random(7)).unwrap();
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault injection (CKPT_TEST_*) exists only in debug builds"
)]
fn injected_disk_full_leaves_no_destination_and_no_temporaries() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("out");
    let o = Command::new(BIN)
        .args(["convert", s(&fixture("yi")), s(&dst)])
        .env("CKPT_TEST_FAIL_AFTER_BYTES", "100000")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o);
    assert!(e.contains("error[io]"), "{e}");
    assert!(e.contains("no space left on device"), "{e}");
    assert!(
        e.contains(&format!("{}/model.safetensors", dst.display())),
        "{e}"
    );
    assert!(e.contains("tensor \"model."), "names the tensor: {e}");
    assert!(!e.contains("ckpt-tmp"), "never names the temp path: {e}");
    assert!(!dst.exists());
    assert_eq!(hidden(t.path()), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault injection (CKPT_TEST_*) exists only in debug builds"
)]
fn real_disk_full_on_a_small_tmpfs() {
    // A 1 MiB tmpfs in a private mount namespace (needs root); skipped where unshare is refused.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    synth_ckpt(&src, 2, 128, 1); // ~2 MB
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {m} || exit 77; \
         {bin} convert {src} {m}/out; rc=$?; \
         echo \"rc=$rc\"; ls -A {m}; \
         CKPT_TEST_SKIP_PREFLIGHT=1 {bin} convert {src} {m}/out; rc=$?; \
         echo \"rc2=$rc\"; ls -A {m}; exit 0",
        m = s(&mnt),
        bin = BIN,
        src = s(&src)
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output();
    let Ok(o) = o else { return };
    if o.status.code() == Some(77) || !o.status.success() {
        eprintln!("skipped: unshare/mount not permitted here");
        return;
    }
    let out = text(&o);
    assert!(out.contains("rc=2"), "{out}");
    assert!(out.contains("not enough space: the output needs"), "{out}");
    // Without the preflight the kernel's ENOSPC (at fallocate or write) is reported the same way.
    assert!(out.contains("rc2=2"), "{out}");
    assert!(out.contains("no space left on device (needs"), "{out}");
    assert!(
        out.contains(&format!("{}/out/model.safetensors", s(&mnt))),
        "{out}"
    );
    assert!(!out.contains("ckpt-tmp"), "no temporaries left: {out}");
    assert!(!out.lines().any(|l| l == "out"), "{out}");
}

#[test]
fn killed_runs_leave_the_destination_absent_or_complete_and_clean_removes_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    synth_ckpt(&src, 2, 1024, 3); // ~60 MB
    let a = Checkpoint::open(&src).unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let (mut absent, mut complete) = (0, 0);
    // The last "delay" is no kill at all, so the comparison path always runs at least once.
    for (trial, delay_ms) in [2u64, 10, 30, 60, 120, 250, 500, 1000, 2000, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let dst = work.join(format!("out{trial}"));
        let mut child = Command::new(BIN)
            .args(["convert", s(&src), s(&dst), "--to", "llama"])
            .spawn()
            .unwrap();
        if delay_ms != u64::MAX {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
        }
        let _ = child.wait();
        if !dst.exists() {
            absent += 1;
        } else {
            complete += 1;
            let b = Checkpoint::open(&dst).expect("a destination that exists is complete");
            same_tensors(&a, &b, &yi_to_llama);
        }
    }
    // Replacing an existing destination (--force): it is always the old or the complete new one.
    let (mut kept_old, mut replaced) = (0, 0);
    for (trial, delay_ms) in [5u64, 40, 150, 400, 1000, u64::MAX].into_iter().enumerate() {
        let dst = work.join(format!("force{trial}"));
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(dst.join("old.txt"), b"old").unwrap();
        std::fs::write(dst.join("model.safetensors"), b"old").unwrap();
        std::fs::write(dst.join("config.json"), b"{}").unwrap();
        let mut child = Command::new(BIN)
            .args(["convert", s(&src), s(&dst), "--force", "-q"])
            .spawn()
            .unwrap();
        if delay_ms != u64::MAX {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
        }
        let _ = child.wait();
        if dst.join("old.txt").exists() {
            kept_old += 1;
            assert_eq!(std::fs::read(dst.join("old.txt")).unwrap(), b"old");
        } else {
            replaced += 1;
            let b = Checkpoint::open(&dst).expect("a replaced destination is complete");
            same_tensors(&a, &b, &yi_to_llama);
        }
    }
    assert!(replaced >= 1);
    eprintln!(
        "killed runs: {absent} left no destination, {complete} a complete one; \
         with --force {kept_old} kept the old one, {replaced} the complete new one"
    );
    assert!(complete >= 1);
    let o = ckpt(&["convert", "--clean", s(&work)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(hidden(&work), Vec::<String>::new());
    // Source never modified.
    let again = Checkpoint::open(&src).unwrap();
    same_tensors(&a, &again, &|n| n.to_string());
}

#[test]
fn sigint_stops_with_interrupted_and_removes_the_staging_directory() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    synth_ckpt(&src, 2, 1024, 3);
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let dst = work.join("out");
    let child = Command::new(BIN)
        .args(["rename", s(&src), s(&dst), "--rename", "(.*)=$1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the staging directory exists, then interrupt.
    for _ in 0..2000 {
        if !hidden(&work).is_empty() || dst.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    if o.status.success() {
        // It finished first: then the output must be complete.
        assert!(Checkpoint::open(&dst).is_ok());
    } else {
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("error[interrupted]"), "{}", text(&o));
        assert!(!dst.exists());
    }
    assert_eq!(hidden(&work), Vec::<String>::new());
}

#[test]
fn writer_streams_split_and_zero_segments() {
    let ck = Checkpoint::open(fixture("yi")).unwrap();
    let q = ck
        .position("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    let k = ck
        .position("model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    let tensors = vec![
        ViewTensor {
            name: "renamed".into(),
            dtype: Dtype::F32,
            shape: vec![64, 64],
            segments: vec![Segment::Rows {
                tensor: q,
                row_start: 0,
                rows: 64,
            }],
            sources: vec![ck.tensors[q].name.clone()],
            transform: "rename",
        },
        ViewTensor {
            name: "half".into(),
            dtype: Dtype::F32,
            shape: vec![16, 64],
            segments: vec![Segment::Rows {
                tensor: k,
                row_start: 16,
                rows: 16,
            }],
            sources: vec![ck.tensors[k].name.clone()],
            transform: "split",
        },
        ViewTensor {
            name: "cat".into(),
            dtype: Dtype::F32,
            shape: vec![3, 64],
            segments: vec![
                Segment::Rows {
                    tensor: k,
                    row_start: 31,
                    rows: 1,
                },
                Segment::Zeros { bytes: 256 },
                Segment::Rows {
                    tensor: q,
                    row_start: 0,
                    rows: 1,
                },
            ],
            sources: vec![ck.tensors[k].name.clone(), ck.tensors[q].name.clone()],
            transform: "concat",
        },
        ViewTensor {
            name: "bias".into(),
            dtype: Dtype::F32,
            shape: vec![64],
            segments: vec![Segment::Zeros { bytes: 256 }],
            sources: vec![],
            transform: "zeros",
        },
    ];
    let view = View::new(&ck, "test", "test", tensors, ck.config.clone(), vec![]).unwrap();
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("out");
    let s = write::write_view(
        &view,
        &dst,
        &WriteOptions {
            drop_remote_code: true,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.dropped_files, vec!["modeling_yi.py".to_string()]);
    assert!(!dst.join("modeling_yi.py").exists());
    assert!(dst.join("tokenizer_config.json").exists());
    let out = Checkpoint::open(&dst).unwrap();
    for vt in &view.tensors {
        assert_eq!(
            out.data(out.get(&vt.name).unwrap()).unwrap(),
            &*view.read(vt).unwrap()
        );
    }
    let kd = ck.data(&ck.tensors[k]).unwrap();
    assert_eq!(
        out.data(out.get("half").unwrap()).unwrap(),
        &kd[16 * 256..32 * 256]
    );
    assert!(
        out.data(out.get("bias").unwrap())
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
}

/// The Yi fixture rewritten with `extra` spaces of header padding (same data).
fn padded_yi(dir: &Path, extra: usize) {
    copy_dir(&fixture("yi"), dir);
    let ck = Checkpoint::open(fixture("yi")).unwrap();
    let sh = &ck.shards[0];
    let entries: Vec<_> = ck
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.begin, t.end))
        .collect();
    let h = serialize_header(sh.header.metadata.as_deref(), &entries).unwrap();
    let mut json = h[8..].to_vec();
    json.resize(json.len() + extra, b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&sh.bytes()[sh.data_start()..]);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn in_place_reports_missing_header_space() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    copy_dir(&fixture("yi"), &src);
    let before = file_bytes(&src);
    let o = ckpt(&["convert", s(&src), "--to", "llama", "--in-place"]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o);
    assert!(e.contains("does not fit"), "{e}");
    assert!(e.contains("bytes short"), "{e}");
    assert!(e.contains("without --in-place"), "{e}");
    assert_eq!(file_bytes(&src), before);
}

#[test]
fn in_place_round_trip_yi_llama_yi() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    padded_yi(&src, 256);
    let original = Checkpoint::open(&src).unwrap();
    let size = std::fs::metadata(src.join("model.safetensors"))
        .unwrap()
        .len();
    let o = ckpt(&["convert", s(&src), "--to", "llama", "--in-place"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("renamed 4 tensors in place"),
        "{}",
        text(&o)
    );
    let llama = Checkpoint::open(&src).unwrap();
    assert_eq!(
        std::fs::metadata(src.join("model.safetensors"))
            .unwrap()
            .len(),
        size
    );
    assert_eq!(
        llama.shards[0].header.header_len,
        original.shards[0].header.header_len
    );
    same_tensors(&original, &llama, &yi_to_llama);
    drop(llama);
    let o = ckpt(&[
        "convert",
        s(&src),
        "--from",
        "llama",
        "--to",
        "yi",
        "--in-place",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let back = Checkpoint::open(&src).unwrap();
    assert_eq!(
        back.config.as_ref().unwrap().model_type.as_deref(),
        Some("Yi")
    );
    same_tensors(&original, &back, &|n| n.to_string());
    assert_eq!(hidden(&src), Vec::<String>::new(), "journal removed");
}

#[test]
fn interrupted_in_place_run_is_rolled_back() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    padded_yi(&src, 256);
    let before = file_bytes(&src);
    {
        let ck = Checkpoint::open(&src).unwrap();
        let id = View::identity(&ck);
        let tensors = id
            .tensors
            .iter()
            .cloned()
            .map(|mut v| {
                v.name = yi_to_llama(&v.name);
                v
            })
            .collect();
        let view = View::new(&ck, "yi", "llama", tensors, ck.config.clone(), vec![]).unwrap();
        let plan = inplace::plan_in_place(&view).unwrap();
        assert_eq!(plan.headers.len(), 1);
        // Crash simulation: journal durable, half of the new header written, then "killed".
        inplace::write_journal(&plan).unwrap();
        let h = &plan.headers[0];
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join(&h.file))
            .unwrap();
        f.write_all_at(&h.new[..h.new.len() / 2], 8).unwrap();
    }
    assert!(
        Checkpoint::open(&src).is_err(),
        "half-applied header is broken"
    );
    let o = ckpt(&["convert", "--recover", s(&src)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("restored the old header"), "{}", text(&o));
    assert_eq!(file_bytes(&src), before);
    // A second recover has nothing to do.
    let o = ckpt(&["convert", "--recover", s(&src)]);
    assert!(text(&o).contains("nothing to recover"), "{}", text(&o));
}

#[test]
fn in_place_run_refuses_a_leftover_journal_and_never_recovers_implicitly() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    padded_yi(&src, 256);
    let original = Checkpoint::open(&src).unwrap();
    {
        let ck = Checkpoint::open(&src).unwrap();
        let id = View::identity(&ck);
        let tensors = id
            .tensors
            .iter()
            .cloned()
            .map(|mut v| {
                v.name = v.name.replace("lm_head", "output");
                v
            })
            .collect();
        let view = View::new(&ck, "x", "x", tensors, None, vec![]).unwrap();
        let plan = inplace::plan_in_place(&view).unwrap();
        inplace::write_journal(&plan).unwrap();
        let h = &plan.headers[0];
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join(&h.file))
            .unwrap();
        f.write_all_at(&h.new, 8).unwrap();
    }
    let before = file_bytes(&src);
    let o = ckpt(&["convert", s(&src), "--to", "llama", "--in-place"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("convert --recover"), "{}", text(&o));
    assert_eq!(
        file_bytes(&src),
        before,
        "nothing changed, nothing recovered"
    );
    // Every reading command refuses the half-renamed checkpoint the same way.
    for cmd in ["inspect", "detect", "check"] {
        let o = ckpt(&[cmd, s(&src)]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(text(&o).contains("--recover"), "{cmd}: {}", text(&o));
    }
    let o = ckpt(&["convert", "--recover", s(&src)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ckpt(&["convert", s(&src), "--to", "llama", "--in-place"]);
    assert!(o.status.success(), "{}", text(&o));
    let now = Checkpoint::open(&src).unwrap();
    assert!(now.get("lm_head.weight").is_some(), "rolled back first");
    same_tensors(&original, &now, &|n| yi_to_llama(n));
}

#[test]
fn yi_converts_to_plain_llama_without_remote_code() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("llama");
    let o = ckpt(&["convert", s(&fixture("yi")), s(&dst)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not copied (remote code, not needed by the target): modeling_yi.py"),
        "{}",
        text(&o)
    );
    assert!(!dst.join("modeling_yi.py").exists());
    assert!(dst.join("tokenizer_config.json").exists());
    let b = Checkpoint::open(&dst).unwrap();
    let cfg = b.config.as_ref().unwrap();
    assert_eq!(cfg.model_type.as_deref(), Some("llama"));
    assert_eq!(cfg.architectures, vec!["LlamaForCausalLM".to_string()]);
    assert!(cfg.raw.get("auto_map").is_none());
    let a = Checkpoint::open(fixture("yi")).unwrap();
    same_tensors(&a, &b, &yi_to_llama);
}

/// Every LLaMA-exact fixture converts to `llama` (a plain LLaMA checkpoint: LLaMA names, config
/// `model_type: llama`, bytes equal to the source's canonical view) and back to its family (bytes
/// equal to the source's tensors).
#[test]
fn every_llama_exact_fixture_converts_to_llama_and_back() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut done = 0;
    for case in manifest.as_array().unwrap() {
        if case["llama_exact"] != serde_json::Value::Bool(true) {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let src = Checkpoint::open(fixture(name)).unwrap();
        let (canon, family) = ckpt::detect::open_view(&src, &reg, None, &[]).unwrap();
        let llama = t.path().join(format!("{name}-llama"));
        let o = ckpt(&[
            "convert",
            s(&fixture(name)),
            s(&llama),
            "--to",
            "llama",
            "-q",
        ]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let out = Checkpoint::open(&llama).unwrap();
        let cfg = out
            .config
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no config"));
        assert_eq!(cfg.model_type.as_deref(), Some("llama"), "{name}");
        assert_eq!(out.tensors.len(), canon.tensors.len(), "{name}");
        for vt in &canon.tensors {
            let got = out
                .get(&vt.name)
                .unwrap_or_else(|| panic!("{name}: {}", vt.name));
            assert_eq!(
                out.data(got).unwrap(),
                &*canon.read(vt).unwrap(),
                "{name}: {}",
                vt.name
            );
        }
        let d = ckpt::detect::detect(&out, &reg);
        assert_eq!(
            d.winner.as_deref(),
            Some("llama"),
            "{name}: {:?}",
            d.evidence
        );

        let back = t.path().join(format!("{name}-back"));
        let o = ckpt(&[
            "convert",
            s(&llama),
            s(&back),
            "--from",
            "llama",
            "--to",
            &family,
            "-q",
        ]);
        assert!(o.status.success(), "{name} -> {family}: {}", text(&o));
        let again = Checkpoint::open(&back).unwrap();
        same_tensors(&src, &again, &|n| n.to_string());
        if src.layout == ckpt::checkpoint::Layout::Meta {
            // Back in Meta's own layout: consolidated.safetensors + params.json, no config.json.
            assert!(back.join("consolidated.safetensors").exists(), "{name}");
            assert!(back.join("params.json").exists(), "{name}");
            assert!(!back.join("config.json").exists(), "{name}");
            assert!(
                !llama.join("params.json").exists(),
                "{name}: params.json not copied"
            );
        }
        done += 1;
    }
    assert!(done >= 16, "only {done} LLaMA-exact fixtures");
}

/// Issue 11: `convert --verify --rename ...` compared the output with the *renamed* source, so a
/// rename that swaps the two norms passed as equivalent. It now compares with the source as it is on
/// disk: not equivalent, exit 1, nothing under DST.
#[test]
fn convert_verify_with_a_norm_swapping_rename_is_not_equivalent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("swapped");
    let o = ckpt(&[
        "convert",
        s(&fixture("llama-gqa")),
        s(&out),
        "--to",
        "llama",
        "--rename",
        r"model\.layers\.(\d+)\.input_layernorm\.(.*)=model.layers.$1.post_attention_layernorm.$2",
        "--rename",
        r"model\.layers\.(\d+)\.post_attention_layernorm\.(.*)=model.layers.$1.input_layernorm.$2",
        "--verify",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("verdict: NOT equivalent (logits differ)"), "{t}");
    assert!(t.contains("nothing was written"), "{t}");
    assert!(!out.exists(), "{t}");
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    // Without --verify the same conversion is written, and `ckpt verify` agrees it is not equivalent.
    let o = ckpt(&[
        "convert",
        s(&fixture("llama-gqa")),
        s(&out),
        "--to",
        "llama",
        "--rename",
        r"model\.layers\.(\d+)\.input_layernorm\.(.*)=model.layers.$1.post_attention_layernorm.$2",
        "--rename",
        r"model\.layers\.(\d+)\.post_attention_layernorm\.(.*)=model.layers.$1.input_layernorm.$2",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = ckpt(&["verify", s(&fixture("llama-gqa")), s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// The other side of the same rule: when the source cannot be read by any family without the
/// `--rename` rules, `--verify` has nothing to compare with: inconclusive, exit 2, nothing written.
#[test]
fn convert_verify_of_a_source_unreadable_without_renames_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    // Every tensor under a `base_model.model.` prefix: no family reads it as it is.
    let src = dir.path().join("prefixed");
    std::fs::create_dir_all(&src).unwrap();
    let ck = Checkpoint::open(fixture("llama-gqa")).unwrap();
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for t in &ck.tensors {
        let b = ck.data(t).unwrap();
        entries.push((
            format!("base_model.model.{}", t.name),
            t.dtype,
            t.shape.clone(),
            data.len(),
            data.len() + b.len(),
        ));
        data.extend_from_slice(b);
    }
    let mut bytes = serialize_header(None, &entries).unwrap();
    bytes.extend_from_slice(&data);
    std::fs::write(src.join("model.safetensors"), bytes).unwrap();
    std::fs::copy(
        fixture("llama-gqa").join("config.json"),
        src.join("config.json"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let strip = r"base_model\.model\.(.*)=$1";
    let o = ckpt(&["rename", s(&src), s(&out), "--rename", strip, "--verify"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("verdict: inconclusive"), "{t}");
    assert!(t.contains("without the --rename rules"), "{t}");
    assert!(!out.exists());
    // Without --verify the rename is written, and it verifies against the original.
    let o = ckpt(&["rename", s(&src), s(&out), "--rename", strip, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = ckpt(&["verify", s(&fixture("llama-gqa")), s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `--verify` with `--in-place` used to be ignored without a word (no output to compare): refused.
#[test]
fn in_place_with_verify_is_refused_not_silently_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("yi");
    copy_dir(&fixture("yi"), &src);
    let before = file_bytes(&src);
    let o = ckpt(&["rename", s(&src), "--in-place", "--rename", LN1, "--verify"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--in-place leaves no source"),
        "{}",
        text(&o)
    );
    assert_eq!(file_bytes(&src), before);
}

/// Absolute file offset of each tensor's data, mod the page size, by name.
fn page_residues(ck: &Checkpoint, rename: &dyn Fn(&str) -> String) -> Vec<(String, u64)> {
    ck.tensors
        .iter()
        .map(|t| {
            let sh = &ck.shards[t.shard];
            let abs = (sh.data_start() + t.begin) as u64;
            (rename(&t.name), abs % write::plan::ALIGN)
        })
        .collect()
}

/// Issue #17 item 4: in the rename case (an output file that is one contiguous run of one source
/// file) every tensor's data offset is congruent mod 4096 with its source offset, the padded header
/// is accepted by our reader and by the reference `safetensors` crate, and the bytes round-trip.
#[test]
fn issue_17_rename_keeps_data_offsets_page_congruent() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    synth_ckpt(&src, 2, 256, 1);
    let dst = t.path().join("out");
    let o = ckpt(&["convert", s(&src), s(&dst), "--to", "llama"]);
    assert!(o.status.success(), "{}", text(&o));
    let a = Checkpoint::open(&src).unwrap();
    let b = Checkpoint::open(&dst).unwrap();
    same_tensors(&a, &b, &yi_to_llama);
    let mut want = page_residues(&a, &yi_to_llama);
    let mut got = page_residues(&b, &|n| n.to_string());
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // The header was padded (with spaces, 8-aligned) rather than left at its minimal length.
    let hl = b.shards[0].header.header_len;
    assert_eq!(hl % 8, 0);
    assert_eq!(
        (hl as u64 + 8) % write::plan::ALIGN,
        (a.shards[0].data_start() as u64) % write::plan::ALIGN
    );
    let bytes = std::fs::read(dst.join("model.safetensors")).unwrap();
    let json = &bytes[8..8 + hl];
    assert!(json.ends_with(b" "), "padded with spaces");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference reader accepts it");
    for tv in a.tensors.iter() {
        let n = yi_to_llama(&tv.name);
        assert_eq!(st.tensor(&n).unwrap().data(), a.data(tv).unwrap(), "{n}");
    }
    // Round trip: renaming back gives the source's tensors again.
    let back = t.path().join("back");
    let o = ckpt(&[
        "convert",
        s(&dst),
        s(&back),
        "--from",
        "llama",
        "--to",
        "yi",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c = Checkpoint::open(&back).unwrap();
    same_tensors(&a, &c, &|n| n.to_string());
    let mut again = page_residues(&c, &|n| n.to_string());
    again.sort();
    let mut orig = page_residues(&a, &|n| n.to_string());
    orig.sort();
    assert_eq!(again, orig);
}

/// A two-shard source: the files are valid, and runs through the kernel copy or (forced) the
/// buffered fallback give byte-identical output.
#[test]
fn issue_17_gathered_shards_are_valid_and_output_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    synth_ckpt(&src, 3, 256, 2);
    let a = Checkpoint::open(&src).unwrap();
    assert_eq!(a.shards.len(), 2);
    let mut outs = Vec::new();
    for (k, inject) in [None, None, Some("18"), Some("18@65536"), Some("95")]
        .into_iter()
        .enumerate()
    {
        let dst = t.path().join(format!("out{k}"));
        let mut cmd = Command::new(BIN);
        cmd.args(["convert", s(&src), s(&dst), "--to", "llama"]);
        if let Some(e) = inject {
            // EXDEV (18) from the first call or after 64 KiB, EOPNOTSUPP (95): refused by the
            // kernel, so the copy continues through the buffer.
            cmd.env("CKPT_TEST_CFR_ERRNO", e);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{inject:?}: {}", text(&o));
        let b = Checkpoint::open(&dst).unwrap();
        same_tensors(&a, &b, &yi_to_llama);
        assert_eq!(b.shards[0].data_start() % 8, 0);
        outs.push(file_bytes(&dst));
    }
    for o in &outs[1..] {
        assert!(o == &outs[0], "outputs differ between runs");
    }
}

/// A renamed multi-file safetensors checkpoint keeps its files: the same tensors in each, in the
/// transformers file names with an index, and every tensor at a data offset congruent mod 4096
/// with its source (the copy can share or page-align extents). `--max-shard-size` still splits a
/// file larger than it; a PyTorch source is still gathered (tests/torch.rs).
#[test]
fn issue_17_a_rename_keeps_the_source_shards() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    synth_ckpt(&src, 3, 256, 2);
    let a = Checkpoint::open(&src).unwrap();
    assert_eq!(a.shards.len(), 2);
    let dst = t.path().join("out");
    let o = ckpt(&["convert", s(&src), s(&dst), "--to", "llama"]);
    assert!(o.status.success(), "{}", text(&o));
    let b = Checkpoint::open(&dst).unwrap();
    assert_eq!(b.shards.len(), 2);
    assert!(dst.join("model-00001-of-00002.safetensors").exists());
    assert!(dst.join("model.safetensors.index.json").exists());
    for (sa, sb) in a.shards.iter().zip(&b.shards) {
        let names =
            |ck: &Checkpoint, sh: &ckpt::checkpoint::shard::Shard, f: &dyn Fn(&str) -> String| {
                let mut v: Vec<String> = ck
                    .tensors
                    .iter()
                    .filter(|t| ck.shards[t.shard].path == sh.path)
                    .map(|t| f(&t.name))
                    .collect();
                v.sort();
                v
            };
        assert_eq!(
            names(&b, sb, &|n| n.to_string()),
            names(&a, sa, &yi_to_llama)
        );
    }
    let mut want = page_residues(&a, &yi_to_llama);
    let mut got = page_residues(&b, &|n| n.to_string());
    want.sort();
    got.sort();
    assert_eq!(got, want, "every tensor congruent mod 4096 with its source");
    same_tensors(&a, &b, &yi_to_llama);
}

/// A copy_file_range error that is not a refusal (EIO) is a write error naming the file and the
/// tensor; nothing is committed.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault injection (CKPT_TEST_*) exists only in debug builds"
)]
fn issue_17_copy_file_range_io_error_is_reported_not_retried() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    synth_ckpt(&src, 2, 256, 1);
    let dst = t.path().join("out");
    let o = Command::new(BIN)
        .args(["convert", s(&src), s(&dst), "--to", "llama"])
        .env("CKPT_TEST_CFR_ERRNO", "5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = text(&o);
    assert!(
        e.contains(&format!("{}/model.safetensors", dst.display())),
        "{e}"
    );
    assert!(e.contains("tensor \"model."), "names the tensor: {e}");
    assert!(!dst.exists());
    assert_eq!(hidden(t.path()), Vec::<String>::new());
}

/// Every tensor of `ck` renamed `r.<name>`, in reverse order.
fn reversed_tensors(ck: &Checkpoint) -> Vec<ViewTensor> {
    ck.tensors
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| ViewTensor {
            name: format!("r.{}", p.name),
            dtype: p.dtype,
            shape: p.shape.clone(),
            segments: vec![Segment::Rows {
                tensor: i,
                row_start: 0,
                rows: p.shape.first().copied().unwrap_or(1),
            }],
            sources: vec![p.name.clone()],
            transform: "rename",
        })
        .collect()
}

/// Re-ordered tensors (no contiguous run of the source) still give a valid, 8-aligned file with the
/// right bytes; an output with less than MIN_ALIGNED_BYTES of data keeps the plain layout (the
/// header padded to 8 bytes only, as the reference writer does).
#[test]
fn issue_17_reordered_or_small_outputs_fall_back_to_a_valid_layout() {
    // Small: the Yi fixture, reversed.
    let ck = Checkpoint::open(fixture("yi")).unwrap();
    let view = View::new(&ck, "test", "test", reversed_tensors(&ck), None, vec![]).unwrap();
    let plan = write::plan::plan(&view, write::DEFAULT_MAX_SHARD_SIZE).unwrap();
    let f = &plan.files[0];
    let entries: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.begin, t.end))
        .collect();
    assert_eq!(
        f.header,
        serialize_header(Some(&plan.metadata), &entries).unwrap()
    );
    // Larger, reversed: whatever the padding, the file is valid and holds the right bytes.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("yi");
    synth_ckpt(&src, 2, 256, 1);
    let ck = Checkpoint::open(&src).unwrap();
    let view = View::new(&ck, "test", "test", reversed_tensors(&ck), None, vec![]).unwrap();
    let dst = t.path().join("out");
    write::write_view(&view, &dst, &WriteOptions::default()).unwrap();
    let out = Checkpoint::open(&dst).unwrap();
    assert_eq!(out.shards[0].data_start() % 8, 0);
    let bytes = std::fs::read(dst.join("model.safetensors")).unwrap();
    safetensors::SafeTensors::deserialize(&bytes).expect("reference reader accepts it");
    for vt in &view.tensors {
        assert_eq!(
            out.data(out.get(&vt.name).unwrap()).unwrap(),
            &*view.read(vt).unwrap()
        );
    }
}

/// A user mapping whose target is misspelt (`input_layrnorm`) makes a canonical view with a name
/// LLaMA does not have; converting to llama writes the canonical view as it is, so it must be
/// refused naming the rule, the file and the tensor, not written as a "llama" checkpoint.
#[test]
fn convert_to_llama_refuses_a_mapping_target_that_is_not_a_llama_name() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("myyi.toml");
    std::fs::write(
        &map,
        r#"name = "myyi"
summary = "Yi with a typo"
base = "llama"
exact = true
sources = ["me"]
[tensors]
"model.layers.{i}.ln1.weight" = "model.layers.{i}.input_layrnorm.weight"
"model.layers.{i}.ln2.weight" = "model.layers.{i}.post_attention_layernorm.weight"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = ckpt(&[
        "convert",
        s(&fixture("yi")),
        s(&out),
        "--from",
        "myyi",
        "--mapping",
        s(&map),
        "--quiet",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("model.layers.0.input_layrnorm.weight"), "{t}");
    assert!(
        t.contains(r#"rule [tensors] "model.layers.{i}.ln1.weight""#),
        "{t}"
    );
    assert!(t.contains("myyi.toml"), "{t}");
    assert!(t.contains("not a tensor name of `llama`"), "{t}");
    assert!(!out.exists(), "{t}");
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
}

/// Converting to a user family that names no `model_type` says that the written config keeps
/// another family's (so loaders and `detect` go by that), and how to read the output back.
#[test]
fn converting_to_a_family_without_model_type_says_what_the_config_names() {
    let t = tempfile::tempdir().unwrap();
    let map = t.path().join("normy.toml");
    std::fs::write(
        &map,
        "name = \"normy\"\nsummary = \"norms renamed\"\nbase = \"llama\"\nexact = true\nsources = [\"test\"]\n\n[tensors]\n\"model.layers.{i}.n1.weight\" = \"model.layers.{i}.input_layernorm.weight\"\n\"model.layers.{i}.n2.weight\" = \"model.layers.{i}.post_attention_layernorm.weight\"\n",
    )
    .unwrap();
    let dst = t.path().join("out");
    let o = ckpt(&[
        "convert",
        s(&fixture("llama-gqa")),
        s(&dst),
        "--to",
        "normy",
        "--mapping",
        s(&map),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("family `normy` names no `model_type`")
            && out.contains("keeps `model_type` `llama`")
            && out.contains("--family normy --mapping"),
        "{out}"
    );
    // read back as the note says, it computes
    let o = ckpt(&[
        "logits",
        s(&dst),
        "--family",
        "normy",
        "--mapping",
        s(&map),
        "--ids",
        "1,2,3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // a family that names its model_type gets no such note
    let dst = t.path().join("yi");
    let o = ckpt(&["convert", s(&fixture("llama-gqa")), s(&dst), "--to", "yi"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("names no `model_type`"), "{}", text(&o));
}

/// A top-level JSON file whose `auto_map` names code that is not shipped loses those entries (and
/// the convert output says so); other JSON files, the large `tokenizer.json` kind with no
/// `auto_map` (skipped without being parsed in full) or with `NaN` tokens, are copied byte for byte.
#[test]
fn dangling_auto_map_entries_are_removed_and_other_json_copied_as_is() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    copy_dir(&fixture("llama-gqa"), &src);
    let proc_cfg = r#"{"auto_map": {"AutoProcessor": "processing_x.ProcessorX", "AutoImageProcessor": "image_x.ImageX"}, "size": 3}"#;
    std::fs::write(src.join("processor_config.json"), proc_cfg).unwrap();
    std::fs::write(src.join("image_x.py"), "class ImageX: pass\n").unwrap();
    let vocab: Vec<String> = (0..20_000).map(|i| format!("\"t{i}\": {i}")).collect();
    let tok = format!(
        r#"{{"model": {{"type": "BPE", "vocab": {{{}}}, "merges": []}}, "note": "auto_map"}}"#,
        vocab.join(", ")
    );
    std::fs::write(src.join("extra_vocab.json"), &tok).unwrap();
    let nonfinite = r#"{"limit": NaN, "scale": 1.0}"#;
    std::fs::write(src.join("extra_limits.json"), nonfinite).unwrap();
    let dst = t.path().join("dst");
    let o = ckpt(&["convert", s(&src), s(&dst), "--to", "yi"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "processor_config.json: removed auto_map entries naming code that is not shipped: AutoProcessor"
        ),
        "{out}"
    );
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("processor_config.json")).unwrap()).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"auto_map": {"AutoImageProcessor": "image_x.ImageX"}, "size": 3})
    );
    assert_eq!(
        std::fs::read(dst.join("extra_vocab.json")).unwrap(),
        tok.as_bytes()
    );
    assert_eq!(
        std::fs::read(dst.join("extra_limits.json")).unwrap(),
        nonfinite.as_bytes()
    );
}
