//! `ckpt inspect` as a user runs it: every fixture, a sparse 7-shard 34B layout, and every way opening a
//! checkpoint can fail (each with its exit code and a message naming the file).

use std::path::Path;

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

mod common;
use common::{ckpt, fixture};

fn fixture_names() -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap();
    m.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_fixture_opens_and_inspects() {
    let names = fixture_names();
    assert!(names.len() >= 17, "{names:?}");
    for name in names {
        let ck = Checkpoint::open(fixture(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!ck.tensors.is_empty(), "{name}");
        assert!(ck.config.is_some(), "{name}: no config");
        let (code, out, err) = ckpt(&["inspect", fixture(&name).to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("parameters"), "{name}: {out}");
        // The golden file opens too.
        Checkpoint::open(fixture(&name).join("expected.safetensors")).unwrap();
    }
}

#[test]
fn yi_fixture_table_collapses_layers() {
    let (code, out, _) = ckpt(&["inspect", fixture("yi").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("model.layers.{0..1}.ln1.weight"), "{out}");
    assert!(out.contains("model_type=Yi"), "{out}");
    assert!(out.contains("parameters 94,528 (94.53K)"), "{out}");
    let (_, all, _) = ckpt(&["inspect", "--all", fixture("yi").to_str().unwrap()]);
    assert!(
        all.contains("model.layers.1.ln2.weight") && !all.contains("{0..1}"),
        "{all}"
    );
    let (_, grep, _) = ckpt(&[
        "inspect",
        "--grep",
        r"ln\d",
        fixture("yi").to_str().unwrap(),
    ]);
    assert!(grep.contains("4 of 21 tensors match"), "{grep}");
    assert!(!grep.contains("q_proj"), "{grep}");
}

#[test]
fn json_lists_every_tensor_with_offsets() {
    let (code, out, _) = ckpt(&[
        "inspect",
        "--json",
        fixture("llama-sharded").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layout"], "sharded");
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), v["tensor_count"].as_u64().unwrap() as usize);
    let q = tensors
        .iter()
        .find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q["shape"], serde_json::json!([64, 64]));
    assert_eq!(q["dtype"], "F32");
    let (b, e) = (
        q["data_offsets"][0].as_u64().unwrap(),
        q["data_offsets"][1].as_u64().unwrap(),
    );
    assert_eq!(e - b, 64 * 64 * 4);
    assert_eq!(v["config"]["num_key_value_heads"], 2);
}

#[test]
fn meta_layout_reads_params_json() {
    let ck = Checkpoint::open(fixture("llama-meta")).unwrap();
    assert_eq!(ck.layout, ckpt::checkpoint::Layout::Meta);
    let c = ck.config.unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_key_value_heads),
        (Some(64), Some(2), Some(2))
    );
}

#[test]
fn sparse_34b_seven_shards_headers_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dims::YI_34B;
    let mut specs = synth::llama_tensors(&d, Dtype::BF16, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = d.config_json("Yi", "YiForCausalLM", "bfloat16");
    synth::write_checkpoint(dir.path(), Some(&cfg), &specs, 7, Fill::Sparse).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.shards.len(), 7);
    assert_eq!(ck.tensors.len(), 543);
    assert_eq!(ck.parameter_count(), 34_388_917_248);
    let (code, out, err) = ckpt(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("34.39B"), "{out}");
    assert!(
        out.contains("model.layers.{0..59}.self_attn.q_proj.weight"),
        "{out}"
    );
    assert!(out.contains("[7168, 7168]"), "{out}");
    // No data was read: the files are holes and take (almost) no disk.
    let used: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            e.unwrap().metadata().unwrap().blocks() * 512
        })
        .sum();
    assert!(used < 10_000_000, "sparse files use {used} bytes");
}

/// Write `bytes` as `name` in a new temp dir and run inspect on the file; return (dir, code, stderr).
fn inspect_bytes(name: &str, bytes: &[u8]) -> (tempfile::TempDir, i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let (code, _, err) = ckpt(&["inspect", p.to_str().unwrap()]);
    (dir, code, err)
}

fn st_file(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data));
    v
}

#[test]
fn opening_errors_name_the_file_and_exit_2() {
    let valid = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "lfs.safetensors",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n".to_vec(),
            "git-lfs pointer",
        ),
        (
            "pickle.safetensors",
            vec![0x80, 0x04, 0x95, 0, 0, 0, 0, 0, 0, 0, 0],
            "never unpickles",
        ),
        (
            // torch.save(sd, f, _use_new_zipfile_serialization=False, pickle_protocol=4): the
            // legacy magic number after a protocol-4 frame
            "legacy-proto4.bin",
            b"\x80\x04\x95\x0d\x00\x00\x00\x00\x00\x00\x00\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e".to_vec(),
            "legacy (non-zip) torch.save file written with pickle protocol 4",
        ),
        (
            "zip.bin.safetensors",
            b"PK\x03\x04\x14\x00\x00\x00\x00\x00".to_vec(),
            "zip archive",
        ),
        (
            "model.gguf.safetensors",
            b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            "GGUF",
        ),
        ("empty.safetensors", Vec::new(), "empty"),
        (
            "trunc-header.safetensors",
            st_file(valid, 8)[..20].to_vec(),
            "truncated",
        ),
        ("trunc-data.safetensors", st_file(valid, 5), "truncated"),
        (
            "trailing.safetensors",
            st_file(valid, 12),
            "unexpected bytes after the last tensor",
        ),
        (
            "dup.safetensors",
            st_file(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "duplicate tensor name",
        ),
        (
            "huge.safetensors",
            [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat(),
            "over the limit",
        ),
    ];
    for (name, bytes, want) in cases {
        let (_d, code, err) = inspect_bytes(name, &bytes);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(want), "{name}: want {want:?} in {err}");
        assert!(
            err.contains(name),
            "{name}: message does not name the file: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

fn sharded_fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("llama-sharded")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn edit_index(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn index_errors_name_the_index() {
    type Edit = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "traversal",
            Box::new(|d| {
                edit_index(d, |v| {
                    v["weight_map"]["model.norm.weight"] = "../../etc/passwd".into()
                })
            }),
            "not a plain file name",
        ),
        (
            "absolute",
            Box::new(|d| {
                edit_index(d, |v| {
                    v["weight_map"]["model.norm.weight"] = "/etc/passwd".into()
                })
            }),
            "not a plain file name",
        ),
        (
            "missing shard",
            Box::new(|d| std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap()),
            "do not exist: model-00002-of-00002.safetensors",
        ),
        (
            "index lists a tensor its shard lacks",
            Box::new(|d| {
                edit_index(d, |v| {
                    v["weight_map"]["model.extra.weight"] =
                        "model-00001-of-00002.safetensors".into()
                })
            }),
            "does not hold it",
        ),
        (
            "shard tensor missing from index",
            Box::new(|d| {
                edit_index(d, |v| {
                    v["weight_map"]
                        .as_object_mut()
                        .unwrap()
                        .remove("model.norm.weight");
                })
            }),
            "the index does not list it",
        ),
        (
            "stray shard",
            Box::new(|d| {
                std::fs::copy(
                    d.join("model-00002-of-00002.safetensors"),
                    d.join("model-00003-of-00003.safetensors"),
                )
                .unwrap();
            }),
            "does not list: model-00003-of-00003.safetensors",
        ),
        (
            "symlink leaving the directory",
            Box::new(|d| {
                let outside = tempfile::tempdir().unwrap().keep();
                let target = outside.join("x.safetensors");
                std::fs::rename(d.join("model-00002-of-00002.safetensors"), &target).unwrap();
                std::os::unix::fs::symlink(&target, d.join("model-00002-of-00002.safetensors"))
                    .unwrap();
            }),
            "symlink that leaves the checkpoint directory",
        ),
    ];
    for (what, edit, want) in cases {
        let dir = sharded_fixture_copy();
        edit(dir.path());
        let (code, _, err) = ckpt(&["inspect", dir.path().to_str().unwrap()]);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(want), "{what}: want {want:?} in {err}");
        assert!(
            err.contains(".safetensors"),
            "{what}: message names no file: {err}"
        );
    }
}

#[test]
fn duplicate_tensor_across_shards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = vec![("w".to_string(), Dtype::F32, vec![2usize])];
    synth::write_file(&dir.path().join("a.safetensors"), &t, Fill::Random(1)).unwrap();
    synth::write_file(&dir.path().join("b.safetensors"), &t, Fill::Random(2)).unwrap();
    let (code, _, err) = ckpt(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tensor \"w\"") && err.contains("in two files"),
        "{err}"
    );
}

#[test]
fn directory_of_pickles_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), [0x80u8, 2]).unwrap();
    let (code, _, err) = ckpt(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("never unpickles"), "{err}");
}

#[test]
fn missing_path_and_bad_regex() {
    let (code, _, err) = ckpt(&["inspect", "/nonexistent/model"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/model") && err.contains("missing-input"),
        "{err}"
    );
    let (code, _, err) = ckpt(&["inspect", "--grep", "(", fixture("yi").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid regex"), "{err}");
}

#[test]
fn json_error_object() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.safetensors");
    std::fs::write(&p, b"").unwrap();
    let (code, out, _) = ckpt(&["inspect", "--json", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["kind"], "bad-data");
    assert!(
        v["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("e.safetensors")
    );
}

#[test]
fn fifo_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipe.safetensors");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
        eprintln!("skipped: mkfifo is not permitted here");
        return;
    }
    let (code, _, err) = ckpt(&["inspect", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a regular file (a fifo)"), "{err}");
}

/// A tied model pickled by `torch.save` (transformers 4's `pytorch_model.bin`) stores
/// `lm_head.weight` as the embedding's own storage: one set of bytes under two names. inspect
/// counts those bytes and parameters once, as transformers' `num_parameters()` does and as the
/// safetensors twin (which has no `lm_head.weight`) shows, and says so; the data bytes never exceed
/// the file.
#[test]
fn a_pickled_tied_weight_is_counted_once_in_parameters_and_bytes() {
    let bin = fixture("torch-tied");
    let st = bin.join("st");
    let json = |p: &Path| -> serde_json::Value {
        let (code, out, err) = ckpt(&["inspect", "--json", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let (jb, js) = (json(&bin), json(&st));
    assert_eq!(jb["tensor_count"], js["tensor_count"].as_u64().unwrap() + 1);
    assert_eq!(jb["parameters"], js["parameters"], "{jb:#}");
    assert_eq!(jb["data_bytes"], js["data_bytes"]);
    let file = std::fs::metadata(bin.join("pytorch_model.bin"))
        .unwrap()
        .len();
    assert!(jb["data_bytes"].as_u64().unwrap() <= file);
    let dtype_bytes: u64 = jb["dtypes"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| d["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(dtype_bytes, jb["data_bytes"].as_u64().unwrap());
    let notes = jb["notes"].to_string();
    assert!(
        notes.contains("lm_head.weight is stored as the same bytes as model.embed_tokens.weight"),
        "{notes}"
    );
    // The text summary gives the same figure as the safetensors twin's, and says why.
    let tensors_line = |p: &Path| {
        let (code, out, err) = ckpt(&["inspect", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let line = out.lines().find(|l| l.starts_with("tensors")).unwrap();
        line.split("parameters ").nth(1).unwrap().to_string()
    };
    let (lb, ls) = (tensors_line(&bin), tensors_line(&st));
    assert!(lb.starts_with(&ls), "{lb} / {ls}");
    assert!(
        lb.contains("1 tensor shares the bytes of another (tied)"),
        "{lb}"
    );
    // Through the library too.
    let ck = Checkpoint::open(&bin).unwrap();
    assert_eq!(ck.aliases().iter().filter(|a| a.is_some()).count(), 1);
    assert_eq!(
        ck.parameter_count(),
        Checkpoint::open(&st).unwrap().parameter_count()
    );
}

/// Views over one storage (`w`, `w.t()`, `w[0]`, from scripts/make_torch_fixtures.py --overlap):
/// the file holds the 4x8 float32 matrix's 128 bytes once; `data_bytes` and the dtype bytes say
/// 128, not the 288 of three separate tensors.
#[test]
fn overlapping_torch_views_count_their_bytes_once() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/torch-good/overlap.pth");
    let (code, out, err) = ckpt(&["inspect", "--json", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["tensor_count"], 3);
    assert_eq!(j["data_bytes"], 128, "{j:#}");
    assert_eq!(j["dtypes"]["F32"]["bytes"], 128);
    assert_eq!(j["dtypes"]["F32"]["tensors"], 3);
    let (code, out, _) = ckpt(&["inspect", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("F32 128 B (3 tensors)"), "{out}");
}
