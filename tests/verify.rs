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
    assert!(!out.contains("logits "), "{out}");
    let (code, out, _) = ckpt(&[
        "verify",
        fixture("llama-gqa").to_str().unwrap(),
        fixture("llama-gqa").to_str().unwrap(),
        "--skip-logits",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("equivalent"), "{out}");
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
    for fam in [
        "yi",
        "llama-meta",
        "phi3",
        "baichuan",
        "internlm2",
        "qwen2",
        "mistral",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let src = fixture(fam);
        let mut args = vec![
            "convert",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "--to",
            "llama",
            "--quiet",
        ];
        // Mistral's 4096-token window cannot be expressed in LLaMA: lossy, exact below the window
        // (the verify sequences are 16 tokens).
        if fam == "mistral" {
            args.push("--allow-lossy");
        }
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
