//! `ckpt verify` as a user runs it. Sensitivity is shown, not assumed: a LLaMA fixture is broken in the
//! ways real conversions break, and verify must call each copy not equivalent at the logits level with
//! figures far above the tolerance; correct conversions of every LLaMA-exact family must verify as
//! equivalent with bit-identical logits.

use std::path::Path;

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::{Dtype, serialize_header};

mod common;
use common::{ckpt, fixture};

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// Copy a single-file fixture into `dst`, letting `edit` change its tensors and `cfg` its config.json.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Tensors),
    cfg: impl FnOnce(&mut serde_json::Value),
) {
    let ck = Checkpoint::open(src).unwrap();
    let mut ts: Tensors = ck
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
    edit(&mut ts);
    std::fs::create_dir_all(dst).unwrap();
    let mut entries = Vec::new();
    let mut off = 0;
    for (n, d, s, b) in &ts {
        entries.push((n.clone(), *d, s.clone(), off, off + b.len()));
        off += b.len();
    }
    let meta = vec![("format".to_string(), "pt".to_string())];
    let mut bytes = serialize_header(Some(&meta), &entries).unwrap();
    for (_, _, _, b) in &ts {
        bytes.extend_from_slice(b);
    }
    std::fs::write(dst.join("model.safetensors"), bytes).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg(&mut c);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_vec_pretty(&c).unwrap(),
    )
    .unwrap();
}

fn swap(ts: &mut Tensors, a: &str, b: &str) {
    let ia = ts
        .iter()
        .position(|t| t.0 == a)
        .unwrap_or_else(|| panic!("no {a}"));
    let ib = ts
        .iter()
        .position(|t| t.0 == b)
        .unwrap_or_else(|| panic!("no {b}"));
    let tmp = ts[ia].3.clone();
    ts[ia].3 = ts[ib].3.clone();
    ts[ib].3 = tmp;
}

/// Meta's interleaved rotary order applied to an HF-ordered projection (the permutation a converter
/// must undo): within each head, Meta row 2r = HF row r and Meta row 2r+1 = HF row hd/2 + r.
fn to_meta_order(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let row = bytes.len() / rows;
    let hd = rows / heads;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for r in 0..hd / 2 {
            for (meta, hf) in [(2 * r, r), (2 * r + 1, hd / 2 + r)] {
                let (m, f) = (h * hd + meta, h * hd + hf);
                out[m * row..(m + 1) * row].copy_from_slice(&bytes[f * row..(f + 1) * row]);
            }
        }
    }
    out
}

fn verify_json(a: &Path, b: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["verify", a.to_str().unwrap(), b.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = ckpt(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad json ({e}): {out}\n{err}"));
    (code, v, err)
}

fn assert_caught(
    what: &str,
    src: &str,
    edit: impl FnOnce(&mut Tensors),
    cfg: impl FnOnce(&mut serde_json::Value),
) {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    rewrite(&fixture(src), &broken, edit, cfg);
    let (code, v, err) = verify_json(&fixture(src), &broken, &[]);
    assert_eq!(
        code, 1,
        "{what}: verify should say not equivalent: {v}\n{err}"
    );
    assert_eq!(v["equivalent"], false, "{what}");
    let l = &v["logits"];
    assert_eq!(l["pass"], false, "{what}: logits level passed: {v}");
    let max_abs = l["max_abs"].as_f64().unwrap();
    assert!(max_abs > 0.05, "{what}: the logits moved only {max_abs}");
}

#[test]
fn swapped_norms_are_caught() {
    assert_caught(
        "swapped norms",
        "llama-gqa",
        |t| {
            swap(
                t,
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.post_attention_layernorm.weight",
            )
        },
        |_| {},
    );
}

#[test]
fn swapped_k_and_v_are_caught() {
    assert_caught(
        "swapped k/v",
        "llama-gqa",
        |t| {
            swap(
                t,
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.self_attn.v_proj.weight",
            );
            swap(
                t,
                "model.layers.1.self_attn.k_proj.weight",
                "model.layers.1.self_attn.v_proj.weight",
            );
        },
        |_| {},
    );
}

#[test]
fn swapped_gate_and_up_are_caught() {
    assert_caught(
        "swapped gate/up",
        "llama-gqa",
        |t| {
            swap(
                t,
                "model.layers.1.mlp.gate_proj.weight",
                "model.layers.1.mlp.up_proj.weight",
            )
        },
        |_| {},
    );
}

#[test]
fn missing_rotary_permutation_is_caught() {
    assert_caught(
        "Q/K left in Meta's rotary order",
        "llama-gqa",
        |ts| {
            for t in ts.iter_mut() {
                let heads = if t.0.ends_with("q_proj.weight") {
                    4
                } else if t.0.ends_with("k_proj.weight") {
                    2
                } else {
                    continue;
                };
                t.3 = to_meta_order(&t.3, t.2[0], heads);
            }
        },
        |_| {},
    );
}

#[test]
fn rope_theta_left_at_default_is_caught() {
    assert_caught(
        "rope_theta left at 10000",
        "llama-theta",
        |_| {},
        |c| {
            if let Some(p) = c.get_mut("rope_parameters") {
                p["rope_theta"] = 10000.0.into();
            }
            if c.get("rope_theta").is_some() {
                c["rope_theta"] = 10000.0.into();
            }
        },
    );
}

#[test]
fn dropped_biases_are_caught() {
    assert_caught(
        "attention biases dropped",
        "llama-bias",
        |ts| ts.retain(|t| !(t.0.contains("self_attn") && t.0.ends_with(".bias"))),
        |c| c["attention_bias"] = false.into(),
    );
}

#[test]
fn untied_embedding_with_random_lm_head_is_caught() {
    assert_caught(
        "untied with a random lm_head",
        "llama-tied",
        |ts| {
            let emb = ts
                .iter()
                .find(|t| t.0 == "model.embed_tokens.weight")
                .unwrap()
                .clone();
            let mut state = 12345u32;
            let data: Vec<u8> = emb
                .3
                .chunks(4)
                .flat_map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5).to_le_bytes()
                })
                .collect();
            ts.push(("lm_head.weight".into(), emb.1, emb.2.clone(), data));
        },
        |c| c["tie_word_embeddings"] = false.into(),
    );
}

#[test]
fn a_checkpoint_is_equivalent_to_itself_with_exact_logits() {
    let (code, v, err) = verify_json(&fixture("llama-gqa"), &fixture("llama-gqa"), &[]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["equivalent"], true);
    assert_eq!(v["structure"]["pass"], true);
    assert_eq!(v["bytes"]["pass"], true);
    assert_eq!(v["logits"]["max_abs"].as_f64(), Some(0.0));
    assert_eq!(v["logits"]["top1"].as_f64(), Some(1.0));
}

#[test]
fn dtype_change_needs_a_stated_tolerance() {
    // f32 fixture against its bf16 rounding: bytes differ, so equivalent only within --atol.
    let dir = tempfile::tempdir().unwrap();
    let bf = dir.path().join("bf16");
    rewrite(
        &fixture("llama-gqa"),
        &bf,
        |ts| {
            for t in ts.iter_mut() {
                t.3 =
                    t.3.chunks(4)
                        .flat_map(|c| {
                            half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .to_le_bytes()
                        })
                        .collect();
                t.1 = Dtype::BF16;
            }
        },
        |c| c["torch_dtype"] = "bfloat16".into(),
    );
    let (code, v, _) = verify_json(&fixture("llama-gqa"), &bf, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        v["structure"]["pass"], true,
        "dtype changes are noted, not structural: {v}"
    );
    assert!(
        !v["structure"]["dtype_differs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (code, v, _) = verify_json(&fixture("llama-gqa"), &bf, &["--atol", "0.5"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["logits"]["top1"].as_f64().unwrap() > 0.9);
}

#[test]
fn levels_and_text_output() {
    let (code, out, err) = ckpt(&[
        "verify",
        fixture("llama-gqa").to_str().unwrap(),
        fixture("llama-mha").to_str().unwrap(),
        "--level",
        "structure",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("structure") && out.contains("FAIL"), "{out}");
    assert!(out.contains("k_proj"), "{out}");
    assert!(
        out.contains("bytes      not compared") && out.contains("logits     not compared"),
        "{out}"
    );
    assert!(!out.contains("PASS"), "{out}");
    assert!(
        out.contains("verdict: structure differs (bytes and logits not compared)"),
        "{out}"
    );
    let (code, out, _) = ckpt(&[
        "verify",
        fixture("llama-gqa").to_str().unwrap(),
        fixture("llama-gqa").to_str().unwrap(),
        "--skip-logits",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("verdict: identical bytes (logits not compared)"),
        "{out}"
    );
    assert!(!out.contains("equivalent"), "{out}");
    let (code, _, err) = ckpt(&[
        "verify",
        fixture("llama-gqa").to_str().unwrap(),
        "/nonexistent",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
}

/// Converting each LLaMA-exact family to LLaMA must verify as equivalent with bit-identical logits.
#[test]
fn conversions_to_llama_verify_as_equivalent() {
    for fam in ["yi", "llama-meta", "phi3", "baichuan", "internlm2", "qwen2"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let src = fixture(fam);
        let args = vec![
            "convert",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "--to",
            "llama",
            "--quiet",
        ];
        let (code, o, err) = ckpt(&args);
        assert_eq!(code, 0, "{fam}: convert failed: {o}{err}");
        let (code, v, err) = verify_json(&fixture(fam), &out, &[]);
        assert_eq!(code, 0, "{fam}: {v}\n{err}");
        assert_eq!(v["bytes"]["pass"], true, "{fam}");
        assert_eq!(
            v["logits"]["max_abs"].as_f64(),
            Some(0.0),
            "{fam}: logits not bit-identical"
        );
    }
}

/// The README's main job: convert the Yi-named fixture to LLaMA with `--verify`.
#[test]
fn convert_with_verify_shows_the_verdict_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("yi-llama");
    let (code, o, err) = ckpt(&[
        "convert",
        fixture("yi").to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "llama",
        "--verify",
    ]);
    assert_eq!(code, 0, "{o}{err}");
    assert!(o.contains("verdict: equivalent"), "{o}");
    assert!(
        o.contains("logits     PASS") && o.contains("max abs 0.000e0"),
        "{o}"
    );
    assert!(out.join("model.safetensors").exists() && out.join("config.json").exists());
}

/// A conversion that is not equivalent (two norms swapped by rename rules) is refused by `--verify`:
/// exit 1, the verdict printed, nothing under DST and no staging directory left.
#[test]
fn convert_with_verify_refuses_a_non_equivalent_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("swapped");
    let (code, o, err) = ckpt(&[
        "rename",
        fixture("llama-gqa").to_str().unwrap(),
        out.to_str().unwrap(),
        "--rename",
        r"model\.layers\.0\.input_layernorm\.weight=model.layers.0.post_attention_layernorm.weight",
        "--rename",
        r"model\.layers\.0\.post_attention_layernorm\.weight=model.layers.0.input_layernorm.weight",
        "--verify",
    ]);
    assert_eq!(code, 1, "{o}{err}");
    assert!(o.contains("verdict: NOT equivalent"), "{o}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "leftovers: {left:?}");
}

fn f32_bytes(v: f32, n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect()
}

fn tensor<'a>(ts: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    ts.iter_mut()
        .find(|t| t.0 == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Issue 11: `verify --level structure` printed `verdict: equivalent` for two unrelated models. A
/// run limited to structure or bytes names the levels it did not compare and never says
/// `equivalent`; the full run on the same pair says NOT equivalent.
#[test]
fn limited_levels_never_claim_equivalent_for_unrelated_models() {
    // Same shapes and configs, different random weights.
    let (a, b) = (fixture("llama-gqa"), fixture("llama-sharded"));
    let (code, out, _) = ckpt(&[
        "verify",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--level",
        "structure",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verdict: same structure (bytes and logits not compared)"),
        "{out}"
    );
    assert!(!out.contains("equivalent"), "{out}");
    let (code, v, _) = verify_json(&a, &b, &["--level", "structure"]);
    assert_eq!(code, 0);
    assert_eq!(v["verdict"], "same structure");
    assert_eq!(v["equivalent"], false);
    assert_eq!(v["checked"], serde_json::json!(["structure"]));
    assert_eq!(v["not_checked"], serde_json::json!(["bytes", "logits"]));
    assert!(v["bytes"].is_null() && v["logits"].is_null(), "{v}");

    let (code, out, _) = ckpt(&[
        "verify",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--level",
        "bytes",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("verdict: bytes differ (logits not compared)"),
        "{out}"
    );
    let (code, v, _) = verify_json(&a, &b, &["--skip-logits"]);
    assert_eq!(code, 1);
    assert_eq!(v["verdict"], "bytes differ");
    assert_eq!(v["not_checked"], serde_json::json!(["logits"]));

    let (code, v, _) = verify_json(&a, &b, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["verdict"], "NOT equivalent");
    assert_eq!(v["logits"]["pass"], false);
}

/// Issue 11: a level that could not run (here: no config.json, so no forward pass) made verify say
/// NOT equivalent (exit 1) even for the same file given twice. It is `inconclusive`, exit 2, with
/// the reason and a hint naming flags verify has; `--skip-logits` then gives a true verdict.
#[test]
fn a_level_that_cannot_run_is_inconclusive_not_a_difference() {
    // A lone weights file with no config beside it (a file inside a checkpoint directory would
    // read that directory's config).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("model.safetensors");
    std::fs::copy(fixture("llama-gqa").join("model.safetensors"), &f).unwrap();
    let (code, out, err) = ckpt(&["verify", f.to_str().unwrap(), f.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(
            "verdict: inconclusive (logits could not run; structure agrees (hyperparameters not compared), bytes identical)"
        ),
        "{out}"
    );
    assert!(
        out.contains("COULD NOT RUN") && out.contains("config.json"),
        "{out}"
    );
    assert!(
        out.contains("--skip-logits") && out.contains("--level bytes") && out.contains("--seq-len"),
        "{out}"
    );
    assert!(!out.contains("NOT equivalent"), "{out}");
    let (code, v, _) = verify_json(&f, &f, &[]);
    assert_eq!(code, 2);
    assert_eq!(v["verdict"], "inconclusive");
    assert_eq!(v["equivalent"], false);
    assert_eq!(v["logits"]["ran"], false);
    assert_eq!(v["not_checked"], serde_json::json!(["logits"]));
    assert!(
        v["logits"]["reason"]
            .as_str()
            .unwrap()
            .contains("config.json"),
        "{v}"
    );
    // Two different directories without a config: still inconclusive, never a difference.
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    rewrite(&fixture("llama-gqa"), &x, |_| {}, |_| {});
    rewrite(&fixture("llama-gqa"), &y, |_| {}, |_| {});
    std::fs::remove_file(x.join("config.json")).unwrap();
    std::fs::remove_file(y.join("config.json")).unwrap();
    let (code, v, _) = verify_json(&x, &y, &[]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["verdict"], "inconclusive");
    let (code, out, _) = ckpt(&[
        "verify",
        x.to_str().unwrap(),
        y.to_str().unwrap(),
        "--skip-logits",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("identical bytes (logits not compared"),
        "{out}"
    );
    assert!(out.contains("hyperparameters not compared"), "{out}");
}

/// A dtype the reference does not run (F64) is also a level that could not run: inconclusive.
#[test]
fn an_unsupported_dtype_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("f64");
    rewrite(
        &fixture("llama-gqa"),
        &x,
        |ts| {
            for t in ts.iter_mut() {
                t.3 =
                    t.3.chunks(4)
                        .flat_map(|c| {
                            f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                        })
                        .collect();
                t.1 = Dtype::F64;
            }
        },
        |c| c["torch_dtype"] = "float64".into(),
    );
    let (code, v, err) = verify_json(&x, &x, &[]);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["verdict"], "inconclusive", "{v}");
    assert_eq!(v["logits"]["kind"], "unsupported", "{v}");
    assert_eq!(v["bytes"]["pass"], true);
}

/// Issue 16 item 3: q_proj all NaN on one side, o_proj all zero on the other. The softmax used to
/// skip NaN, so the NaN rows became zero attention, the same as a zero o_proj, and verify said
/// equivalent with max abs 0. NaN now propagates and disagrees with the finite side.
#[test]
fn nan_q_proj_against_zero_o_proj_is_not_equivalent() {
    let dir = tempfile::tempdir().unwrap();
    let (nan, zero) = (dir.path().join("nan"), dir.path().join("zero"));
    rewrite(
        &fixture("llama-gqa"),
        &nan,
        |ts| {
            let t = tensor(ts, "model.layers.0.self_attn.q_proj.weight");
            t.3 = f32_bytes(f32::NAN, t.3.len() / 4);
        },
        |_| {},
    );
    rewrite(
        &fixture("llama-gqa"),
        &zero,
        |ts| {
            let t = tensor(ts, "model.layers.0.self_attn.o_proj.weight");
            t.3 = f32_bytes(0.0, t.3.len() / 4);
        },
        |_| {},
    );
    let (code, v, err) = verify_json(&nan, &zero, &[]);
    assert_eq!(code, 1, "{v}\n{err}");
    assert_eq!(v["verdict"], "NOT equivalent");
    let l = &v["logits"];
    assert_eq!(l["pass"], false, "{v}");
    assert!(l["nonfinite_a"].as_u64().unwrap() > 0, "{l}");
    assert_eq!(l["nonfinite_b"].as_u64(), Some(0), "{l}");
    assert!(l["nonfinite_differ"].as_u64().unwrap() > 0, "{l}");
    assert!(
        l["tolerance"].as_f64().is_some(),
        "the tolerance is a number: {l}"
    );
    let (_, out, _) = ckpt(&["verify", nan.to_str().unwrap(), zero.to_str().unwrap()]);
    assert!(
        out.contains("non-finite logits:") && out.contains("where the two sides disagree"),
        "{out}"
    );
    assert!(
        out.contains("verdict: NOT equivalent (logits differ)"),
        "{out}"
    );
}

/// A copy of llama-gqa whose embedding row 1 holds +inf (row 1 is in verify's low-ids sequence).
fn with_inf_embedding(dst: &Path) {
    rewrite(
        &fixture("llama-gqa"),
        dst,
        |ts| {
            let t = tensor(ts, "model.embed_tokens.weight");
            let row = t.2[1] * 4;
            t.3[row + 8..row + 12].copy_from_slice(&f32::INFINITY.to_le_bytes());
        },
        |_| {},
    );
}

/// Issue 16 item 3: +inf in one embedding row of a byte-identical pair gave `tolerance NaN ... NOT
/// equivalent`, and `convert --verify` refused an exact copy. Identical non-finite logits agree, the
/// tolerance stays a number, and convert writes the copy.
#[test]
fn inf_in_an_embedding_row_of_identical_checkpoints_is_equivalent() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    with_inf_embedding(&x);
    with_inf_embedding(&y);
    let (code, v, err) = verify_json(&x, &y, &[]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["verdict"], "equivalent");
    let l = &v["logits"];
    assert!(
        l["nonfinite_a"].as_u64().unwrap() > 0,
        "the +inf row reaches the logits: {l}"
    );
    assert_eq!(l["nonfinite_a"], l["nonfinite_b"]);
    assert_eq!(l["nonfinite_differ"].as_u64(), Some(0));
    assert_eq!(l["tolerance"].as_f64(), Some(0.0), "{l}");
    assert_eq!(l["max_abs"].as_f64(), Some(0.0), "{l}");
    // Against the clean fixture: the non-finite logits disagree with finite ones.
    let (code, v, _) = verify_json(&fixture("llama-gqa"), &x, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(v["logits"]["nonfinite_differ"].as_u64().unwrap() > 0, "{v}");

    let out = dir.path().join("out");
    let (code, o, err) = ckpt(&[
        "convert",
        x.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "llama",
        "--verify",
    ]);
    assert_eq!(code, 0, "{o}{err}");
    assert!(o.contains("verdict: equivalent"), "{o}");
    assert!(out.join("model.safetensors").exists());
}

/// Issue 16 item 3: `ckpt logits` with non-finite output warns with the count and exits 1; a
/// sequence that does not reach the +inf row is finite and exits 0.
#[test]
fn logits_with_non_finite_output_warn_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    with_inf_embedding(&x);
    let (code, out, err) = ckpt(&["logits", x.to_str().unwrap(), "--ids", "5,1,7"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("warning:") && err.contains("logits are not finite"),
        "{err}"
    );
    let (code, out, err) = ckpt(&["logits", x.to_str().unwrap(), "--ids", "5,6,7", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nonfinite"].as_u64(), Some(0));
}

/// A changed embedding row only shows in logits of inputs holding its token, so a fixed sample could
/// miss it and call the pair equivalent. The logits level also runs the tokens whose rows differ.
#[test]
fn a_changed_embedding_row_outside_the_sample_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("row");
    rewrite(
        &fixture("llama-gqa"),
        &x,
        |ts| {
            let t = tensor(ts, "model.embed_tokens.weight");
            let row = 250 * t.2[1] * 4;
            t.3[row..row + 4].copy_from_slice(&3.0f32.to_le_bytes());
        },
        |_| {},
    );
    for extra in [
        &[][..],
        &["--ids", "1,2,3"][..],
        &["--ids", "1,2,3", "--atol", "1e-3"][..],
    ] {
        let (code, v, err) = verify_json(&fixture("llama-gqa"), &x, extra);
        assert_eq!(code, 1, "{extra:?}: {v}\n{err}");
        assert_eq!(v["verdict"], "NOT equivalent", "{extra:?}");
        assert_eq!(v["logits"]["pass"], false, "{extra:?}: {v}");
        assert_eq!(v["embedding_rows"]["differing"].as_u64(), Some(1), "{v}");
        assert_eq!(v["embedding_rows"]["exercised"].as_u64(), Some(1), "{v}");
    }
    let (_, v, _) = verify_json(&fixture("llama-gqa"), &x, &["--ids", "1,2,3"]);
    assert_eq!(v["embedding_rows"]["added"].as_u64(), Some(1), "{v}");
    assert_eq!(v["logits"]["positions"].as_u64(), Some(6), "{v}");
}

/// A side no family reads cannot be compared at all: an error (exit 2), not a verdict, and the hint
/// names verify's own flags (`--family-b`), not another command's.
#[test]
fn a_side_no_family_reads_is_an_error_with_verify_flags() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("odd");
    rewrite(
        &fixture("llama-gqa"),
        &x,
        |ts| {
            for t in ts.iter_mut() {
                t.0 = format!("weird.{}", t.0.replace('.', "_"));
            }
        },
        |_| {},
    );
    let (code, out, err) = ckpt(&[
        "verify",
        fixture("llama-gqa").to_str().unwrap(),
        x.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("verdict"), "{out}");
    assert!(err.contains("--family-b FAMILY"), "{err}");
}

/// `safetensors.torch.save_model` keeps one name of each shared tensor, and for a tied LLaMA that
/// is `lm_head.weight`: no `model.embed_tokens.weight` is stored. transformers ties the embeddings
/// to it on load (measured: the same logits as the `save_pretrained` copy). ckpt reads it as the
/// same tied model: detected with every required tensor, the fixture's golden logits, equivalent
/// to the fixture, and converted to the `save_pretrained` form. Untied, the embeddings are missing.
#[test]
fn a_tied_model_stored_as_its_lm_head_is_the_tied_model() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("llama-tied");
    let head_only = t.path().join("head-only");
    let rename = |ts: &mut Tensors| {
        for e in ts.iter_mut() {
            if e.0 == "model.embed_tokens.weight" {
                e.0 = "lm_head.weight".into();
            }
        }
    };
    rewrite(&src, &head_only, rename, |_| {});
    std::fs::copy(
        src.join("expected.safetensors"),
        head_only.join("expected.safetensors"),
    )
    .unwrap();
    let p = head_only.to_str().unwrap();
    let (code, out, err) = ckpt(&["detect", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tied=true"), "{out}");
    let (ids, want) = common::golden(&src);
    let args: Vec<String> = ids
        .iter()
        .map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        .collect();
    let out_file = t.path().join("logits.safetensors");
    let mut cmd = vec!["logits", p, "-q", "--out", out_file.to_str().unwrap()];
    for a in &args {
        cmd.extend(["--ids", a.as_str()]);
    }
    let (code, _, err) = ckpt(&cmd);
    assert_eq!(code, 0, "{err}");
    let got = Checkpoint::open(&out_file).unwrap();
    let got: Vec<f32> = got
        .data(got.get("logits").unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        got.len() == want.len() && d <= 1e-4 * scale,
        "max |diff| {d}"
    );
    let (code, out, err) = ckpt(&["verify", src.to_str().unwrap(), p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: equivalent"), "{out}");
    let conv = t.path().join("converted");
    let (code, _, err) = ckpt(&["convert", p, conv.to_str().unwrap(), "--to", "llama"]);
    assert_eq!(code, 0, "{err}");
    let c = Checkpoint::open(conv.join("model.safetensors")).unwrap();
    assert!(c.get("model.embed_tokens.weight").is_some() && c.get("lm_head.weight").is_none());
    // Untied, the stored head is the output layer and the embeddings are missing.
    let untied = t.path().join("untied");
    rewrite(&src, &untied, rename, |c| {
        c["tie_word_embeddings"] = false.into()
    });
    let (code, _, err) = ckpt(&["logits", untied.to_str().unwrap(), "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model.embed_tokens.weight"), "{err}");
}
