//! The reference forward pass in each family's own math against the golden logits of that family's
//! own transformers class (`fixtures/<look-alike>/expected.safetensors`, see fixtures/README.md),
//! on the default ISA and on `Isa::Scalar`; for each, LLaMA's math on the same weights is off
//! (so the switch matters); and the errors of a math that does not fit the checkpoint, of sizes
//! that overflow and of inputs too large to allocate.
//!
//! The `Math` of each fixture is built here by hand from its config.json; the family files
//! resolve the same values from the config in the end-to-end tests.

mod common;

use std::path::{Path, PathBuf};

use ckpt::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::kernels::{self, Isa};
use ckpt::mapping::View;
use ckpt::reference::math::{Activation, NormKind, NormPlacement, QkNorm, RopeLayout};
use ckpt::reference::{self, Logits, Math, Model, Outputs};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn expected(name: &str) -> (Vec<Vec<u32>>, Vec<f32>) {
    common::golden(&fixture(name))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The fixture's config.json as JSON (to build the math from, by hand).
fn config(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join("config.json")).unwrap()).unwrap()
}

fn usize_of(c: &serde_json::Value, key: &str) -> usize {
    c[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

/// LLaMA's math for the fixture's layers and head size.
fn llama_math(name: &str) -> Math {
    let c = config(name);
    let layers = usize_of(&c, "num_hidden_layers");
    let head_dim = c["head_dim"]
        .as_u64()
        .map(|h| h as usize)
        .unwrap_or(usize_of(&c, "hidden_size") / usize_of(&c, "num_attention_heads"));
    Math::llama(layers, head_dim)
}

/// Run `math` on the view on the default ISA and on scalar and compare with the golden logits
/// (the tolerance of tests/forward.rs: 1e-4 of the largest logit); then LLaMA's math on the same
/// view must be off by more than 0.1 (or refuse: it cannot find the tensors it needs).
fn check(name: &str, view: &View<'_>, math: Math) {
    let (batch, want) = expected(name);
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let model = Model::with_math(view, math.clone()).unwrap();
    for isa in [kernels::active_isa(), Isa::Scalar] {
        let got = reference::forward_with_math(view, math.clone(), &batch, isa)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((got.batch, got.seq, got.vocab), (2, 16, 256), "{name}");
        let err = max_abs_diff(&got.data, &want);
        println!(
            "{name:<15} {:<7} max abs error {err:.3e} (max |logit| {scale:.2})",
            isa.name()
        );
        assert!(
            err <= 1e-4 * scale,
            "{name} on {}: max abs error {err}",
            isa.name()
        );
        // the last positions alone: the same rows (post-norm, sandwich, parallel, NormHead,
        // soft-capping and windows all run past the last layer's attention)
        common::check_last_rows(name, &model, &batch, isa, &got, &want, 1e-4 * scale);
    }
    // the right math uses every tensor of the view
    assert_eq!(model.unused_tensors(), Vec::<&str>::new(), "{name}");
    let llama = llama_math(name);
    assert_ne!(math, llama, "{name}: the test must exercise a switch");
    match reference::forward_with_math(view, llama, &batch, Isa::Scalar) {
        Ok(l) => {
            let off = max_abs_diff(&l.data, &want);
            println!("{name:<15} llama math off by {off:.3}");
            assert!(off > 0.1, "{name}: LLaMA's math is off by only {off}");
        }
        Err(e) => {
            println!("{name:<15} llama math refused: {e}");
            assert!(e.tensor_name().is_some(), "{name}: {e}");
        }
    }
}

/// Open a fixture and check `math` through the identity view (LLaMA tensor names).
fn check_identity(name: &str, math: Math) {
    let ck = Checkpoint::open(fixture(name)).unwrap();
    let view = View::identity(&ck);
    check(name, &view, math);
}

#[test]
fn granite_multipliers() {
    let c = config("granite");
    assert_eq!(c["tie_word_embeddings"], true);
    let f = |k: &str| c[k].as_f64().unwrap() as f32;
    let math = Math {
        embedding_scale: f("embedding_multiplier"),
        residual_scale: f("residual_multiplier"),
        attention_scale: f("attention_multiplier"),
        logits_divisor: f("logits_scaling"),
        ..llama_math("granite")
    };
    assert_eq!(
        (
            math.embedding_scale,
            math.residual_scale,
            math.attention_scale,
            math.logits_divisor
        ),
        (12.0, 0.22, 0.05, 8.0)
    );
    check_identity("granite", math);
}

#[test]
fn helium_interleaved_rotary() {
    let math = Math {
        rope: RopeLayout::Interleaved,
        ..llama_math("helium")
    };
    check_identity("helium", math);
}

#[test]
fn smollm3_nope_layer() {
    let c = config("smollm3");
    let rope_layers: Vec<bool> = c["no_rope_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64() == Some(1))
        .collect();
    assert_eq!(rope_layers, [true, true, true, false]);
    let math = Math {
        rope_layers,
        ..llama_math("smollm3")
    };
    check_identity("smollm3", math);
}

#[test]
fn mistral_sliding_window_shorter_than_the_input() {
    let w = usize_of(&config("mistral-window"), "sliding_window");
    assert_eq!(w, 5);
    let math = Math {
        sliding_window: vec![Some(w); 2],
        ..llama_math("mistral-window")
    };
    check_identity("mistral-window", math.clone());
    // LLaMA's own path refuses the window rather than computing full attention
    let ck = Checkpoint::open(fixture("mistral-window")).unwrap();
    let view = View::identity(&ck);
    let (batch, _) = expected("mistral-window");
    let e = reference::forward(&view, &batch, Isa::Scalar).unwrap_err();
    assert!(e.to_string().contains("`sliding_window` is 5"), "{e}");
    // off by one in the window is visible: the inequality is i - w < j <= i
    for wrong in [4, 6] {
        let m = Math {
            sliding_window: vec![Some(wrong); 2],
            ..math.clone()
        };
        let (_, want) = expected("mistral-window");
        let got = reference::forward_with_math(&view, m, &batch, Isa::Scalar).unwrap();
        assert!(max_abs_diff(&got.data, &want) > 0.1, "window {wrong}");
    }
}

#[test]
fn qwen3_per_head_qk_norms() {
    let math = Math {
        qk_norm: QkNorm::PerHead,
        ..llama_math("qwen3")
    };
    check_identity("qwen3", math);
    // LLaMA's math runs but would ignore the q/k norms: they are reported as unused
    let ck = Checkpoint::open(fixture("qwen3")).unwrap();
    let view = View::identity(&ck);
    let model = Model::with_math(&view, llama_math("qwen3")).unwrap();
    let unused = model.unused_tensors();
    assert_eq!(unused.len(), 4, "{unused:?}");
    assert!(
        unused.iter().all(|n| n.ends_with("_norm.weight")),
        "{unused:?}"
    );
    assert!(unused.contains(&"model.layers.1.self_attn.k_norm.weight"));
}

#[test]
fn olmo2_post_norms_and_full_qk_norms() {
    let math = Math {
        placement: NormPlacement::Post,
        qk_norm: QkNorm::Full,
        ..llama_math("olmo2")
    };
    check_identity("olmo2", math);
}

#[test]
fn gemma_offset_norms_gelu_tanh_embedding_scale() {
    let c = config("gemma");
    assert_eq!(c["hidden_act"], "gelu_pytorch_tanh");
    let hidden = usize_of(&c, "hidden_size");
    let math = Math {
        norm_offset: 1.0,
        activation: Activation::parse(c["hidden_act"].as_str().unwrap()).unwrap(),
        embedding_scale: (hidden as f64).sqrt() as f32,
        ..llama_math("gemma")
    };
    assert_eq!(math.activation, Activation::GeluTanh);
    check_identity("gemma", math);
}

#[test]
fn gemma2_sandwich_norms_windows_and_softcaps() {
    let c = config("gemma2");
    let f = |k: &str| c[k].as_f64().unwrap();
    let window = usize_of(&c, "sliding_window");
    let sliding_window: Vec<Option<usize>> = c["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t == "sliding_attention").then_some(window))
        .collect();
    assert_eq!(sliding_window, [Some(6), None]);
    let math = Math {
        placement: NormPlacement::Sandwich,
        norm_offset: 1.0,
        activation: Activation::parse(c["hidden_activation"].as_str().unwrap()).unwrap(),
        embedding_scale: (f("hidden_size")).sqrt() as f32,
        attention_scale: f("query_pre_attn_scalar").powf(-0.5) as f32,
        attn_logit_softcap: Some(f("attn_logit_softcapping") as f32),
        final_logit_softcap: Some(f("final_logit_softcapping") as f32),
        sliding_window,
        ..llama_math("gemma2")
    };
    check_identity("gemma2", math.clone());
    // each of the new switches matters on its own
    let (batch, want) = expected("gemma2");
    let ck = Checkpoint::open(fixture("gemma2")).unwrap();
    let view = View::identity(&ck);
    let variants = [
        Math {
            attn_logit_softcap: None,
            ..math.clone()
        },
        Math {
            final_logit_softcap: None,
            ..math.clone()
        },
        Math {
            sliding_window: vec![None; 2],
            ..math.clone()
        },
        Math {
            placement: NormPlacement::Pre,
            ..math.clone()
        },
    ];
    for (i, m) in variants.into_iter().enumerate() {
        match reference::forward_with_math(&view, m, &batch, Isa::Scalar) {
            Ok(got) => assert!(max_abs_diff(&got.data, &want) > 0.1, "variant {i}"),
            Err(e) => assert!(e.tensor_name().is_some(), "variant {i}: {e}"),
        }
    }
}

#[test]
fn cohere_parallel_blocks_layernorm_interleaved_logit_scale() {
    let c = config("cohere");
    let scale = c["logit_scale"].as_f64().unwrap();
    let math = Math {
        placement: NormPlacement::Parallel,
        norm: NormKind::LayerNorm,
        rope: RopeLayout::Interleaved,
        logits_divisor: (1.0 / scale) as f32, // 1 / 0.0625 = 16: exact
        ..llama_math("cohere")
    };
    assert_eq!(math.logits_divisor, 16.0);
    check_identity("cohere", math.clone());
    let (batch, want) = expected("cohere");
    let ck = Checkpoint::open(fixture("cohere")).unwrap();
    let view = View::identity(&ck);
    // the parallel placement alone matters: pre-norm finds no post_attention_layernorm
    let e = Model::with_math(
        &view,
        Math {
            placement: NormPlacement::Pre,
            ..math.clone()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.0.post_attention_layernorm.weight")
    );
    for m in [
        Math {
            rope: RopeLayout::Half,
            ..math.clone()
        },
        Math {
            norm: NormKind::Rms,
            ..math.clone()
        },
    ] {
        let got = reference::forward_with_math(&view, m, &batch, Isa::Scalar).unwrap();
        assert!(max_abs_diff(&got.data, &want) > 0.1);
    }
}

#[test]
fn stablelm_layernorm_with_bias_and_partial_rotary() {
    let c = config("stablelm");
    let factor = c["rope_parameters"]["partial_rotary_factor"]
        .as_f64()
        .unwrap();
    let head_dim = 16;
    let math = Math {
        norm: NormKind::LayerNorm,
        norm_bias: true,
        rotary_dim: (head_dim as f64 * factor) as usize,
        ..llama_math("stablelm")
    };
    assert_eq!(math.rotary_dim, 8);
    check_identity("stablelm", math.clone());
    // each switch alone matters
    let (batch, want) = expected("stablelm");
    let ck = Checkpoint::open(fixture("stablelm")).unwrap();
    let view = View::identity(&ck);
    let whole = Math {
        rotary_dim: head_dim,
        ..math.clone()
    };
    let got = reference::forward_with_math(&view, whole, &batch, Isa::Scalar).unwrap();
    assert!(max_abs_diff(&got.data, &want) > 0.1);
    let no_bias = Math {
        norm_bias: false,
        ..math
    };
    let got = reference::forward_with_math(&view, no_bias, &batch, Isa::Scalar).unwrap();
    assert!(max_abs_diff(&got.data, &want) > 0.1);
}

#[test]
fn baichuan2_norm_head_through_the_baichuan_view() {
    let ck = Checkpoint::open(fixture("baichuan2")).unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let family = reg.get("baichuan").unwrap();
    let view = ckpt::mapping::canonical_view(&ck, family, &[]).unwrap();
    assert!(view.get("model.layers.0.self_attn.k_proj.weight").is_some());
    let math = Math {
        norm_head: true,
        ..llama_math("baichuan2")
    };
    check("baichuan2", &view, math);
}

#[test]
fn phi3_partial_rotary_through_the_phi3_view() {
    let c = config("phi3-partial");
    let factor = c["rope_parameters"]["partial_rotary_factor"]
        .as_f64()
        .unwrap();
    let ck = Checkpoint::open(fixture("phi3-partial")).unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let view = ckpt::mapping::canonical_view(&ck, reg.get("phi3").unwrap(), &[]).unwrap();
    let math = Math {
        // transformers: int(head_dim * partial_rotary_factor)
        rotary_dim: (16.0 * factor) as usize,
        ..llama_math("phi3-partial")
    };
    assert_eq!(math.rotary_dim, 8);
    check("phi3-partial", &view, math);
    // Through its family view, the forward pass takes the phi3 family's math (partial rotary from
    // the config), so it reproduces Phi3ForCausalLM without a hand-built Math.
    let (batch, want) = expected("phi3-partial");
    let got = reference::forward(&view, &batch, Isa::Scalar).unwrap();
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let err = got
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err <= 1e-4 * scale,
        "phi3-partial through its family: {err}"
    );
}

#[test]
fn qwen2_window_on_the_layers_its_layer_types_name() {
    let c = config("qwen2-window");
    assert_eq!(c["use_sliding_window"], true);
    let window = usize_of(&c, "sliding_window");
    let sliding_window: Vec<Option<usize>> = c["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t == "sliding_attention").then_some(window))
        .collect();
    assert_eq!(sliding_window, [None, Some(5)]);
    let ck = Checkpoint::open(fixture("qwen2-window")).unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let view = ckpt::mapping::canonical_view(&ck, reg.get("qwen2").unwrap(), &[]).unwrap();
    let math = Math {
        sliding_window: sliding_window.clone(),
        ..llama_math("qwen2-window")
    };
    check("qwen2-window", &view, math.clone());
    // the window on the wrong layer is visible
    let (batch, want) = expected("qwen2-window");
    let swapped = Math {
        sliding_window: sliding_window.into_iter().rev().collect(),
        ..math
    };
    let got = reference::forward_with_math(&view, swapped, &batch, Isa::Scalar).unwrap();
    assert!(max_abs_diff(&got.data, &want) > 0.1);
}

#[test]
fn mystery_is_llama_when_asserted() {
    let c = config("mystery");
    assert_eq!(c["model_type"], "mystery");
    let ck = Checkpoint::open(fixture("mystery")).unwrap();
    let view = View::identity(&ck);
    let (batch, want) = expected("mystery");
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for isa in [kernels::active_isa(), Isa::Scalar] {
        let got = reference::forward_with_math(&view, llama_math("mystery"), &batch, isa).unwrap();
        assert!(max_abs_diff(&got.data, &want) <= 1e-4 * scale, "{isa}");
        // `Model::new` is LLaMA's math
        let same = reference::forward(&view, &batch, isa).unwrap();
        assert_eq!(same, got, "{isa}");
    }
    assert!(Model::new(&view).unwrap().unused_tensors().is_empty());
    // A config that says tied beside a stored lm_head that differs from the embeddings: loaders
    // disagree on the logits (transformers 5 keeps the stored one, transformers 4 ties), so the
    // model is refused, naming the tensor.
    let dir = tempfile::tempdir().unwrap();
    copy_with_config("mystery", dir.path(), |c| {
        c["tie_word_embeddings"] = true.into()
    });
    let ck = Checkpoint::open(dir.path()).unwrap();
    let view = View::identity(&ck);
    let Err(e) = Model::new(&view) else {
        panic!("a differing stored lm_head is refused")
    };
    assert_eq!(e.tensor_name(), Some("lm_head.weight"));
    assert!(e.message().contains("transformers 5"), "{}", e.message());
    // Detection samples rows of the two and rules the family out, so `detect` does not call it
    // LLaMA and `convert` without `--verify` does not pass the ambiguity on to its output.
    let dir = tempfile::tempdir().unwrap();
    copy_with_config("mystery", dir.path(), |c| {
        c["tie_word_embeddings"] = true.into();
        c["model_type"] = "llama".into();
    });
    let p = dir.path().to_str().unwrap();
    let (code, out, _) = common::ckpt(&["detect", p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differs from the embeddings"), "{out}");
    let outside = tempfile::tempdir().unwrap();
    let dst = outside.path().join("out");
    let (code, _, err) = common::ckpt(&["convert", p, dst.to_str().unwrap(), "--to", "llama"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("differs from the embeddings"), "{err}");
    assert!(!dst.exists());
    // A stored copy of the embeddings means the same to every loader: it runs, and the copy is
    // reported as unused rather than dropped silently.
    let same = tempfile::tempdir().unwrap();
    copy_with_config("mystery", same.path(), |c| {
        c["tie_word_embeddings"] = true.into()
    });
    let mut owned = common::fixture_tensors("mystery");
    let emb = owned
        .iter()
        .find(|t| t.0 == "model.embed_tokens.weight")
        .unwrap()
        .2
        .clone();
    let head = owned.iter_mut().find(|t| t.0 == "lm_head.weight").unwrap();
    assert_ne!(
        head.2, emb,
        "the fixture's lm_head differs from its embeddings"
    );
    head.2 = emb;
    common::write_f32_safetensors(&same.path().join("model.safetensors"), &owned);
    let ck = Checkpoint::open(same.path()).unwrap();
    let view = View::identity(&ck);
    assert_eq!(
        Model::new(&view).unwrap().unused_tensors(),
        ["lm_head.weight"]
    );
}

#[test]
fn with_math_names_the_tensor_the_math_needs() {
    let ck = Checkpoint::open(fixture("olmo2")).unwrap();
    let view = View::identity(&ck);
    // pre-norm placement needs input_layernorm, which OLMo2 does not have
    let e = Model::with_math(&view, llama_math("olmo2")).unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.0.input_layernorm.weight"),
        "{e}"
    );
    assert!(e.path().is_some(), "{e}");
    // per-head q/k norms expect [head_dim]; OLMo2's cover the whole projection
    let per_head = Math {
        placement: NormPlacement::Post,
        qk_norm: QkNorm::PerHead,
        ..llama_math("olmo2")
    };
    let e = Model::with_math(&view, per_head).unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.0.self_attn.q_norm.weight"),
        "{e}"
    );
    assert!(
        e.to_string().contains("[64]") && e.to_string().contains("[16]"),
        "{e}"
    );
    // sandwich needs pre_feedforward_layernorm
    let sandwich = Math {
        placement: NormPlacement::Sandwich,
        ..llama_math("qwen3")
    };
    let ck3 = Checkpoint::open(fixture("qwen3")).unwrap();
    let v3 = View::identity(&ck3);
    let e = Model::with_math(&v3, sandwich).unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.0.pre_feedforward_layernorm.weight"),
        "{e}"
    );
    // LayerNorm biases that are not there
    let biased = Math {
        norm: NormKind::LayerNorm,
        norm_bias: true,
        ..llama_math("qwen3")
    };
    let e = Model::with_math(&v3, biased).unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.0.input_layernorm.bias"),
        "{e}"
    );
}

#[test]
fn with_math_refuses_a_math_that_does_not_fit_the_config() {
    let ck = Checkpoint::open(fixture("llama-gqa")).unwrap();
    let view = View::identity(&ck);
    let base = llama_math("llama-gqa");
    let cases: Vec<(Math, &str)> = vec![
        (Math::llama(3, 16), "the config has 2 layers"),
        (
            Math {
                rotary_dim: 18,
                ..base.clone()
            },
            "rotary dimension 18",
        ),
        (
            Math {
                rotary_dim: 7,
                ..base.clone()
            },
            "rotary dimension 7",
        ),
        (
            Math {
                sliding_window: vec![None, Some(0)],
                ..base.clone()
            },
            "layer 1 has a sliding window of 0",
        ),
        (
            Math {
                logits_divisor: 0.0,
                ..base.clone()
            },
            "logits divisor is 0",
        ),
        (
            Math {
                residual_scale: f32::NAN,
                ..base.clone()
            },
            "residual scale is NaN",
        ),
        (
            Math {
                final_logit_softcap: Some(0.0),
                ..base.clone()
            },
            "final logit soft-cap must be positive",
        ),
    ];
    for (math, want) in cases {
        let e = Model::with_math(&view, math).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
        assert!(e.path().is_some(), "{want}: {e}");
    }
    // LLaMA's math through with_math is Model::new
    let (batch, _) = expected("llama-gqa");
    let a = reference::forward_with_math(&view, base, &batch, Isa::Scalar).unwrap();
    let b = reference::forward(&view, &batch, Isa::Scalar).unwrap();
    assert_eq!(a, b);
}

#[test]
fn progress_variant_reports_every_layer() {
    let ck = Checkpoint::open(fixture("smollm3")).unwrap();
    let view = View::identity(&ck);
    let (batch, _) = expected("smollm3");
    let seen = std::sync::Mutex::new(Vec::new());
    let l: Logits = reference::forward_with_math_progress(
        &view,
        llama_math("smollm3"),
        &batch,
        Isa::Scalar,
        &|d, t| seen.lock().unwrap().push((d, t)),
    )
    .unwrap();
    assert_eq!(l.seq, 16);
    assert_eq!(*seen.lock().unwrap(), [(1, 4), (2, 4), (3, 4), (4, 4)]);
}

/// Copy a fixture's files into `dst`, rewriting the config with `edit`.
fn copy_with_config(name: &str, dst: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let cp = dst.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cp, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn overflowing_sizes_are_errors_not_panics() {
    // 2^62 heads of 4 dimensions: heads * head_dim wraps to 0 in a release build
    let dir = tempfile::tempdir().unwrap();
    copy_with_config("llama-gqa", dir.path(), |c| {
        c["num_attention_heads"] = (1u64 << 62).into();
        c["num_key_value_heads"] = (1u64 << 62).into();
        c["head_dim"] = 4.into();
    });
    let ck = Checkpoint::open(dir.path()).unwrap();
    let view = View::identity(&ck);
    let (batch, _) = expected("llama-gqa");
    let e = reference::forward(&view, &batch, Isa::Scalar).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::BadData, "{e}");
    assert!(e.to_string().contains("overflows"), "{e}");
    assert!(e.path().is_some(), "{e}");
    let e = Model::with_math(&view, Math::llama(2, 4)).unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
    // a config claiming 2^40 layers fails at the first missing layer, allocating nothing per layer
    let dir = tempfile::tempdir().unwrap();
    copy_with_config("llama-gqa", dir.path(), |c| {
        c["num_hidden_layers"] = (1u64 << 40).into()
    });
    let ck = Checkpoint::open(dir.path()).unwrap();
    let view = View::identity(&ck);
    let e = Model::new(&view).unwrap_err();
    assert_eq!(
        e.tensor_name(),
        Some("model.layers.2.input_layernorm.weight"),
        "{e}"
    );
}

#[test]
fn activations_above_the_limit_are_refused_before_allocating() {
    // 40,000 ids with a 10^6 vocabulary: 160 GB of logits alone
    let dims = ckpt::synth::Dims {
        hidden: 2,
        layers: 1,
        heads: 1,
        kv_heads: 1,
        intermediate: 2,
        vocab: 1_000_000,
        tied: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let specs = ckpt::synth::llama_tensors(&dims, Dtype::BF16, false);
    let cfg = dims.config_json("llama", "LlamaForCausalLM", "bfloat16");
    ckpt::synth::write_checkpoint(dir.path(), Some(&cfg), &specs, 1, ckpt::synth::Fill::Sparse)
        .unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let view = View::identity(&ck);
    let batch = vec![vec![7u32; 40_000]];
    let e = reference::forward(&view, &batch, Isa::Scalar).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Usage, "{e}");
    assert!(
        e.to_string().contains("40000 tokens") && e.to_string().contains("16.0 GiB"),
        "{e}"
    );
    assert!(e.hint_text().is_some(), "{e}");
    // a small input on the same model runs
    let ok = reference::forward(&view, &[vec![7u32; 3]], Isa::Scalar).unwrap();
    assert_eq!(ok.data.len(), 3 * 1_000_000);
    // sizes whose byte count overflows are refused the same way
    let model = Model::new(&view).unwrap();
    assert_eq!(model.activation_bytes(usize::MAX, 2), None);
    let e = model.check_input_size(usize::MAX, 2).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Usage, "{e}");
    let e = model.check_input_size(1, 1 << 40).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Usage, "{e}");
    model.check_input_size(1, 16).unwrap();
    let want = 4 * (16 * (3 * 2 + 2 * 2 + 2 * 2 + 2 * 2 + 1_000_000) as u64);
    assert!(model.activation_bytes(1, 16).unwrap() >= want);
    // Logits of the last position only: one row of the vocabulary instead of one per token, so an
    // input refused for every position's logits (20 GB of them) runs, and gives one row.
    let last = Outputs::Last;
    assert_eq!(
        model.activation_bytes(1, 16).unwrap() - model.activation_bytes_for(1, 16, last).unwrap(),
        4 * 15 * 1_000_000
    );
    let long = vec![vec![7u32; 5_000]];
    let e = model.check_input_size(1, 5_000).unwrap_err();
    assert!(e.to_string().contains("5000 tokens"), "{e}");
    model.check_input_size_for(1, 5_000, last).unwrap();
    let l = model
        .forward_outputs(&long, kernels::best_isa(), last, &|_, _| {})
        .unwrap();
    assert_eq!((l.seq, l.data.len()), (5_000, 1_000_000));
    assert!(l.row(0, 4_999).iter().all(|x| x.is_finite()));
}

/// Every fixture through its detected family and the family's resolved math (`view.math`, as
/// `ckpt logits` and `verify` run it): the golden logits of the fixture's own transformers class,
/// or a refusal with a reason; never other logits.
#[test]
fn every_fixture_in_its_detected_familys_math_is_right_or_refused() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let (mut right, mut refused) = (Vec::new(), Vec::new());
    for case in manifest.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (batch, want) = expected(name);
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let ck = Checkpoint::open(fixture(name)).unwrap();
        let view = match ckpt::detect::open_view(&ck, &reg, None, &[]) {
            Ok((view, _)) => view,
            Err(e) => {
                println!("{name:<16} refused at detection: {e}");
                refused.push(name);
                continue;
            }
        };
        for isa in [kernels::active_isa(), Isa::Scalar] {
            match reference::forward(&view, &batch, isa) {
                Ok(got) => {
                    let err = max_abs_diff(&got.data, &want);
                    println!(
                        "{name:<16} {:<10} {isa:<7} max abs error {err:.3e}",
                        view.family
                    );
                    assert!(
                        err <= 1e-4 * scale,
                        "{name} through `{}` on {isa}: wrong logits (max abs error {err})",
                        view.family
                    );
                    if isa == Isa::Scalar {
                        right.push(name);
                    }
                }
                Err(e) => {
                    println!("{name:<16} refused by the forward pass: {e}");
                    assert!(!e.to_string().is_empty());
                    refused.push(name);
                    break;
                }
            }
        }
    }
    println!("right: {right:?}\nrefused: {refused:?}");
    // the look-alikes the family files model are computed, not merely refused
    for name in [
        "granite",
        "helium",
        "smollm3",
        "mistral-window",
        "qwen3",
        "olmo2",
        "gemma",
        "baichuan2",
        "phi3-partial",
        "qwen2-window",
        "stablelm",
        "stablelm-qk-parallel",
        "gemma2",
        "cohere",
        "cohere-qk",
    ] {
        assert!(right.contains(&name), "{name} was refused");
    }
}
