//! Detection: every fixture family named correctly; real-shaped sparse layouts (headers only);
//! quantised and adapter checkpoints named as such; and the `ckpt detect` / `ckpt families` CLI.

use ckpt::Checkpoint;
use ckpt::detect::{CheckpointKind, detect};
use ckpt::mapping::Registry;

mod common;
use common::ckpt as ckpt_cmd;

fn fixture(name: &str) -> Checkpoint {
    Checkpoint::open(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_fixture_is_detected() {
    let reg = Registry::builtin().unwrap();
    for &(case, fam) in common::FIXTURE_FAMILIES {
        let d = detect(&fixture(case), &reg);
        assert_eq!(d.kind, CheckpointKind::Plain, "{case}");
        assert_eq!(d.winner.as_deref(), Some(fam), "{case}: {:#?}", d.evidence);
        eprintln!("{case}: {:?} {:?}", d.evidence, d.dims);
    }
}

use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{Dims, Fill, Spec, llama_tensors, rename, write_checkpoint};

/// Write a sparse (headers-only) checkpoint in a temp dir and detect it.
fn detect_synth(
    specs: &[Spec],
    config: Option<serde_json::Value>,
) -> (tempfile::TempDir, ckpt::detect::Detection) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), config.as_ref(), specs, 3, Fill::Sparse).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let d = detect(&ck, &Registry::builtin().unwrap());
    (dir, d)
}

#[test]
fn yi_34b_with_ln1_ln2() {
    let d = Dims::YI_34B;
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    rename(&mut specs, ".input_layernorm.", ".ln1.");
    rename(&mut specs, ".post_attention_layernorm.", ".ln2.");
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("Yi", "YiForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("yi"), "{:?}", det.evidence);
    assert_eq!(det.exact, Some(true));
    assert!(
        det.evidence[0].starts_with("yi: 543/543 tensors match"),
        "{:?}",
        det.evidence
    );
    assert!(
        det.evidence[0].contains("config model_type=Yi"),
        "{:?}",
        det.evidence
    );
    assert!(
        det.evidence
            .iter()
            .any(|e| e == "differs from llama in 2 names: ln1, ln2"),
        "{:?}",
        det.evidence
    );
    assert_eq!(det.dims.layers, Some(60));
    assert_eq!(det.dims.kv_heads, Some(8));
    assert!(
        det.convert_command
            .as_deref()
            .unwrap()
            .ends_with(" OUT --to llama")
    );
    // The same names under a llama config (the renamed Yi of 2024) is llama: config decides.
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    specs.truncate(specs.len());
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("llama", "LlamaForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("llama"));
    assert!(det.config_decided);
    assert!(
        det.evidence
            .iter()
            .any(|e| e.contains("names alone cannot tell llama from mistral")),
        "{:?}",
        det.evidence
    );
}

#[test]
fn llama3_8b_with_and_without_config() {
    let d = Dims::LLAMA3_8B;
    let specs = llama_tensors(&d, Dtype::BF16, false);
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("llama", "LlamaForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("llama"));
    assert_eq!(det.dims.vocab, Some(128256));
    // No config: names cannot decide, the report says so; dims come from shapes.
    let (_t, det) = detect_synth(&specs, None);
    assert_eq!(det.winner.as_deref(), Some("llama"), "{:?}", det.evidence);
    assert!(
        det.evidence
            .iter()
            .any(|e| e.contains("the config does not say: assuming llama")),
        "{:?}",
        det.evidence
    );
    let x = &det.dims;
    assert_eq!(
        (x.vocab, x.hidden, x.layers, x.intermediate),
        (Some(128256), Some(4096), Some(32), Some(14336))
    );
    assert_eq!(x.k_rows, Some(1024));
    assert_eq!(x.heads, None, "head count is never guessed from shapes");
    for f in ["vocab", "hidden", "layers", "intermediate"] {
        assert!(x.from_shapes.contains(&f), "{f}");
    }
    // Mistral config on the same names: mistral.
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("mistral", "MistralForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("mistral"));
    assert!(det.config_decided);
}

#[test]
fn qwen2_05b_biases_and_tied() {
    let d = Dims::QWEN2_05B;
    let specs = llama_tensors(&d, Dtype::BF16, true);
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("qwen2", "Qwen2ForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("qwen2"), "{:?}", det.evidence);
    assert_eq!(det.dims.tied, Some(true));
    // Without a config the q/k/v biases still point at qwen2.
    let (_t, det) = detect_synth(&specs, None);
    assert_eq!(det.winner.as_deref(), Some("qwen2"), "{:?}", det.evidence);
}

#[test]
fn phi3_mini_fused() {
    let d = Dims::PHI3_MINI;
    let (h, hd) = (d.hidden, d.head_dim());
    let mut specs: Vec<Spec> = Vec::new();
    for s in llama_tensors(&d, Dtype::BF16, false) {
        if s.0.contains(".q_proj.") {
            specs.push((
                s.0.replace("q_proj", "qkv_proj"),
                s.1,
                vec![(d.heads + 2 * d.kv_heads) * hd, h],
            ));
        } else if s.0.contains(".gate_proj.") {
            specs.push((
                s.0.replace("gate_proj", "gate_up_proj"),
                s.1,
                vec![2 * d.intermediate, h],
            ));
        } else if !s.0.contains(".k_proj.")
            && !s.0.contains(".v_proj.")
            && !s.0.contains(".up_proj.")
        {
            specs.push(s);
        }
    }
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("phi3", "Phi3ForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("phi3"), "{:?}", det.evidence);
    assert!(
        det.evidence
            .iter()
            .any(|e| e.contains("qkv_proj, gate_up_proj")),
        "{:?}",
        det.evidence
    );
    let (_t, det) = detect_synth(&specs, None);
    assert_eq!(det.winner.as_deref(), Some("phi3"), "{:?}", det.evidence);
}

#[test]
fn mixtral_8x7b_experts() {
    let d = Dims::MIXTRAL_8X7B;
    let mut specs: Vec<Spec> = llama_tensors(&d, Dtype::BF16, false)
        .into_iter()
        .filter(|s| !s.0.contains(".mlp."))
        .collect();
    for i in 0..d.layers {
        let p = format!("model.layers.{i}.block_sparse_moe");
        specs.push((format!("{p}.gate.weight"), Dtype::BF16, vec![8, d.hidden]));
        for e in 0..8 {
            specs.push((
                format!("{p}.experts.{e}.w1.weight"),
                Dtype::BF16,
                vec![d.intermediate, d.hidden],
            ));
            specs.push((
                format!("{p}.experts.{e}.w2.weight"),
                Dtype::BF16,
                vec![d.hidden, d.intermediate],
            ));
            specs.push((
                format!("{p}.experts.{e}.w3.weight"),
                Dtype::BF16,
                vec![d.intermediate, d.hidden],
            ));
        }
    }
    for cfg in [
        Some(d.config_json("mixtral", "MixtralForCausalLM", "bfloat16")),
        None,
    ] {
        let (_t, det) = detect_synth(&specs, cfg);
        assert_eq!(det.winner.as_deref(), Some("mixtral"), "{:?}", det.evidence);
        assert_eq!(det.exact, Some(false));
        assert!(det.convert_command.is_none());
    }
}

#[test]
fn quantised_and_adapter_checkpoints_are_named() {
    let d = Dims::TINYLLAMA;
    // GPTQ: qweight / qzeros / scales / g_idx instead of weight for the projections.
    let mut specs: Vec<Spec> = Vec::new();
    for s in llama_tensors(&d, Dtype::F16, false) {
        if s.0.contains("_proj.weight") {
            let b = s.0.trim_end_matches(".weight").to_string();
            specs.push((format!("{b}.qweight"), Dtype::I32, vec![s.2[1] / 8, s.2[0]]));
            specs.push((
                format!("{b}.qzeros"),
                Dtype::I32,
                vec![s.2[1] / 128, s.2[0] / 8],
            ));
            specs.push((
                format!("{b}.scales"),
                Dtype::F16,
                vec![s.2[1] / 128, s.2[0]],
            ));
            specs.push((format!("{b}.g_idx"), Dtype::I32, vec![s.2[1]]));
        } else {
            specs.push(s);
        }
    }
    let (_t, det) = detect_synth(
        &specs,
        Some(d.config_json("llama", "LlamaForCausalLM", "float16")),
    );
    assert!(
        matches!(&det.kind, CheckpointKind::Quantized(m) if m.starts_with("GPTQ")),
        "{:?}",
        det.kind
    );
    assert_eq!(det.winner, None);
    assert!(
        det.evidence
            .iter()
            .any(|e| e.contains("underlying model looks like llama")),
        "{:?}",
        det.evidence
    );
    // FP8 with weight_scale.
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    let extra: Vec<Spec> = specs
        .iter()
        .filter(|s| s.0.contains("_proj.weight"))
        .map(|s| (format!("{}_scale", s.0), Dtype::F32, vec![1]))
        .collect();
    specs.extend(extra);
    let (_t, det) = detect_synth(&specs, None);
    assert!(
        matches!(&det.kind, CheckpointKind::Quantized(m) if m.contains("FP8")),
        "{:?}",
        det.kind
    );
    // LoRA adapter.
    let specs: Vec<Spec> = (0..d.layers)
        .flat_map(|i| {
            let p = format!("base_model.model.model.layers.{i}.self_attn.q_proj");
            vec![
                (format!("{p}.lora_A.weight"), Dtype::F32, vec![8, d.hidden]),
                (format!("{p}.lora_B.weight"), Dtype::F32, vec![d.hidden, 8]),
            ]
        })
        .collect();
    let (_t, det) = detect_synth(&specs, None);
    assert_eq!(det.kind, CheckpointKind::Adapter("LoRA".into()));
    assert_eq!(det.winner, None);
    // A PEFT-prefixed full save: named, with the --rename that fixes it.
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    for s in specs.iter_mut() {
        s.0 = format!("base_model.model.{}", s.0);
    }
    let (_t, det) = detect_synth(&specs, None);
    assert!(
        matches!(&det.kind, CheckpointKind::Adapter(m) if m.starts_with("PEFT")),
        "{:?}",
        det.kind
    );
    assert!(det.evidence[0].contains("--rename"), "{:?}", det.evidence);
}

#[test]
fn open_view_detects_or_refuses() {
    let reg = Registry::builtin().unwrap();
    let ck = fixture("yi");
    let (v, fam) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
    assert_eq!(fam, "yi");
    assert!(v.get("model.layers.0.input_layernorm.weight").is_some());
    let g = fixture("gpt2");
    let e = ckpt::detect::open_view(&g, &reg, None, &[]).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Unsupported);
    let e = ckpt::detect::open_view(&ck, &reg, Some("nope"), &[]).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Usage);
    // an explicit family that does not fit: an error naming the tensor
    let e = ckpt::detect::open_view(&ck, &reg, Some("internlm2"), &[]).unwrap_err();
    assert!(
        e.to_string().contains("no rule of family `internlm2`"),
        "{e}"
    );
}

// ------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

#[test]
fn cli_detect_text() {
    let yi = format!("{FIX}/yi");
    let (code, out, err) = ckpt_cmd(&["detect", &yi]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("family      yi  (LLaMA-exact)"), "{out}");
    assert!(
        out.contains(
            "evidence    yi: 21/21 tensors match; 20/20 required present; config model_type=Yi"
        ),
        "{out}"
    );
    assert!(
        out.contains("differs from llama in 2 names: ln1, ln2"),
        "{out}"
    );
    assert!(out.contains("runners-up  "), "{out}");
    assert!(out.contains("dims        vocab=256 hidden=64 layers=2 heads=4 kv_heads=2 head_dim=16 intermediate=96 tied=false"), "{out}");
    assert!(
        out.contains(&format!("convert     ckpt convert {yi} OUT --to llama")),
        "{out}"
    );
    let (code, out, _) = ckpt_cmd(&["detect", &format!("{FIX}/gpt2")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("gpt2  (not LLaMA-exact)") && out.contains("not convertible"),
        "{out}"
    );
    let (code, out, _) = ckpt_cmd(&["detect", &format!("{FIX}/mistral")]);
    assert_eq!(code, 0);
    assert!(out.contains("config model_type=mistral decides"), "{out}");
}

#[test]
fn cli_detect_json_and_exit_codes() {
    let (code, out, _) = ckpt_cmd(&["detect", "--json", &format!("{FIX}/llama-meta")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checkpoint"]["family"], "llama-meta");
    assert_eq!(v["kind"], "plain");
    assert_eq!(v["llama_exact"], true);
    assert_eq!(v["dims"]["intermediate"], 96);
    assert_eq!(v["ranked"][0]["matched"], 21);
    assert!(v["convert"].as_str().unwrap().contains("--to llama"));
    // nothing fits: exit 1
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<Spec> = vec![("encoder.block.0.weight".into(), Dtype::F32, vec![4, 4])];
    write_checkpoint(dir.path(), None, &specs, 1, Fill::Sparse).unwrap();
    let (code, out, _) = ckpt_cmd(&["detect", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("family      none detected"), "{out}");
    let (code, out, _) = ckpt_cmd(&["detect", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["checkpoint"]["family"].is_null());
    // errors: exit 2 naming the file
    let (code, _, err) = ckpt_cmd(&["detect", "/nonexistent/model"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/model"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nsurprise = 1\n").unwrap();
    let (code, _, err) = ckpt_cmd(&[
        "detect",
        &format!("{FIX}/yi"),
        "--mapping",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml") && err.contains("surprise"),
        "{err}"
    );
    let (code, _, err) = ckpt_cmd(&["detect", &format!("{FIX}/yi"), "--rename", "(a=$2"]);
    assert_eq!(code, 2);
    assert!(err.contains("error[usage]"), "{err}");
}

#[test]
fn cli_detect_with_rename_and_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dims::TINYLLAMA;
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    for s in specs.iter_mut() {
        s.0 = format!("base_model.model.{}", s.0);
    }
    let ck = dir.path().join("ck");
    write_checkpoint(
        &ck,
        Some(&d.config_json("llama", "LlamaForCausalLM", "bfloat16")),
        &specs,
        1,
        Fill::Sparse,
    )
    .unwrap();
    let (code, out, _) = ckpt_cmd(&["detect", ck.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("adapter (PEFT-prefixed"), "{out}");
    let (code, out, _) = ckpt_cmd(&[
        "detect",
        ck.to_str().unwrap(),
        "--rename",
        r"base_model\.model\.(.*)=$1",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      llama  (LLaMA-exact)"), "{out}");
    // a custom family from a file wins on its own names
    let m = dir.path().join("odd.toml");
    std::fs::write(
        &m,
        "name = \"odd\"\nsummary = \"llama with odd norms\"\nbase = \"llama\"\nexact = true\nsources = [\"test\"]\n[config]\nmodel_type = \"odd\"\n[tensors]\n\"model.layers.{i}.n1.weight\" = \"model.layers.{i}.input_layernorm.weight\"\n",
    )
    .unwrap();
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    rename(&mut specs, ".input_layernorm.", ".n1.");
    let ck2 = dir.path().join("ck2");
    write_checkpoint(&ck2, None, &specs, 1, Fill::Sparse).unwrap();
    let (code, out, _) = ckpt_cmd(&[
        "detect",
        ck2.to_str().unwrap(),
        "--mapping",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      odd  (LLaMA-exact)"), "{out}");
    assert!(out.contains("differs from llama in 1 name: n1"), "{out}");
}

#[test]
fn cli_families() {
    let (code, out, _) = ckpt_cmd(&["families"]);
    assert_eq!(code, 0);
    for f in [
        "llama",
        "yi",
        "llama-meta",
        "mistral",
        "qwen2",
        "phi3",
        "baichuan",
        "internlm2",
        "gemma",
        "mixtral",
        "gpt2",
        "gpt-neox",
        "falcon",
        "llama-gguf",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{f} "))),
            "{f}: {out}"
        );
    }
    assert!(out.contains("detect only"));
    assert!(
        out.contains("source: huggingface.co/01-ai/Yi-34B/discussions/11"),
        "{out}"
    );
    let (code, out, _) = ckpt_cmd(&["families", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v["families"].as_array().unwrap();
    assert_eq!(arr.len(), ckpt::mapping::family::BUILTIN.len());
    let yi = arr.iter().find(|f| f["name"] == "yi").unwrap();
    assert_eq!(yi["llama_exact"], true);
    let gemma = arr.iter().find(|f| f["name"] == "gemma").unwrap();
    assert_eq!(gemma["llama_exact"], false);
    assert!(gemma["note"].as_str().unwrap().contains("1 + weight"));
    assert!(
        arr.iter()
            .all(|f| !f["sources"].as_array().unwrap().is_empty())
    );
}

/// Regression: a LLaMA checkpoint whose config disagrees with its k/v shapes was reported as `gemma`
/// (a detect-only family with the same names escaped the shape penalty). The conflict belongs to the
/// checkpoint: no family fits, llama is the closest, and the evidence names the tensor.
#[test]
fn shape_conflict_with_config_does_not_pick_a_look_alike_family() {
    let d = Dims {
        hidden: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        intermediate: 96,
        vocab: 256,
        tied: false,
    };
    let mut cfg = d.config_json("llama", "LlamaForCausalLM", "float32");
    cfg["num_key_value_heads"] = 3.into();
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(
        dir.path(),
        Some(&cfg),
        &llama_tensors(&d, Dtype::F32, false),
        1,
        Fill::Sparse,
    )
    .unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let det = detect(&ck, &Registry::builtin().unwrap());
    assert_ne!(det.winner.as_deref(), Some("gemma"));
    assert_eq!(
        det.ranked[0].family,
        "llama",
        "{:?}",
        det.ranked.iter().map(|r| &r.family).collect::<Vec<_>>()
    );
    assert!(
        det.evidence.join(" ").contains("k_proj"),
        "{:?}",
        det.evidence
    );
}

/// A checkpoint with a family's names but without every tensor its computation needs is named,
/// said to be incomplete, offered no conversion, and not "detected" (exit 1).
#[test]
fn incomplete_checkpoint_is_named_but_not_detected() {
    let d = Dims::YI_34B;
    let mut specs = llama_tensors(&d, Dtype::BF16, false);
    rename(&mut specs, ".input_layernorm.", ".ln1.");
    rename(&mut specs, ".post_attention_layernorm.", ".ln2.");
    specs.retain(|s| s.0 != "model.layers.3.ln2.weight");
    let (t, det) = detect_synth(
        &specs,
        Some(d.config_json("Yi", "YiForCausalLM", "bfloat16")),
    );
    assert_eq!(det.winner.as_deref(), Some("yi"), "{:?}", det.evidence);
    assert_eq!(det.missing_required, 1);
    assert!(det.convert_command.is_none());
    assert!(
        det.evidence.iter().any(|e| e
            .starts_with("incomplete: 1 required tensor missing (e.g. model.layers.3.ln2.weight)")),
        "{:?}",
        det.evidence
    );
    let path = t.path().to_str().unwrap();
    let (code, out, _) = ckpt_cmd(&["detect", path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(LLaMA-exact, but incomplete: see evidence)"),
        "{out}"
    );
    assert!(!out.contains("ckpt convert"), "{out}");
    let (code, out, _) = ckpt_cmd(&["detect", "--json", path]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["convert"].is_null(), "{out}");
    // the same names complete: detected, with the command
    let mut full = llama_tensors(&d, Dtype::BF16, false);
    rename(&mut full, ".input_layernorm.", ".ln1.");
    rename(&mut full, ".post_attention_layernorm.", ".ln2.");
    let (t2, det) = detect_synth(
        &full,
        Some(d.config_json("Yi", "YiForCausalLM", "bfloat16")),
    );
    assert_eq!(det.missing_required, 0);
    let (code, out, _) = ckpt_cmd(&["detect", t2.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ckpt convert"), "{out}");
}

/// transformers dispatches on `model_type`: a config with `model_type` of a user family (whose
/// names are LLaMA's, gate and up swapped) and the `LlamaForCausalLM` architecture a conversion
/// kept is that family, not llama because `architectures` also matches (which printed "config
/// model_type=swapgu decides" above a llama verdict).
/// A user family `name` claiming `model_type` with LLaMA's names but gate and up swapped (its
/// mapping file), and a sparse TinyLlama-shaped checkpoint whose config says that `model_type`
/// with the `LlamaForCausalLM` architecture, both under `dir`.
fn swapped_family(
    dir: &std::path::Path,
    name: &str,
    model_type: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = Dims::TINYLLAMA;
    let m = dir.join(format!("{name}.toml"));
    std::fs::write(
        &m,
        format!(
            "name = \"{name}\"\nsummary = \"gate and up swapped\"\nbase = \"llama\"\nexact = true\nsources = [\"test\"]\n[config]\nmodel_type = \"{model_type}\"\n[tensors]\n\"model.layers.{{i}}.mlp.gate_proj.weight\" = \"model.layers.{{i}}.mlp.up_proj.weight\"\n\"model.layers.{{i}}.mlp.up_proj.weight\" = \"model.layers.{{i}}.mlp.gate_proj.weight\"\n"
        ),
    )
    .unwrap();
    let ck = dir.join("ck");
    write_checkpoint(
        &ck,
        Some(&d.config_json(model_type, "LlamaForCausalLM", "bfloat16")),
        &llama_tensors(&d, Dtype::BF16, false),
        1,
        Fill::Sparse,
    )
    .unwrap();
    (m, ck)
}

#[test]
fn model_type_decides_over_architectures() {
    let dir = tempfile::tempdir().unwrap();
    let (m, ck) = swapped_family(dir.path(), "swapgu", "swapgu");
    let (code, out, _) = ckpt_cmd(&[
        "detect",
        ck.to_str().unwrap(),
        "--mapping",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      swapgu  (LLaMA-exact)"), "{out}");
    assert!(!out.contains("already LLaMA"), "{out}");
}

/// A user family that claims llama's `model_type` and names but maps gate and up the other way
/// computes something else on the same file: names and config cannot tell it from llama, so
/// nothing is detected (llama was chosen by order, "config model_type=llama decides").
#[test]
fn a_family_reading_the_same_names_differently_is_not_told_apart_by_order() {
    let dir = tempfile::tempdir().unwrap();
    let (m, ck) = swapped_family(dir.path(), "clash", "llama");
    let (code, out, _) = ckpt_cmd(&[
        "detect",
        ck.to_str().unwrap(),
        "--mapping",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("family      none detected"), "{out}");
    assert!(out.contains("cannot tell llama from clash"), "{out}");
    // without the file it is llama
    let (code, out, _) = ckpt_cmd(&["detect", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      llama  (LLaMA-exact)"), "{out}");
}

/// A checkpoint whose every name carries a wrapper's prefix (`DistributedDataParallel` saves
/// `module.model.layers...`) fits no family as it is; the error says which `--rename` removes the
/// prefix, and that rename then reads it.
#[test]
fn a_shared_wrapper_prefix_is_named_with_the_rename_that_removes_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ddp");
    std::fs::create_dir_all(&d).unwrap();
    let tensors: Vec<_> = common::fixture_tensors("llama-gqa")
        .into_iter()
        .map(|(n, s, b)| (format!("module.{n}"), s, b))
        .collect();
    common::write_f32_safetensors(&d.join("model.safetensors"), &tensors);
    std::fs::copy(
        common::fixture("llama-gqa").join("config.json"),
        d.join("config.json"),
    )
    .unwrap();
    let p = d.to_str().unwrap();
    let (code, _, err) = common::ckpt(&["logits", p, "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--rename 'module[.](.*)=$1'"), "{err}");
    // `detect` says it in its evidence.
    let (code, out, _) = common::ckpt(&["detect", p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("without it the names fit llama: --rename 'module[.](.*)=$1'"),
        "{out}"
    );
    let (code, out, err) = common::ckpt(&["detect", p, "--rename", "module[.](.*)=$1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("llama"), "{out}");
}
