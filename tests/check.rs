//! `ckpt check` as a user runs it: fixtures that must pass, the Yi fixture that must fail, and one
//! hand-broken checkpoint per rule, each asserting the finding's stable id.

use std::path::{Path, PathBuf};

use ckpt::Checkpoint;
use ckpt::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use ckpt::synth::{self, Dims, Fill, Spec};
use serde_json::Value;

mod common;
use common::{ckpt, fixture};

const SMALL: Dims = Dims {
    hidden: 16,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    intermediate: 24,
    vocab: 32,
    tied: false,
};

/// `check --format json`: (exit code, parsed report). These tests are about the rules every loader
/// shares (the transformers target); without `--target` in `extra` they run with
/// `--target transformers`, so the per-loader rules (tokenizer presence for llama.cpp, stray
/// safetensors for vLLM, candle's config needs) do not add findings to hand-built checkpoints.
/// Those are tested in `tests/tokenizer.rs`.
fn check_json(path: &Path, extra: &[&str]) -> (i32, Value) {
    let p = path.to_str().unwrap();
    let mut args = vec!["check", p, "--format", "json"];
    if !extra.contains(&"--target") {
        args.extend_from_slice(&["--target", "transformers"]);
    }
    args.extend_from_slice(extra);
    let (code, out, err) = ckpt(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

fn ids(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn finding<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {v:#}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A small LLaMA checkpoint with random values, after `edit` of its specs and config.
fn synth_ckpt(dir: &Path, shards: usize, edit: impl FnOnce(&mut Vec<Spec>, &mut Value)) -> PathBuf {
    let mut specs = synth::llama_tensors(&SMALL, Dtype::F32, false);
    let mut config = SMALL.config_json("llama", "LlamaForCausalLM", "float32");
    edit(&mut specs, &mut config);
    let p = dir.join("ck");
    synth::write_checkpoint(&p, Some(&config), &specs, shards, Fill::Random(7)).unwrap();
    p
}

/// Write a safetensors file from explicit tensors and bytes.
fn write_st(
    path: &Path,
    meta: Option<&[(String, String)]>,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
) {
    let mut entries = Vec::new();
    let mut off = 0;
    for (n, d, s, b) in tensors {
        assert_eq!(checked_nbytes(*d, s).unwrap(), b.len());
        entries.push((n.clone(), *d, s.clone(), off, off + b.len()));
        off += b.len();
    }
    let mut bytes = serialize_header(meta, &entries).unwrap();
    for t in tensors {
        bytes.extend_from_slice(&t.3);
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn plain_llama_fixtures_pass() {
    for name in [
        "llama-mha",
        "llama-gqa",
        "llama-tied",
        "llama-bias",
        "llama-theta",
        "llama3-scaling",
        "llama-bf16",
        "llama-f16",
        "llama-sharded",
    ] {
        let (code, out, err) = ckpt(&[
            "check",
            fixture(name).to_str().unwrap(),
            "--target",
            "transformers",
        ]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(
            out.contains("ok: ") && out.contains("0 errors, 0 warnings"),
            "{name}: {out}"
        );
        let (code, v) = check_json(&fixture(name), &["--deny", "warnings"]);
        assert_eq!((code, v["ok"].as_bool()), (0, Some(true)), "{v:#}");
    }
}

#[test]
fn yi_fails_naming_ln1_and_config_identity() {
    let yi = fixture("yi");
    let (code, out, _) = ckpt(&["check", yi.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`model_type` is \"Yi\", not \"llama\""),
        "{out}"
    );
    assert!(out.contains("auto_map"), "{out}");
    assert!(
        out.contains("error[T002-unexpected-tensor]: `model.layers.{0..1}.ln1.weight` (2 tensors)"),
        "{out}"
    );
    assert!(out.contains("`model.layers.{0..1}.ln2.weight`"), "{out}");
    assert!(
        out.contains("error[T001-missing-tensor]: `model.layers.{0..1}.input_layernorm.weight`"),
        "{out}"
    );
    assert!(out.contains("failed: "), "{out}");
    assert!(out.contains("hint: this looks like a `yi` checkpoint, which converts to llama exactly: run `ckpt convert"), "{out}");
    let (code, v) = check_json(&yi, &[]);
    assert_eq!(code, 1);
    for id in [
        "C002-model-type",
        "C003-architectures",
        "C004-remote-code",
        "T001-missing-tensor",
        "T002-unexpected-tensor",
    ] {
        assert!(ids(&v).iter().any(|i| i == id), "{id} missing: {v:#}");
    }
    let ln1 = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["tensor"] == "model.layers.0.ln1.weight")
        .expect("ln1 finding");
    assert_eq!(ln1["severity"], "error");
    assert!(ln1["file"].as_str().unwrap().ends_with("model.safetensors"));
}

#[test]
fn json_schema_is_stable() {
    let (_, v) = check_json(&fixture("yi"), &["--target", "llama"]);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "schema_version",
            "target",
            "path",
            "findings",
            "errors",
            "warnings",
            "ok",
            "hint"
        ]
    );
    assert_eq!(v["target"], "llama");
    assert_eq!(v["ok"], false);
    let n = v["findings"].as_array().unwrap().len() as u64;
    assert_eq!(
        v["errors"].as_u64().unwrap() + v["warnings"].as_u64().unwrap(),
        n
    );
    for f in v["findings"].as_array().unwrap() {
        let k: Vec<&String> = f.as_object().unwrap().keys().collect();
        assert_eq!(
            k,
            ["id", "severity", "file", "tensor", "message", "loaders"]
        );
        assert!(!f["loaders"].as_array().unwrap().is_empty());
    }
}

#[test]
fn github_annotations() {
    let (code, out, _) = ckpt(&[
        "check",
        fixture("yi").to_str().unwrap(),
        "--format",
        "github",
    ]);
    assert_eq!(code, 1);
    let cfg = fixture("yi").join("config.json");
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "::error file={},title=C002-model-type::`model_type` is \"Yi\"",
            cfg.display()
        ))),
        "{out}"
    );
    assert!(
        out.contains(",title=T002-unexpected-tensor::`model.layers.{0..1}.ln1.weight`"),
        "{out}"
    );
    assert!(out.contains("::warning file="), "{out}");
    // Workflow-command escaping: commas and colons in the file property; strings from files are
    // escaped, so a newline in a config value cannot start a new workflow command.
    let dir = tempfile::tempdir().unwrap();
    let p = synth_ckpt(dir.path(), 1, |_, c| {
        c["model_type"] = "a\n::error::x%".into()
    });
    let q = dir.path().join("a,b:c");
    std::fs::rename(&p, &q).unwrap();
    let (_, out, _) = ckpt(&[
        "check",
        q.to_str().unwrap(),
        "--format",
        "github",
        "--target",
        "transformers",
    ]);
    assert!(
        out.contains("a%2Cb%3Ac/config.json,title=C002-model-type::"),
        "{out}"
    );
    assert!(out.contains("\"a\\n::error::x%25\""), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("::error")).count(),
        1,
        "{out}"
    );
}

#[test]
fn scan_values_finds_planted_nan_inf_and_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gqa");
    copy_dir(&fixture("llama-gqa"), &p);
    let (code, v) = check_json(&p, &["--scan-values"]);
    assert_eq!(code, 0, "{v:#}");
    let (nan_at, inf_at, zero) = {
        let ck = Checkpoint::open(&p).unwrap();
        let at = |name: &str| {
            let t = ck.get(name).unwrap();
            (ck.shards[t.shard].data_start() + t.begin, t.nbytes())
        };
        (
            at("model.layers.1.mlp.up_proj.weight"),
            at("model.layers.0.self_attn.q_proj.weight"),
            at("model.layers.1.self_attn.o_proj.weight"),
        )
    };
    let f = p.join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let put =
        |b: &mut Vec<u8>, off: usize, v: f32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut bytes, nan_at.0 + 4 * 17, f32::NAN);
    put(&mut bytes, inf_at.0, f32::NEG_INFINITY);
    bytes[zero.0..zero.0 + zero.1].fill(0);
    std::fs::write(&f, bytes).unwrap();
    // Without the scan nothing is read.
    assert_eq!(check_json(&p, &[]).0, 0);
    let (code, v) = check_json(&p, &["--scan-values"]);
    assert_eq!(code, 1);
    let nan = finding(&v, "V001-nan");
    assert_eq!(nan["tensor"], "model.layers.1.mlp.up_proj.weight");
    assert!(
        nan["message"]
            .as_str()
            .unwrap()
            .contains("1 of 6144 values are NaN (first at element 17)"),
        "{nan}"
    );
    assert_eq!(
        finding(&v, "V002-inf")["tensor"],
        "model.layers.0.self_attn.q_proj.weight"
    );
    let z = finding(&v, "V003-all-zero");
    assert_eq!(
        (z["tensor"].as_str(), z["severity"].as_str()),
        (
            Some("model.layers.1.self_attn.o_proj.weight"),
            Some("warning")
        )
    );
}

#[test]
fn scan_values_decodes_bf16_and_f16() {
    for (fx, dtype) in [("llama-bf16", Dtype::BF16), ("llama-f16", Dtype::F16)] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        copy_dir(&fixture(fx), &p);
        let off = {
            let ck = Checkpoint::open(&p).unwrap();
            let t = ck.get("model.norm.weight").unwrap();
            ck.shards[0].data_start() + t.begin + 2 * 5
        };
        let f = p.join("model.safetensors");
        let mut b = std::fs::read(&f).unwrap();
        let nan: [u8; 2] = match dtype {
            Dtype::BF16 => half::bf16::NAN.to_le_bytes(),
            _ => half::f16::NAN.to_le_bytes(),
        };
        b[off..off + 2].copy_from_slice(&nan);
        std::fs::write(&f, b).unwrap();
        let (code, v) = check_json(&p, &["--scan-values"]);
        assert_eq!(code, 1, "{fx}");
        let f = finding(&v, "V001-nan");
        assert_eq!(f["tensor"], "model.norm.weight");
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains("(first at element 5)"),
            "{f}"
        );
    }
}

/// Assert a check of `p` exits `code` and reports `id` (with severity), returning the report.
fn expect(p: &Path, code: i32, id: &str, severity: &str) -> Value {
    let (c, v) = check_json(p, &[]);
    let f = finding(&v, id);
    assert_eq!(f["severity"], severity, "{f}");
    assert_eq!(c, code, "{v:#}");
    v
}

#[test]
fn config_rules() {
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, _| {});
    assert_eq!(check_json(&p, &[]).0, 0);
    std::fs::remove_file(p.join("config.json")).unwrap();
    expect(&p, 1, "C001-config-missing", "error");

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| c["model_type"] = "gemma".into());
    let v = expect(&p, 1, "C005-not-llama-math", "error");
    assert!(
        finding(&v, "C005-not-llama-math")["message"]
            .as_str()
            .unwrap()
            .contains("(1 + weight)")
    );

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| {
        c["architectures"] = serde_json::json!(["MistralForCausalLM"])
    });
    expect(&p, 1, "C003-architectures", "error");

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| {
        c["auto_map"] = serde_json::json!({"AutoModelForCausalLM": "modeling_x.X"})
    });
    expect(&p, 1, "C004-remote-code", "error");

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| {
        c.as_object_mut().unwrap().remove("vocab_size");
    });
    let v = expect(&p, 1, "C006-config-field", "error");
    assert!(
        finding(&v, "C006-config-field")["message"]
            .as_str()
            .unwrap()
            .contains("`vocab_size`")
    );

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| c["hidden_act"] = "gelu".into());
    expect(&p, 1, "C007-hidden-act", "error");

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| c["num_key_value_heads"] = 3.into());
    expect(&p, 1, "C008-heads", "error");

    for (key, value, says) in [
        ("rms_norm_eps", -1e-6, "`rms_norm_eps` is -0.000001"),
        ("rope_theta", 0.0, "`rope_theta` is 0"),
        ("rope_theta", -10000.0, "`rope_theta` is -10000"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = synth_ckpt(d.path(), 1, |_, c| {
            c[key] = value.into();
            c.as_object_mut().unwrap().remove("rope_parameters");
        });
        let v = expect(&p, 1, "C010-config-value", "error");
        let m = finding(&v, "C010-config-value")["message"].clone();
        assert!(m.as_str().unwrap().contains(says), "{m}");
    }

    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| c["torch_dtype"] = "bfloat16".into());
    let v = expect(&p, 0, "C009-config-dtype", "warning");
    assert!(
        finding(&v, "C009-config-dtype")["message"]
            .as_str()
            .unwrap()
            .contains("most parameters are F32")
    );
    assert_eq!(check_json(&p, &["--deny", "warnings"]).0, 1);
}

#[test]
fn tensor_rules() {
    // T001 missing.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        s.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight")
    });
    let v = expect(&p, 1, "T001-missing-tensor", "error");
    assert_eq!(
        finding(&v, "T001-missing-tensor")["tensor"],
        "model.layers.1.mlp.up_proj.weight"
    );

    // T002 unexpected (a layer beyond num_hidden_layers) and T003 benign inv_freq.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        s.push((
            "model.layers.2.mlp.up_proj.weight".into(),
            Dtype::F32,
            vec![24, 16],
        ));
        s.push((
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            Dtype::F32,
            vec![2],
        ));
    });
    let v = expect(&p, 1, "T002-unexpected-tensor", "error");
    assert_eq!(
        finding(&v, "T002-unexpected-tensor")["tensor"],
        "model.layers.2.mlp.up_proj.weight"
    );
    assert!(
        finding(&v, "T003-benign-extra")["message"]
            .as_str()
            .unwrap()
            .contains("inv_freq")
    );
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        s.push((
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            Dtype::F32,
            vec![2],
        ));
    });
    expect(&p, 0, "T003-benign-extra", "warning");
    assert_eq!(check_json(&p, &["--deny", "warnings"]).0, 1);

    // T004 shape.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        s.iter_mut()
            .find(|t| t.0 == "model.layers.0.mlp.down_proj.weight")
            .unwrap()
            .2 = vec![16, 20];
    });
    let v = expect(&p, 1, "T004-shape", "error");
    assert!(
        finding(&v, "T004-shape")["message"]
            .as_str()
            .unwrap()
            .contains("shape is [16, 20] but the config implies [16, 24]")
    );

    // T005 kv heads: tensors built for 4 kv heads, config says 2.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        *s = synth::llama_tensors(
            &Dims {
                kv_heads: 4,
                ..SMALL
            },
            Dtype::F32,
            false,
        );
    });
    let v = expect(&p, 1, "T005-kv-heads", "error");
    let m = finding(&v, "T005-kv-heads")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        m.contains("16 rows = 4 kv heads") && m.contains("`num_key_value_heads` is 2"),
        "{m}"
    );

    // T006 vocab: more rows than `vocab_size` (transformers: size mismatch) and missing rows fail.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        for t in s
            .iter_mut()
            .filter(|t| t.0 == "model.embed_tokens.weight" || t.0 == "lm_head.weight")
        {
            t.2 = vec![40, 16];
        }
    });
    expect(&p, 1, "T006-vocab", "error");
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| {
        s.iter_mut()
            .find(|t| t.0 == "model.embed_tokens.weight")
            .unwrap()
            .2 = vec![30, 16];
    });
    let v = expect(&p, 1, "T006-vocab", "error");
    assert!(
        finding(&v, "T006-vocab")["message"]
            .as_str()
            .unwrap()
            .contains("30 rows but `vocab_size` is 32")
    );

    // T008 untied without lm_head.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| s.retain(|t| t.0 != "lm_head.weight"));
    let v = expect(&p, 1, "T008-missing-lm-head", "error");
    assert!(!ids(&v).contains(&"T001-missing-tensor".to_string()));

    // T007 tied with a different lm_head (random values differ from the embeddings).
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, c| c["tie_word_embeddings"] = true.into());
    let v = expect(&p, 1, "T007-tied-lm-head", "error");
    // transformers 5.23 does not tie two stored tensors that differ (it warns and keeps both), and
    // llama.cpp's GGUF keeps `output.weight`: measured, the stored head computes the logits there.
    let m = finding(&v, "T007-tied-lm-head")["message"]
        .as_str()
        .unwrap();
    assert!(
        m.contains("transformers 5 and llama.cpp keep the stored `lm_head`"),
        "{m}"
    );

    // T009 mixed dtypes (norms in F32, the rest BF16), T010 non-float dtype.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, c| {
        c["torch_dtype"] = "bfloat16".into();
        for t in s.iter_mut().filter(|t| !t.0.contains("norm")) {
            t.1 = Dtype::BF16;
        }
    });
    let v = expect(&p, 0, "T009-mixed-dtypes", "warning");
    let m = finding(&v, "T009-mixed-dtypes")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        m.contains("BF16 16 tensors") && m.contains("F32 5 tensors"),
        "{m}"
    );
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |s, _| s[0].1 = Dtype::I8);
    expect(&p, 1, "T010-dtype", "error");
}

#[test]
fn tied_lm_head_copy_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ck");
    std::fs::create_dir(&p).unwrap();
    let cfg = Dims {
        tied: true,
        ..SMALL
    }
    .config_json("llama", "LlamaForCausalLM", "float32");
    std::fs::write(p.join("config.json"), cfg.to_string()).unwrap();
    let specs = synth::llama_tensors(
        &Dims {
            tied: true,
            ..SMALL
        },
        Dtype::F32,
        false,
    );
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = specs
        .into_iter()
        .enumerate()
        .map(|(i, (n, d, s))| {
            let len = checked_nbytes(d, &s).unwrap() / 4;
            let b = (0..len)
                .flat_map(|k| ((k + i) as f32 * 0.01).to_le_bytes())
                .collect();
            (n, d, s, b)
        })
        .collect();
    let emb = tensors[0].clone();
    tensors.push(("lm_head.weight".into(), emb.1, emb.2, emb.3));
    let meta = [("format".to_string(), "pt".to_string())];
    write_st(&p.join("model.safetensors"), Some(&meta), &tensors);
    let v = expect(&p, 0, "T007-tied-lm-head", "warning");
    assert!(
        finding(&v, "T007-tied-lm-head")["message"]
            .as_str()
            .unwrap()
            .contains("copy of the embeddings")
    );
}

#[test]
fn file_rules() {
    // F001 missing shard: the open fails too, but the finding explains it (exit 1, not 2).
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    assert_eq!(check_json(&p, &[]).0, 0);
    std::fs::remove_file(p.join("model-00002-of-00002.safetensors")).unwrap();
    let v = expect(&p, 1, "F001-missing-shard", "error");
    assert!(ids(&v).contains(&"F009-unopenable".to_string()));

    // F002 stray shard.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    std::fs::copy(
        p.join("model-00002-of-00002.safetensors"),
        p.join("model-00003-of-00003.safetensors"),
    )
    .unwrap();
    let v = expect(&p, 1, "F002-stray-shard", "error");
    assert!(
        finding(&v, "F002-stray-shard")["file"]
            .as_str()
            .unwrap()
            .ends_with("model-00003-of-00003.safetensors")
    );

    // F003 index places a tensor in the wrong shard; F004 a tensor the index does not list; F006.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    let ip = p.join("model.safetensors.index.json");
    let mut idx: Value = serde_json::from_str(&std::fs::read_to_string(&ip).unwrap()).unwrap();
    idx["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors".into();
    idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.norm.weight");
    idx["metadata"]["total_size"] = 12.into();
    std::fs::write(&ip, idx.to_string()).unwrap();
    let v = expect(&p, 1, "F003-index-wrong-shard", "error");
    let f3 = finding(&v, "F003-index-wrong-shard");
    assert_eq!(f3["tensor"], "model.embed_tokens.weight");
    assert!(
        f3["message"]
            .as_str()
            .unwrap()
            .contains("it is in `model-00001-of-00002.safetensors`")
    );
    assert_eq!(
        finding(&v, "F004-not-in-index")["tensor"],
        "model.norm.weight"
    );
    assert_eq!(finding(&v, "F006-total-size")["severity"], "warning");

    // F005 a tensor in two shards.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    let s2 = p.join("model-00002-of-00002.safetensors");
    let ck = Checkpoint::open(&p).unwrap();
    let mut tensors = Vec::new();
    for t in ck.tensors.iter().filter(|t| t.shard == 1) {
        tensors.push((
            t.name.clone(),
            t.dtype,
            t.shape.clone(),
            ck.data(t).unwrap().to_vec(),
        ));
    }
    let e = ck.get("model.embed_tokens.weight").unwrap();
    tensors.push((
        e.name.clone(),
        e.dtype,
        e.shape.clone(),
        ck.data(e).unwrap().to_vec(),
    ));
    drop(ck);
    let meta = [("format".to_string(), "pt".to_string())];
    write_st(&s2, Some(&meta), &tensors);
    let v = expect(&p, 1, "F005-duplicate-tensor", "error");
    assert_eq!(
        finding(&v, "F005-duplicate-tensor")["tensor"],
        "model.embed_tokens.weight"
    );

    // F007 shard naming: "of-00003" with two shards.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    let ip = p.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&ip)
        .unwrap()
        .replace("-of-00002", "-of-00003");
    std::fs::write(&ip, text).unwrap();
    for k in 1..=2 {
        std::fs::rename(
            p.join(format!("model-0000{k}-of-00002.safetensors")),
            p.join(format!("model-0000{k}-of-00003.safetensors")),
        )
        .unwrap();
    }
    let v = expect(&p, 0, "F007-shard-naming", "warning");
    assert!(
        finding(&v, "F007-shard-naming")["message"]
            .as_str()
            .unwrap()
            .contains("the name says 3 shards but the index lists 2")
    );

    // F008 no __metadata__.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 1, |_, _| {});
    let ck = Checkpoint::open(&p).unwrap();
    let tensors: Vec<_> = ck
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dtype,
                t.shape.clone(),
                ck.data(t).unwrap().to_vec(),
            )
        })
        .collect();
    drop(ck);
    write_st(&p.join("model.safetensors"), None, &tensors);
    expect(&p, 0, "F008-metadata-format", "warning");

    // F010 shards without an index.
    let d = tempfile::tempdir().unwrap();
    let p = synth_ckpt(d.path(), 2, |_, _| {});
    std::fs::remove_file(p.join("model.safetensors.index.json")).unwrap();
    expect(&p, 1, "F010-no-index", "error");
}

#[test]
fn unopenable_without_explanation_is_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.safetensors");
    std::fs::write(
        &p,
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n",
    )
    .unwrap();
    let (code, out, err) = ckpt(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("error["), "{err}");
    let (code, out, _) = ckpt(&["check", p.to_str().unwrap(), "--target", "gpt2"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn runs_on_sparse_real_shaped_layouts() {
    let d = tempfile::tempdir().unwrap();
    // Llama-3-8B, bf16, 4 shards: compatible.
    let l3 = d.path().join("llama3");
    let specs = synth::llama_tensors(&Dims::LLAMA3_8B, Dtype::BF16, false);
    let cfg = Dims::LLAMA3_8B.config_json("llama", "LlamaForCausalLM", "bfloat16");
    synth::write_checkpoint(&l3, Some(&cfg), &specs, 4, Fill::Sparse).unwrap();
    let (code, v) = check_json(&l3, &[]);
    assert_eq!(code, 0, "{v:#}");
    // Yi-34B with Yi's names: 60 layers of ln1/ln2, collapsed in text output.
    let yi = d.path().join("yi34b");
    let mut specs = synth::llama_tensors(&Dims::YI_34B, Dtype::BF16, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = Dims::YI_34B.config_json("Yi", "YiForCausalLM", "bfloat16");
    synth::write_checkpoint(&yi, Some(&cfg), &specs, 7, Fill::Sparse).unwrap();
    let (code, out, _) = ckpt(&["check", yi.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("`model.layers.{0..59}.ln1.weight` (60 tensors)"),
        "{out}"
    );
    let (_, v) = check_json(&yi, &[]);
    assert_eq!(v["errors"].as_u64(), Some(2 + 4 * 60));
}

/// Copy the files of fixture `name` except `expected.safetensors` (golden logits, not part of the
/// checkpoint) into `to`, renaming `rename = (from, to)` on the way.
fn copy_fixture(name: &str, to: &Path, rename: &[(&str, &str)]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n == "expected.safetensors" {
            continue;
        }
        let dst = rename
            .iter()
            .find(|(f, _)| *f == n)
            .map_or(n.as_str(), |(_, t)| t);
        std::fs::copy(fixture(name).join(&n), to.join(dst)).unwrap();
    }
}

fn loaders_of(f: &Value) -> Vec<&str> {
    f["loaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect()
}

/// QA: a directory whose only weights file has a name the loaders do not look for passed `check`
/// (`ok`, exit 0), while transformers' `from_pretrained` raises `OSError: Error no file named ...`
/// and llama.cpp's converter writes a GGUF without tensors. A lone `model.bin` was exit 2.
#[test]
fn regression_weights_under_names_loaders_do_not_look_for() {
    let d = tempfile::tempdir().unwrap();
    for (fx, from, to) in [
        ("llama-mha", "model.safetensors", "weights.safetensors"),
        ("llama-mha", "model.safetensors", "consolidated.safetensors"),
        ("torch-bin", "pytorch_model.bin", "model.pth"),
        ("torch-bin", "pytorch_model.bin", "model.bin"),
    ] {
        let p = d.path().join(to);
        copy_fixture(fx, &p, &[(from, to)]);
        let (code, v) = check_json(&p, &["--target", "llama"]);
        assert_eq!(code, 1, "{to}: {v:#}");
        let f = finding(&v, "W002-weights-name");
        assert_eq!(f["severity"], "error", "{to}");
        assert_eq!(loaders_of(f), ["transformers", "llama.cpp"], "{to}");
        assert!(f["file"].as_str().unwrap().ends_with(to), "{to}: {f:#}");
        let m = f["message"].as_str().unwrap();
        for needle in [
            &format!("`{to}`") as &str,
            "`model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin` and `pytorch_model.bin.index.json`",
            "`_get_resolved_checkpoint_files`",
            "`model*.safetensors` or `pytorch_model*.bin`",
            "GGUF without tensors",
        ] {
            assert!(m.contains(needle), "{to}: {needle}: {m}");
        }
        // Each target that shares the finding fails on it alone.
        for target in ["transformers", "llama.cpp"] {
            let (_, v) = check_json(&p, &["--target", target]);
            assert!(
                ids(&v).contains(&"W002-weights-name".into()),
                "{to} {target}: {v:#}"
            );
        }
    }
    // `model.bin` cannot be opened by ckpt: the finding explains it (exit 1, F009 beside it); for
    // a target the name does not concern (candle, which takes the files its caller passes) the
    // open error stands, exit 2, naming the reason.
    let p = d.path().join("model.bin");
    let (_, v) = check_json(&p, &[]);
    assert!(ids(&v).contains(&"F009-unopenable".into()), "{v:#}");
    let (code, _, err) = ckpt(&["check", p.to_str().unwrap(), "--target", "candle"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no .safetensors files in the directory"),
        "{err}"
    );

    // The names the loaders look for, and shards under another prefix with the index listing
    // them (both transformers and llama.cpp's converter follow the index), are fine.
    let ok = d.path().join("ok-torch");
    copy_fixture("torch-bin", &ok, &[]);
    assert!(!ids(&check_json(&ok, &["--target", "llama"]).1).contains(&"W002-weights-name".into()));
    let sh = d.path().join("weights-shards");
    let renames = [
        (
            "model-00001-of-00002.safetensors",
            "weights-00001-of-00002.safetensors",
        ),
        (
            "model-00002-of-00002.safetensors",
            "weights-00002-of-00002.safetensors",
        ),
    ];
    copy_fixture("llama-sharded", &sh, &renames);
    let ip = sh.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&ip)
        .unwrap()
        .replace("\"model-0000", "\"weights-0000");
    std::fs::write(&ip, text).unwrap();
    let (code, v) = check_json(&sh, &["--target", "llama"]);
    let got = ids(&v);
    assert!(
        !got.contains(&"W002-weights-name".into()) && !got.contains(&"W003-two-weight-sets".into()),
        "{v:#}"
    );
    let (code_t, _) = check_json(&sh, &[]);
    assert_eq!(ids(&v), ["K001-tokenizer-missing"], "{v:#}"); // the fixture has no tokenizer
    assert_eq!((code, code_t), (1, 0), "{v:#}");
    // Meta's layout (`consolidated.safetensors` + `params.json`) stays C001's finding: llama.cpp's
    // `--mistral-format` reads it.
    let meta = d.path().join("meta");
    copy_fixture("llama-meta", &meta, &[]);
    let (_, v) = check_json(&meta, &["--target", "llama"]);
    assert!(ids(&v).contains(&"C001-config-missing".into()), "{v:#}");
    assert!(!ids(&v).contains(&"W002-weights-name".into()), "{v:#}");
}

/// A weights file given to `check` on its own is judged in its directory (the config and the
/// tokenizer come from there): under a name the loaders do not look for, or beside the weights
/// they read instead, it is W002, not `will load`.
#[test]
fn a_weights_file_given_alone_is_judged_by_its_name_in_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("m");
    copy_fixture(
        "llama-mha",
        &dir,
        &[("model.safetensors", "weights.safetensors")],
    );
    let file = dir.join("weights.safetensors");
    let (code, v) = check_json(&file, &["--target", "llama"]);
    assert_eq!(code, 1, "{v:#}");
    let f = finding(&v, "W002-weights-name");
    assert_eq!(loaders_of(f), ["transformers", "llama.cpp"], "{f:#}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("`weights.safetensors`"),
        "{f:#}"
    );

    // Beside the `model.safetensors` the loaders read, another file is not what they load.
    std::fs::copy(&file, dir.join("model.safetensors")).unwrap();
    let (code, v) = check_json(&file, &["--target", "llama"]);
    assert_eq!(code, 1, "{v:#}");
    let f = finding(&v, "W002-weights-name");
    let m = f["message"].as_str().unwrap();
    for needle in [
        "`weights.safetensors` is not the file the loaders read",
        "transformers' `from_pretrained` reads `model.safetensors`",
        "llama.cpp's converter reads `model.safetensors`",
    ] {
        assert!(m.contains(needle), "{needle}: {m}");
    }
    // The file they read, given alone, has no such finding (only the missing tokenizer).
    std::fs::remove_file(&file).unwrap();
    let (code, v) = check_json(&dir.join("model.safetensors"), &["--target", "llama"]);
    assert_eq!(ids(&v), ["K001-tokenizer-missing"], "{v:#}");
    assert_eq!(code, 1);
    let (code, v) = check_json(&dir.join("model.safetensors"), &[]);
    assert_eq!((code, ids(&v).len()), (0, 0), "{v:#}");
}

/// QA: `model.safetensors` beside an index and its shards was a W001 warning ("index-driven
/// loaders ignore it"), then `ok`; transformers 5.23 reads `model.safetensors` before the index,
/// llama.cpp's converter the index, so the two load different weights.
#[test]
fn regression_single_file_beside_an_index_is_two_weight_sets() {
    let d = tempfile::tempdir().unwrap();
    for (fx, single, extra) in [
        (
            "llama-sharded",
            "model.safetensors",
            "llama-mha/model.safetensors",
        ),
        (
            "torch-sharded",
            "pytorch_model.bin",
            "torch-bin/pytorch_model.bin",
        ),
    ] {
        let p = d.path().join(fx);
        copy_fixture(fx, &p, &[]);
        assert_eq!(check_json(&p, &[]).0, 0, "{fx}");
        std::fs::copy(fixture(extra), p.join(single)).unwrap();
        let (code, v) = check_json(&p, &[]);
        assert_eq!(code, 1, "{fx}: {v:#}");
        let f = finding(&v, "W003-two-weight-sets");
        assert_eq!(f["severity"], "error");
        assert!(f["file"].as_str().unwrap().ends_with(single), "{f:#}");
        let m = f["message"].as_str().unwrap();
        assert!(
            m.contains(&format!("transformers' `from_pretrained` reads `{single}`"))
                && m.contains("llama.cpp's converter the files the index lists")
                && m.contains("-00001-of-00002."),
            "{m}"
        );
        let (_, v) = check_json(&p, &["--target", "llama"]);
        assert_eq!(
            loaders_of(finding(&v, "W003-two-weight-sets")),
            ["transformers", "llama.cpp"]
        );
        // Reported once, not also as an extra file.
        assert!(
            !ids(&v).contains(&"W001-extra-weights".into()),
            "{fx}: {v:#}"
        );
    }
    // An index that lists only `model.safetensors` is one set.
    let p = d.path().join("one");
    copy_fixture("llama-mha", &p, &[]);
    let ck = Checkpoint::open(&p).unwrap();
    let map: serde_json::Map<String, Value> = ck
        .tensors
        .iter()
        .map(|t| (t.name.clone(), Value::from("model.safetensors")))
        .collect();
    drop(ck);
    let idx = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(p.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    let (code, v) = check_json(&p, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(!ids(&v).contains(&"W003-two-weight-sets".into()), "{v:#}");
}

/// QA: C011 said "LLaMA loaders ignore the key" for keys loaders use or refuse.
#[test]
fn regression_unmodelled_key_messages_say_what_loaders_do() {
    let d = tempfile::tempdir().unwrap();
    let with = |name: &str, fx: &str, edit: &dyn Fn(&mut Value)| {
        let p = d.path().join(name);
        copy_fixture(fx, &p, &[]);
        let mut c: Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap();
        edit(&mut c);
        std::fs::write(p.join("config.json"), c.to_string()).unwrap();
        check_json(&p, &[])
    };
    let c011 = |v: &Value| {
        finding(v, "C011-unmodelled-key")["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // (a) top-level original_max_position_embeddings beside llama3 scaling with another value.
    let (code, v) = with("orig", "llama3-scaling", &|c| {
        c["original_max_position_embeddings"] = 64.into();
    });
    assert_eq!(code, 1);
    let m = c011(&v);
    assert!(!m.contains("LLaMA loaders ignore"), "{m}");
    assert!(
        m.contains(
            "transformers 5 uses it for the `llama3` scaling, over the scaling's own value 32"
        ) && m.contains("llama.cpp's converter keeps the scaling's value"),
        "{m}"
    );
    // The same value as the scaling's changes nothing in any loader: not reported.
    let (code, v) = with("orig-same", "llama3-scaling", &|c| {
        c["original_max_position_embeddings"] = 32.into();
    });
    assert_eq!(code, 0, "{v:#}");
    // (b) quantization_config on plain weights.
    let (_, v) = with("bnb", "llama-mha", &|c| {
        c["quantization_config"] =
            serde_json::json!({"quant_method": "bitsandbytes", "load_in_4bit": true});
    });
    let m = c011(&v);
    assert!(!m.contains("ignore"), "{m}");
    assert!(
        m.contains("plain floats")
            && m.contains("`ImportError`")
            && m.contains("`NotImplementedError`")
            && m.contains("'bitsandbytes'"),
        "{m}"
    );
    let (_, v) = with("fp8", "llama-mha", &|c| {
        c["quantization_config"] = serde_json::json!({"quant_method": "fp8"});
    });
    let m = c011(&v);
    assert!(
        m.contains("\"fp8\"") && !m.contains("NotImplementedError"),
        "{m}"
    );
    // Any other key: what is known, generically.
    let (_, v) = with("resid", "llama-mha", &|c| {
        c["residual_multiplier"] = 0.22.into();
    });
    let m = c011(&v);
    assert!(
        m.contains("loaders differ") && !m.contains("ignore it and"),
        "{m}"
    );
}
