//! `ckpt diff` as a user runs it: identical checkpoints, MHA vs GQA, dtype changes, a Yi fixture
//! against a LLaMA-named copy written here, values, sparse real-shaped layouts, RoPE spellings that
//! disagree within a side, and the files beside the weights (generation config, tokenizer).

use std::path::Path;

use ckpt::Checkpoint;
use ckpt::checkpoint::header::{Dtype, serialize_header};
use ckpt::synth::{self, Dims, Fill};
use serde_json::Value;

mod common;
use common::{ckpt, fixture};

fn diff_json(a: &Path, b: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = ckpt(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// Copy `src` (a fixture) to `dst` with tensors renamed by `rename` and the config edited by `cfg`,
/// reading header + data with `Checkpoint` and writing with `serialize_header`.
fn rewrite(src: &Path, dst: &Path, rename: impl Fn(&str) -> String, cfg: impl FnOnce(&mut Value)) {
    std::fs::create_dir_all(dst).unwrap();
    let ck = Checkpoint::open(src).unwrap();
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for t in &ck.tensors {
        let b = ck.data(t).unwrap();
        entries.push((
            rename(&t.name),
            t.dtype,
            t.shape.clone(),
            data.len(),
            data.len() + b.len(),
        ));
        data.extend_from_slice(b);
    }
    let meta = ck.shards[0].header.metadata.clone();
    let mut bytes = serialize_header(meta.as_deref(), &entries).unwrap();
    bytes.extend_from_slice(&data);
    std::fs::write(dst.join("model.safetensors"), bytes).unwrap();
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg(&mut c);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_string_pretty(&c).unwrap(),
    )
    .unwrap();
    // The files `diff` compares beside the weights go along unchanged.
    for f in ckpt::diff::files::COMPARED_FILES {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
    }
}

#[test]
fn fixture_against_itself_is_identical() {
    for name in ["llama-gqa", "llama-sharded", "llama-bf16", "yi"] {
        let p = fixture(name);
        let (code, out, err) =
            ckpt(&["diff", p.to_str().unwrap(), p.to_str().unwrap(), "--values"]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(
            out.contains("identical: 21 tensors (21 same); 0 with different values"),
            "{out}"
        );
        assert!(out.contains("config: 0 keys differ"), "{out}");
    }
    // One file against two shards with the same shapes, configs in the transformers 4 and 5
    // spellings: the configs agree, but the fixtures hold different random weights, and the bytes
    // are compared by default, so they differ (this diff used to say `identical` without reading).
    let (code, v) = diff_json(&fixture("llama-gqa"), &fixture("llama-sharded"), &[]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["identical"], false);
    assert!(
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "values differ"),
        "{v:#}"
    );
    let reasons: Vec<&str> = v["config"]["differing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == "same setting, other spelling"),
        "{reasons:?}"
    );
}

#[test]
fn mha_vs_gqa_shows_reshaped_kv_and_config_change() {
    let (a, b) = (fixture("llama-mha"), fixture("llama-gqa"));
    let (code, out, _) = ckpt(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("model.layers.{0..1}.self_attn.k_proj.weight"))
        .expect(&out);
    assert!(
        line.contains("[64, 64] -> [32, 64]") && line.contains("reshaped"),
        "{line}"
    );
    assert!(
        out.lines().any(
            |l| l.contains("model.layers.{0..1}.self_attn.v_proj.weight") && l.contains("reshaped")
        ),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("num_key_value_heads")
                && l.contains(" 4 ")
                && l.contains(" 2 ")),
        "{out}"
    );
    assert!(out.contains("config: 1 key differs"), "{out}");
    // The two fixtures hold different random weights: every same-shape tensor's bytes differ.
    assert!(
        out.contains("differ: 21 tensors (17 values differ, 4 reshaped)"),
        "{out}"
    );
    let (code, v) = diff_json(&a, &b, &["--values"]);
    assert_eq!(code, 1);
    let k = row(&v, "model.layers.0.self_attn.k_proj.weight");
    assert_eq!(k["status"], "reshaped");
    assert_eq!(k["a"]["shape"], serde_json::json!([64, 64]));
    assert_eq!(k["b"]["shape"], serde_json::json!([32, 64]));
    assert!(k["values"].is_null(), "no value diff across shapes");
    let q = row(&v, "model.layers.0.self_attn.q_proj.weight");
    assert!(q["values"]["max_abs"].as_f64().unwrap() > 0.0);
    assert_eq!(v["identical"], false);
    // --all lists layers one by one.
    let (_, out, _) = ckpt(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--all"]);
    assert!(
        out.contains("model.layers.1.self_attn.k_proj.weight") && !out.contains("{0..1}"),
        "{out}"
    );
}

#[test]
fn dtype_change_with_values() {
    let (code, v) = diff_json(&fixture("llama-gqa"), &fixture("llama-bf16"), &["--values"]);
    assert_eq!(code, 1);
    let r = row(&v, "model.norm.weight");
    assert_eq!(r["status"], "dtype changed");
    assert_eq!(
        (r["a"]["dtype"].as_str(), r["b"]["dtype"].as_str()),
        (Some("F32"), Some("BF16"))
    );
    // The fixtures hold different random weights; the values are compared anyway (same shape).
    assert!(r["values"]["elements"].as_u64() == Some(64));
}

#[test]
fn yi_against_llama_named_copy() {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("yi-llama");
    rewrite(
        &fixture("yi"),
        &copy,
        |n| {
            n.replace(".ln1.", ".input_layernorm.")
                .replace(".ln2.", ".post_attention_layernorm.")
        },
        |c| {
            c["model_type"] = "llama".into();
            c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            c.as_object_mut().unwrap().remove("auto_map");
        },
    );
    let (code, out, _) = ckpt(&[
        "diff",
        fixture("yi").to_str().unwrap(),
        copy.to_str().unwrap(),
        "--values",
    ]);
    // Aligned through the yi family: every tensor renamed or same, no shape change, collapsed.
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("(read as yi)") && out.contains("(read as llama)"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("model.layers.{0..1}.input_layernorm.weight"))
        .expect(&out);
    assert!(
        line.contains("model.layers.{0..1}.ln1.weight") && line.contains("renamed"),
        "{line}"
    );
    assert!(
        out.contains("identical: 21 tensors (17 same, 4 renamed); 0 with different values"),
        "{out}"
    );
    let (code, v) = diff_json(&fixture("yi"), &copy, &["--values"]);
    assert_eq!(code, 0);
    for r in v["tensors"].as_array().unwrap() {
        let s = r["status"].as_str().unwrap();
        assert!(matches!(s, "same" | "renamed"), "{r}");
        assert_eq!(r["a"]["shape"], r["b"]["shape"]);
        assert_eq!(r["values"]["max_abs"].as_f64(), Some(0.0), "{r}");
        assert_eq!(r["values"]["cosine"].as_f64(), Some(1.0), "{r}");
    }
    // The config keys the yi mapping rewrites differ raw but do not count.
    let rows = v["config"]["differing"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["architectures", "auto_map", "model_type"]);
    assert!(rows.iter().all(|r| r["ignored"] == true), "{rows:?}");
    // Compared as stored (identity), the norms do not line up.
    let (code, out, _) = ckpt(&[
        "diff",
        fixture("yi").to_str().unwrap(),
        copy.to_str().unwrap(),
        "--family-a",
        "identity",
        "--family-b",
        "identity",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.lines()
            .any(|l| l.contains("model.layers.{0..1}.ln1.weight") && l.contains("only in A")),
        "{out}"
    );
}

#[test]
fn value_diff_sees_one_changed_element() {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("c");
    rewrite(&fixture("llama-gqa"), &copy, |n| n.to_string(), |_| {});
    assert_eq!(diff_json(&fixture("llama-gqa"), &copy, &["--values"]).0, 0);
    let off = {
        let ck = Checkpoint::open(&copy).unwrap();
        let t = ck.get("model.layers.1.mlp.down_proj.weight").unwrap();
        ck.shards[0].data_start() + t.begin + 4 * 10
    };
    let f = copy.join("model.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let old = f32::from_le_bytes(b[off..off + 4].try_into().unwrap());
    b[off..off + 4].copy_from_slice(&(old + 0.5).to_le_bytes());
    std::fs::write(&f, b).unwrap();
    // The bytes are compared by default: without --values the tensor is already `values differ`.
    let (code, v) = diff_json(&fixture("llama-gqa"), &copy, &[]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        row(&v, "model.layers.1.mlp.down_proj.weight")["status"],
        "values differ"
    );
    assert_eq!(
        row(&v, "model.layers.0.mlp.down_proj.weight")["status"],
        "same"
    );
    let (code, v) = diff_json(&fixture("llama-gqa"), &copy, &["--values"]);
    assert_eq!(code, 1);
    let r = row(&v, "model.layers.1.mlp.down_proj.weight");
    assert_eq!(r["values"]["differing"].as_u64(), Some(1));
    assert!(
        (r["values"]["max_abs"].as_f64().unwrap() - 0.5).abs() < 1e-6,
        "{r}"
    );
    assert!(r["values"]["cosine"].as_f64().unwrap() < 1.0);
    assert_eq!(
        row(&v, "model.layers.0.mlp.down_proj.weight")["values"]["differing"].as_u64(),
        Some(0)
    );
}

#[test]
fn errors_exit_2() {
    let (code, _, err) = ckpt(&[
        "diff",
        fixture("llama-gqa").to_str().unwrap(),
        "/nonexistent/x",
    ]);
    assert_eq!(code, 2, "{err}");
    let p = fixture("yi");
    let (code, _, err) = ckpt(&[
        "diff",
        p.to_str().unwrap(),
        p.to_str().unwrap(),
        "--family-a",
        "nope",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown family `nope`"), "{err}");
}

#[test]
fn runs_on_sparse_real_shaped_layouts() {
    let d = tempfile::tempdir().unwrap();
    let l3 = d.path().join("llama3");
    let specs = synth::llama_tensors(&Dims::LLAMA3_8B, Dtype::BF16, false);
    let cfg = Dims::LLAMA3_8B.config_json("llama", "LlamaForCausalLM", "bfloat16");
    synth::write_checkpoint(&l3, Some(&cfg), &specs, 4, Fill::Sparse).unwrap();
    let yi = d.path().join("yi34b");
    let mut specs = synth::llama_tensors(&Dims::YI_34B, Dtype::BF16, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = Dims::YI_34B.config_json("Yi", "YiForCausalLM", "bfloat16");
    synth::write_checkpoint(&yi, Some(&cfg), &specs, 7, Fill::Sparse).unwrap();
    let (code, out, _) = ckpt(&["diff", l3.to_str().unwrap(), l3.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = ckpt(&["diff", yi.to_str().unwrap(), l3.to_str().unwrap()]);
    assert_eq!(code, 1);
    let line = out
        .lines()
        .find(|l| l.contains("self_attn.q_proj.weight"))
        .expect(&out);
    assert!(
        line.contains("model.layers.{0..31}.self_attn.q_proj.weight")
            && line.contains("[7168, 7168] -> [4096, 4096]"),
        "{line}"
    );
    assert!(
        out.lines().any(
            |l| l.contains("model.layers.{32..59}.self_attn.q_proj.weight")
                && l.contains("only in A")
        ),
        "{out}"
    );
}

/// Overwrite the bytes of one tensor of a single-file checkpoint in place.
fn patch(dir: &Path, tensor: &str, edit: impl FnOnce(&mut [u8])) {
    let (start, end) = {
        let ck = Checkpoint::open(dir).unwrap();
        let t = ck.get(tensor).unwrap();
        let base = ck.shards[0].data_start();
        (base + t.begin, base + t.end)
    };
    let f = dir.join("model.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    edit(&mut b[start..end]);
    std::fs::write(&f, b).unwrap();
}

/// Issue 11: `diff A B` said `identical` (exit 0) for checkpoints whose values differ, because
/// without `--values` it never read them, and with `--values` every row still said `same`. NaN,
/// +inf and zeros injected, and unrelated random weights of the same shapes, are each reported as
/// differing (exit 1), with and without `--values`, naming the tensor.
#[test]
fn injected_nan_inf_zeros_and_unrelated_weights_are_reported_as_differing() {
    let d = tempfile::tempdir().unwrap();
    let nan = "model.layers.0.self_attn.q_proj.weight";
    let inf = "model.embed_tokens.weight";
    let zeros = "model.layers.1.mlp.up_proj.weight";
    type Edit = Box<dyn Fn(&mut [u8])>;
    let cases: [(&str, &str, Edit); 3] = [
        (
            "nan",
            nan,
            Box::new(|b: &mut [u8]| b[20..24].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "inf",
            inf,
            Box::new(|b: &mut [u8]| b[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes())),
        ),
        ("zeros", zeros, Box::new(|b: &mut [u8]| b.fill(0))),
    ];
    for (what, tensor, edit) in cases {
        let copy = d.path().join(what);
        rewrite(&fixture("llama-gqa"), &copy, |n| n.to_string(), |_| {});
        patch(&copy, tensor, |b| edit(b));
        let (a, b) = (fixture("llama-gqa"), copy);
        // Text, without --values.
        let (code, out, err) = ckpt(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--all"]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        let line = out.lines().find(|l| l.contains(tensor)).expect(&out);
        assert!(line.contains("values differ"), "{what}: {line}");
        assert!(
            out.contains("differ: 21 tensors (20 same, 1 values differ)"),
            "{what}: {out}"
        );
        assert!(!out.contains("identical"), "{what}: {out}");
        // JSON, with and without --values.
        for extra in [&[][..], &["--values"][..]] {
            let (code, v) = diff_json(&a, &b, extra);
            assert_eq!(code, 1, "{what} {extra:?}");
            assert_eq!(v["identical"], false);
            assert_eq!(
                row(&v, tensor)["status"],
                "values differ",
                "{what} {extra:?}"
            );
            let others = v["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["name"] != tensor);
            for r in others {
                assert_eq!(r["status"], "same", "{what}: {r}");
            }
        }
        let (_, v) = diff_json(&a, &b, &["--values"]);
        let vals = &row(&v, tensor)["values"];
        assert!(vals["differing"].as_u64().unwrap() >= 1, "{what}: {vals}");
        let nonfinite = if what == "zeros" { 0 } else { 1 };
        assert_eq!(vals["nonfinite_a"].as_u64(), Some(0), "{what}: {vals}");
        assert_eq!(
            vals["nonfinite_b"].as_u64(),
            Some(nonfinite),
            "{what}: {vals}"
        );
        if what == "zeros" {
            assert!(vals["max_abs"].as_f64().unwrap() > 0.0, "{vals}");
            assert_eq!(vals["cosine"].as_f64(), Some(0.0), "{vals}");
        }
        // The text table with --values shows the status and the non-finite counts.
        let (_, out, _) = ckpt(&[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--values",
            "--all",
        ]);
        let line = out.lines().find(|l| l.contains(tensor)).expect(&out);
        assert!(line.contains("values differ"), "{what}: {line}");
        assert!(line.contains(&format!("0/{nonfinite}")), "{what}: {line}");
    }

    // Unrelated random weights of the same shapes (and the same config).
    let dims = Dims {
        hidden: 32,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        intermediate: 48,
        vocab: 64,
        tied: false,
    };
    let cfg = dims.config_json("llama", "LlamaForCausalLM", "float32");
    let specs = synth::llama_tensors(&dims, Dtype::F32, false);
    let (x, y) = (d.path().join("x"), d.path().join("y"));
    synth::write_checkpoint(&x, Some(&cfg), &specs, 1, Fill::Random(1)).unwrap();
    synth::write_checkpoint(&y, Some(&cfg), &specs, 1, Fill::Random(2)).unwrap();
    for extra in [&[][..], &["--values"][..]] {
        let (code, v) = diff_json(&x, &y, extra);
        assert_eq!(code, 1, "{extra:?}: {v:#}");
        for r in v["tensors"].as_array().unwrap() {
            assert_eq!(r["status"], "values differ", "{r}");
        }
    }
    let (code, out, _) = ckpt(&["diff", x.to_str().unwrap(), y.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("model.layers.{0..1}.self_attn.q_proj.weight"),
        "{out}"
    );
    assert!(
        !out.contains(" same ") && !out.contains("identical"),
        "{out}"
    );
    // Each compared with itself: identical, exit 0.
    let (code, _) = diff_json(&x, &x, &[]);
    assert_eq!(code, 0);
}

/// Two Meta-layout checkpoints (params.json) that differ only in a key the mapping renames
/// (`norm_eps` -> `rms_norm_eps`) or drops into another setting (`use_scaled_rope` ->
/// `rope_scaling`): the raw key is absent from both canonical configs, which once made the
/// difference "rewritten by the family mapping" and the diff `identical`. Read through the same
/// mapping, even a key it drops without a trace (`max_batch_size`) is a difference of the files.
#[test]
fn meta_params_renamed_or_dropped_key_difference_is_not_ignored() {
    let d = tempfile::tempdir().unwrap();
    let src = fixture("llama-meta");
    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let dst = d.path().join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["consolidated.safetensors", "params.json"] {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
        let p = dst.join("params.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(v.as_object_mut().unwrap());
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        dst
    };
    let a = copy("a", &|_| {});
    let (code, v) = diff_json(&a, &a, &[]);
    assert_eq!((code, v["identical"].clone()), (0, Value::Bool(true)));
    for (name, key, val) in [
        ("eps", "norm_eps", Value::from(1e-6)),
        ("scaled", "use_scaled_rope", Value::Bool(true)),
    ] {
        let b = copy(name, &|m| {
            m.insert(key.into(), val.clone());
        });
        let (code, v) = diff_json(&a, &b, &[]);
        assert_eq!(code, 1, "{key}: {v}");
        assert_eq!(v["identical"], false, "{key}: {v}");
        let rows = v["config"]["differing"].as_array().unwrap();
        let r = rows.iter().find(|r| r["key"] == key).unwrap();
        assert_eq!(r["ignored"], false, "{key}: {r}");
    }
    let b = copy("batch", &|m| {
        m.insert("max_batch_size".into(), Value::from(4));
    });
    let (code, v) = diff_json(&a, &b, &[]);
    assert_eq!(code, 1, "{v}");
}

/// Two Hugging Face LLaMA checkpoints with the same tensors whose configs differ in
/// `attention_bias` / `mlp_bias` (transformers builds bias parameters the files do not have): the
/// llama mapping sets both from the tensors, so the canonical configs agreed and the difference was
/// ignored as "rewritten by the family mapping" (`identical`, exit 0). Between two sides read
/// through the same family it is a difference.
#[test]
fn same_family_config_difference_the_mapping_overrides_is_not_ignored() {
    let d = tempfile::tempdir().unwrap();
    for key in ["attention_bias", "mlp_bias"] {
        let b = d.path().join(key);
        rewrite(
            &fixture("llama-mha"),
            &b,
            |n| n.to_string(),
            |c| {
                c[key] = true.into();
            },
        );
        let (code, v) = diff_json(&fixture("llama-mha"), &b, &[]);
        assert_eq!(code, 1, "{key}: {}", v["config"]);
        let rows = v["config"]["differing"].as_array().unwrap();
        let r = rows.iter().find(|r| r["key"] == key).unwrap();
        assert_eq!(r["ignored"], false, "{key}: {r}");
    }
}

/// Rotary settings that differ in a field the parsed rope settings do not carry (yarn's
/// `attention_factor` and `beta_fast`, which transformers reads) were ignored as "same setting,
/// other spelling" and the diff said `identical`. The same yarn settings in the transformers 4
/// spelling (`rope_theta` + `rope_scaling` with `type`) and the transformers 5 one
/// (`rope_parameters`) are still the same setting.
#[test]
fn rope_fields_outside_the_parsed_settings_are_compared() {
    let d = tempfile::tempdir().unwrap();
    let yarn = |extra: Value| {
        let mut p = serde_json::json!({
            "rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 64, "beta_fast": 32.0, "beta_slow": 1.0,
        });
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let write = |name: &str, edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let dst = d.path().join(name);
        rewrite(
            &fixture("llama-mha"),
            &dst,
            |n| n.to_string(),
            |c| {
                let m = c.as_object_mut().unwrap();
                m.remove("rope_theta");
                m.remove("rope_scaling");
                edit(m);
            },
        );
        dst
    };
    let a = write("a", &|m| {
        m.insert("rope_parameters".into(), yarn(serde_json::json!({})));
    });
    for (name, extra) in [
        ("attn", serde_json::json!({"attention_factor": 2.0})),
        ("beta", serde_json::json!({"beta_fast": 8.0})),
    ] {
        let b = write(name, &|m| {
            m.insert("rope_parameters".into(), yarn(extra.clone()));
        });
        let (code, v) = diff_json(&a, &b, &[]);
        assert_eq!(code, 1, "{name}: {}", v["config"]);
        let rows = v["config"]["differing"].as_array().unwrap();
        let r = rows.iter().find(|r| r["key"] == "rope_parameters").unwrap();
        assert_eq!(r["ignored"], false, "{name}: {r}");
    }
    let v4 = write("v4", &|m| {
        m.insert("rope_theta".into(), Value::from(10000));
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"type": "yarn", "factor": 4, "original_max_position_embeddings": 64,
                "beta_fast": 32.0, "beta_slow": 1.0}),
        );
    });
    let (code, v) = diff_json(&a, &v4, &[]);
    assert_eq!(code, 0, "{}", v["config"]);
}

/// A tensor whose bytes differ while every value is equal (a +0 stored as -0; a NaN with another
/// payload) is `values differ` (the bytes differ, exit 1), and the `--values` summary says why
/// no value differs instead of "1 values differ ... 0 with different values" alone.
#[test]
fn bytes_only_differences_are_named_in_the_values_summary() {
    let d = tempfile::tempdir().unwrap();
    let t = "model.layers.0.self_attn.q_proj.weight";
    let base = d.path().join("base");
    rewrite(&fixture("llama-gqa"), &base, |n| n.to_string(), |_| {});
    // Element 5 is +0 in A and -0 in B; element 9 is a NaN in both, with other payloads.
    patch(&base, t, |b| {
        b[20..24].copy_from_slice(&0.0f32.to_le_bytes());
        b[36..40].copy_from_slice(&0x7fc0_0001u32.to_le_bytes());
    });
    let other = d.path().join("other");
    rewrite(&base, &other, |n| n.to_string(), |_| {});
    patch(&other, t, |b| {
        b[20..24].copy_from_slice(&(-0.0f32).to_le_bytes());
        b[36..40].copy_from_slice(&0x7fc0_0002u32.to_le_bytes());
    });
    let (a, b) = (base.to_str().unwrap(), other.to_str().unwrap());
    let (code, out, err) = ckpt(&["diff", a, b, "--values"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "differ: 21 tensors (20 same, 1 values differ); 0 with different values, 1 with the \
             same values in other bytes (-0 against +0, or NaNs with other payloads)"
        ),
        "{out}"
    );
    // A real value difference is counted as one, and the bytes-only clause goes away.
    patch(&other, t, |b| {
        b[20..24].copy_from_slice(&1.0f32.to_le_bytes())
    });
    let (code, out, _) = ckpt(&["diff", a, b, "--values"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("differ: 21 tensors (20 same, 1 values differ); 1 with different values\n")
            || out.trim_end().ends_with("1 with different values"),
        "{out}"
    );
    assert!(!out.contains("other bytes"), "{out}");
}

/// The transformers 5 config of `llama-sharded` (`rope_parameters` with theta 10000) with a
/// top-level `rope_theta` added: equal to the merged one it is another spelling of the same setting
/// (exit 0); different (50000), the side's two spellings disagree (transformers 4, candle and vLLM
/// read 50000, transformers 5 the merged value), which `diff` once ignored as "same setting, other
/// spelling" and called `identical`. Both directions, and a conflict on both sides.
#[test]
fn rope_spellings_that_disagree_within_a_side_are_a_difference() {
    let d = tempfile::tempdir().unwrap();
    let with_theta = |name: &str, theta: Option<f64>| {
        let dst = d.path().join(name);
        rewrite(
            &fixture("llama-sharded"),
            &dst,
            |n| n.to_string(),
            |c| {
                assert!(c["rope_parameters"].is_object() && c.get("rope_theta").is_none());
                if let Some(t) = theta {
                    c["rope_theta"] = t.into();
                }
            },
        );
        dst
    };
    let a = with_theta("a", None);
    let agree = with_theta("agree", Some(10000.0));
    let conflict = with_theta("conflict", Some(50000.0));

    // The spellings agree within each side: another spelling of the same setting.
    let (code, v) = diff_json(&a, &agree, &[]);
    assert_eq!(code, 0, "{}", v["config"]);
    let r = &v["config"]["differing"][0];
    assert_eq!(
        (r["key"].as_str(), r["reason"].as_str()),
        (Some("rope_theta"), Some("same setting, other spelling")),
        "{r}"
    );
    assert!(r["note"].is_null(), "{r}");

    // B's spellings disagree, then A's.
    for (x, y, side) in [(&a, &conflict, "B"), (&conflict, &a, "A")] {
        let (code, v) = diff_json(x, y, &[]);
        assert_eq!(code, 1, "{side}: {}", v["config"]);
        assert_eq!(v["identical"], false);
        let rows = v["config"]["differing"].as_array().unwrap();
        let r = rows.iter().find(|r| r["key"] == "rope_theta").unwrap();
        assert_eq!(r["ignored"], false, "{side}: {r}");
        let note = r["note"].as_str().unwrap_or_default();
        assert!(
            note.starts_with(&format!("{side}'s two RoPE spellings disagree"))
                && note.contains("50000")
                && note.contains("10000"),
            "{side}: {note}"
        );
        let (code, out, err) = ckpt(&["diff", x.to_str().unwrap(), y.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}{err}");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("rope_theta"))
            .expect(&out);
        assert!(
            line.contains(&format!("{side}'s two RoPE spellings disagree"))
                && !line.contains("ignored"),
            "{line}"
        );
        assert!(out.contains("differ: 21 tensors (21 same)"), "{out}");
    }

    // Against a side that agrees with itself, the conflicting side is still named.
    let (code, v) = diff_json(&agree, &conflict, &[]);
    assert_eq!(code, 1);
    let r = &v["config"]["differing"].as_array().unwrap()[0];
    assert!(
        r["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("B's two RoPE")),
        "{r}"
    );
    // Both sides in conflict, differently: both named.
    let other = with_theta("other", Some(20000.0));
    let (code, v) = diff_json(&conflict, &other, &[]);
    assert_eq!(code, 1);
    let r = &v["config"]["differing"].as_array().unwrap()[0];
    let note = r["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("A's two RoPE") && note.contains("; B's two RoPE"),
        "{note}"
    );
}

/// A copy of a fixture directory (files only).
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn edit_json(p: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn file_row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["files"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no file row {name}: {}", v["files"]))
}

fn differing_keys(row: &Value) -> Vec<&str> {
    row["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["ignored"] == false)
        .map(|k| k["key"].as_str().unwrap())
        .collect()
}

/// Same tensors and config, but a file loaders read beside the weights changed: `diff` compared
/// tensors and config.json only and said `identical` (exit 0). Each change is a difference now
/// (exit 1) named in the table and in `--json`: generation_config.json's eos and sampling
/// settings, tokenizer.json's vocabulary ids permuted, tokenizer.model deleted,
/// tokenizer_config.json's bos_token / add_bos_token, merges.txt's bytes, a chat template added.
#[test]
fn files_beside_the_weights_are_compared() {
    let d = tempfile::tempdir().unwrap();
    let src = fixture("tokenizers/llama-tokjson");
    let a = d.path().join("a");
    copy_dir(&src, &a);
    std::fs::copy(
        fixture("tokenizers/yi-sp").join("tokenizer.model"),
        a.join("tokenizer.model"),
    )
    .unwrap();
    std::fs::write(a.join("merges.txt"), "#version: 0.2\nh e\nl l\n").unwrap();
    let (code, v) = diff_json(&a, &a, &[]);
    assert_eq!(code, 0, "{}", v["files"]);
    assert_eq!(v["files"]["compared"], true);
    let names: Vec<&str> = v["files"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "generation_config.json",
            "merges.txt",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json"
        ]
    );
    assert!(
        v["files"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "same")
    );

    type Edit = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, &str, Vec<&str>, Edit)> = vec![
        (
            "generation",
            "generation_config.json",
            "differs",
            vec!["eos_token_id", "temperature", "top_p"],
            Box::new(|b: &Path| {
                edit_json(&b.join("generation_config.json"), |m| {
                    m.insert("eos_token_id".into(), Value::from(7));
                    m.insert("temperature".into(), Value::from(0.6));
                    m.insert("top_p".into(), Value::from(0.9));
                })
            }),
        ),
        (
            "vocab",
            "tokenizer.json",
            "differs",
            vec!["model"],
            Box::new(|b: &Path| {
                edit_json(&b.join("tokenizer.json"), |m| {
                    let vocab = m["model"]["vocab"].as_object_mut().unwrap();
                    let keys: Vec<String> = vocab.keys().skip(10).take(2).cloned().collect();
                    let (x, y) = (vocab[&keys[0]].clone(), vocab[&keys[1]].clone());
                    vocab.insert(keys[0].clone(), y);
                    vocab.insert(keys[1].clone(), x);
                })
            }),
        ),
        (
            "deleted",
            "tokenizer.model",
            "only in A",
            vec![],
            Box::new(|b: &Path| std::fs::remove_file(b.join("tokenizer.model")).unwrap()),
        ),
        (
            "bos",
            "tokenizer_config.json",
            "differs",
            vec!["bos_token", "add_bos_token"],
            Box::new(|b: &Path| {
                edit_json(&b.join("tokenizer_config.json"), |m| {
                    m.insert("bos_token".into(), Value::from("<|begin|>"));
                    m.insert("add_bos_token".into(), Value::Bool(false));
                })
            }),
        ),
        (
            "merges",
            "merges.txt",
            "differs",
            vec![],
            Box::new(|b: &Path| {
                std::fs::write(b.join("merges.txt"), "#version: 0.2\nl l\nh e\n").unwrap()
            }),
        ),
        (
            "template",
            "chat_template.jinja",
            "only in B",
            vec![],
            Box::new(|b: &Path| {
                std::fs::write(b.join("chat_template.jinja"), "{{ messages }}").unwrap()
            }),
        ),
    ];
    for (what, file, status, keys, edit) in cases {
        let b = d.path().join(what);
        copy_dir(&a, &b);
        edit(&b);
        let (code, v) = diff_json(&a, &b, &[]);
        assert_eq!(code, 1, "{what}: {}", v["files"]);
        assert_eq!(v["identical"], false, "{what}");
        let r = file_row(&v, file);
        assert_eq!(r["status"], status, "{what}: {r}");
        assert_eq!(differing_keys(r), keys, "{what}: {r}");
        // Every other file, the tensors and the config are the same.
        for o in v["files"]["rows"].as_array().unwrap() {
            if o["name"] != file {
                assert_eq!(o["status"], "same", "{what}: {o}");
            }
        }
        assert!(
            v["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["status"] == "same")
        );
        assert_eq!(v["config"]["differing"], serde_json::json!([]));
        // The text names the file and, for JSON, the keys, and does not say identical.
        let (code, out, err) = ckpt(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(file))
            .expect(&out);
        let want = if keys.is_empty() {
            status.to_string()
        } else {
            format!("differs: {}", keys.join(", "))
        };
        assert!(line.contains(&want), "{what}: {line}");
        assert!(
            out.contains("differ: 21 tensors (21 same)") && !out.contains("identical"),
            "{what}: {out}"
        );
        if what == "generation" {
            let l = out
                .lines()
                .find(|l| l.contains("generation_config.json: eos_token_id"))
                .expect(&out);
            assert!(l.contains(" 2 ") && l.contains(" 7"), "{l}");
        }
        if what == "vocab" {
            let k = &r["keys"][0];
            assert_eq!(k["inner_keys"], serde_json::json!(["vocab"]), "{k}");
            assert!(out.contains("differs in: vocab"), "{out}");
        }
    }
}

/// What does not change what loaders see is not a difference: the same JSON in other bytes
/// (reformatted, keys reordered), and a `transformers_version` alone (shown as ignored).
#[test]
fn files_beside_the_weights_equal_in_value_are_the_same() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    copy_dir(&fixture("tokenizers/llama-tokjson"), &a);
    let b = d.path().join("b");
    copy_dir(&a, &b);
    // Compact, keys in reverse order.
    let p = b.join("tokenizer_config.json");
    let v: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let rev: serde_json::Map<String, Value> = v.into_iter().rev().collect();
    std::fs::write(&p, serde_json::to_string(&rev).unwrap()).unwrap();
    edit_json(&b.join("generation_config.json"), |m| {
        m.insert("transformers_version".into(), Value::from("9.9.9"));
    });
    let (code, v) = diff_json(&a, &b, &[]);
    assert_eq!(code, 0, "{}", v["files"]);
    assert_eq!(v["identical"], true);
    let r = file_row(&v, "tokenizer_config.json");
    assert_eq!(r["status"], "same");
    assert_ne!(r["size_a"], r["size_b"]);
    assert_eq!(r["note"], "same JSON values in other bytes");
    // How the tokenizer was loaded before it was saved (transformers 5 records it) is not the
    // tokenizer: the same tokenizer loaded with `local_files_only=True` is the same.
    let c = d.path().join("c");
    copy_dir(&a, &c);
    edit_json(&c.join("tokenizer_config.json"), |m| {
        m.insert("local_files_only".into(), Value::from(true));
        m.insert("is_local".into(), Value::from(true));
    });
    let (code, vc) = diff_json(&a, &c, &[]);
    assert_eq!(code, 0, "{}", vc["files"]);
    assert_eq!(file_row(&vc, "tokenizer_config.json")["status"], "same");
    let r = file_row(&v, "generation_config.json");
    assert_eq!(r["status"], "same", "{r}");
    assert_eq!(r["keys"][0]["key"], "transformers_version");
    assert_eq!(r["keys"][0]["reason"], "informational");
    let (code, out, _) = ckpt(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("files beside the weights: 3 same")
            && out.contains("identical: 21 tensors (21 same)"),
        "{out}"
    );
}

/// A side given as a single file (a `.safetensors` or `.gguf` file, not a directory) has no files
/// beside the weights to compare: the output says they were not compared rather than that they
/// match, and they do not change the verdict.
#[test]
fn files_beside_the_weights_of_a_single_file_are_not_compared() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    copy_dir(&fixture("tokenizers/llama-tokjson"), &a);
    let file = a.join("model.safetensors");
    for (x, y, who) in [
        (&file, &a, "A was given as a file"),
        (&a, &file, "B was given as a file"),
        (&file, &file, "A and B were given as files"),
    ] {
        let (code, out, err) = ckpt(&["diff", x.to_str().unwrap(), y.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!(
                "files beside the weights: not compared ({who}, not"
            )),
            "{out}"
        );
        assert!(!out.contains("3 same"), "{out}");
        let (_, v) = diff_json(x, y, &[]);
        assert_eq!(v["files"]["compared"], false, "{v}");
        assert!(v["files"]["reason"].as_str().unwrap().starts_with(who));
        assert_eq!(v["files"]["rows"], serde_json::json!([]));
    }
    let gguf = fixture("gguf").join("gqa-f32.gguf");
    let (_, out, _) = ckpt(&["diff", gguf.to_str().unwrap(), gguf.to_str().unwrap()]);
    assert!(
        out.contains("files beside the weights: not compared (A and B were given as files"),
        "{out}"
    );
}
