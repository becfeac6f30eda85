//! A family is its math, not only its names (issue "every verdict is true"): config keys a family
//! does not model, model types no family claims, look-alikes that names and config cannot tell
//! apart, and conversions that lose or rescale behaviour. Each case is either computed right or
//! refused with its reason; none may exit 0 with the wrong answer.

mod common;

use std::path::{Path, PathBuf};

use common::{ckpt, fixture};

/// Copy a fixture into `dir/name` and edit its config with `edit`.
fn variant(dir: &Path, from: &str, name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(from)).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    let p = dst.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    dst
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ckpt convert SRC DST ARGS...` is refused (exit 2) with every one of `wants` in its message,
/// and nothing is written at `DST`.
fn convert_refused(src: &Path, dst: &Path, args: &[&str], wants: &[&str]) {
    let mut cmd = vec!["convert", s(src), s(dst)];
    cmd.extend_from_slice(args);
    let (code, _, err) = ckpt(&cmd);
    assert_eq!(code, 2, "{cmd:?}: {err}");
    for w in wants {
        assert!(err.contains(w), "{cmd:?}: no `{w}` in {err}");
    }
    assert!(!dst.exists(), "{cmd:?} wrote {}", dst.display());
}

/// Granite's multipliers left in a config that says `llama`: LlamaForCausalLM would ignore them and
/// compute something else. Every command that relies on the math refuses and names the key; the
/// user can assert the family; `check` reports it.
#[test]
fn regression_unmodelled_multiplier_is_refused_not_assumed() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "llama-gqa", "granite-as-llama", |c| {
        c["embedding_multiplier"] = serde_json::json!(12.0);
        c["logits_scaling"] = serde_json::json!(8.0);
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`embedding_multiplier` = 12.0"), "{out}");
    assert!(!out.contains("(LLaMA-exact)"), "{out}");

    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("embedding_multiplier") && err.contains("logits_scaling"),
        "{err}"
    );

    let out_dir = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&ck), s(&out_dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("embedding_multiplier") && err.contains("--from llama"),
        "{err}"
    );
    assert!(!out_dir.exists());

    let (code, out, _) = ckpt(&["check", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("C011-unmodelled-key") && out.contains("logits_scaling"),
        "{out}"
    );

    // Asserting the family runs LLaMA's math, on the user's word, and says what was ignored.
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3", "--family", "llama"]);
    assert_eq!(code, 0, "{err}");
}

/// Keys that cannot change the computation (ids, dropout, generation defaults) or that switch
/// nothing on (`null`, `false`) are not reported.
#[test]
fn neutral_and_switched_off_keys_are_not_unmodelled() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "llama-gqa", "neutral", |c| {
        c["hidden_dropout"] = serde_json::json!(0.1);
        c["sep_token_id"] = serde_json::json!(3);
        c["temperature"] = serde_json::json!(0.7);
        c["use_sliding_window"] = serde_json::json!(false);
        c["no_rope_layers"] = serde_json::Value::Null;
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      llama  (LLaMA-exact)"), "{out}");
    let (code, out, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ckpt(&["check", s(&ck)]);
    assert!(!out.contains("C011"), "{code} {out}");
}

/// An unknown `model_type` is never silently LLaMA, even when the names and `architectures` fit.
#[test]
fn regression_unknown_model_type_is_not_llama() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "llama-gqa", "mystery", |c| {
        c["model_type"] = serde_json::json!("mystery");
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("family      none detected"), "{out}");
    assert!(
        out.contains("model_type=mystery, which no known family claims"),
        "{out}"
    );
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mystery"), "{err}");
    let out_dir = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&ck), s(&out_dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(!out_dir.exists());
    // Asserted, it converts (as LLaMA, exactly) and verifies.
    let (code, out, err) = ckpt(&["convert", s(&ck), s(&out_dir), "--from", "llama", "-q"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Baichuan-7B, Baichuan2 (NormHead) and Baichuan-13B (ALiBi) share names and model_type; only the
/// remote code they ship tells them apart. Without it nothing is chosen.
#[test]
fn baichuan_look_alikes_are_told_apart_by_their_code_or_not_at_all() {
    let t = tempfile::tempdir().unwrap();
    let no_code = variant(t.path(), "baichuan", "no-code", |_| {});
    std::fs::remove_file(no_code.join("modeling_baichuan.py")).unwrap();
    let (code, out, _) = ckpt(&["detect", s(&no_code)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("family      none detected"), "{out}");
    assert!(
        out.contains("baichuan2") && out.contains("modeling_*.py"),
        "{out}"
    );
    let (code, _, err) = ckpt(&["logits", s(&no_code), "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, _) = ckpt(&["detect", s(&fixture("baichuan"))]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      baichuan  (LLaMA-exact)"), "{out}");

    let norm_head = variant(t.path(), "baichuan", "norm-head", |_| {});
    std::fs::write(
        norm_head.join("modeling_baichuan.py"),
        "class NormHead:\n    pass\n",
    )
    .unwrap();
    let (code, out, _) = ckpt(&["detect", s(&norm_head)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      baichuan2"), "{out}");
    assert!(out.contains("value conversion"), "{out}");

    let alibi = variant(t.path(), "baichuan", "alibi", |_| {});
    std::fs::write(
        alibi.join("modeling_baichuan.py"),
        "def _get_alibi_mask():\n    pass\n",
    )
    .unwrap();
    let (code, out, _) = ckpt(&["detect", s(&alibi)]);
    assert!(out.contains("baichuan-alibi"), "{code} {out}");
    let out_dir = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&alibi), s(&out_dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(!out_dir.exists());
}

/// A sliding window LLaMA cannot express: converting is lossy, refused without `--allow-lossy`,
/// and with it the change is stated and the window key is gone from the output config.
#[test]
fn sliding_window_conversion_is_lossy_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let out_dir = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&fixture("mistral")), s(&out_dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("lossy") && err.contains("4096") && err.contains("--allow-lossy"),
        "{err}"
    );
    assert!(!out_dir.exists());
    let (code, out, err) = ckpt(&[
        "convert",
        s(&fixture("mistral")),
        s(&out_dir),
        "--allow-lossy",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("up to 4096 tokens"), "{out}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("sliding_window").is_none(), "{cfg}");
    // The output is plain LLaMA with nothing unmodelled (the shared rules: the fixture ships no
    // tokenizer, which the default target, every loader, reports for llama.cpp).
    let (code, out, _) = ckpt(&["check", s(&out_dir), "--target", "transformers"]);
    assert_eq!(code, 0, "{out}");
    // Not equivalent in general, although 16-token logits agree: verify says why.
    let (code, out, _) = ckpt(&["verify", s(&fixture("mistral")), s(&out_dir)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("up to 4096 tokens") && out.contains("NOT equivalent"),
        "{out}"
    );
    // Qwen2's window is switched off (`use_sliding_window: false`): exact.
    let q = t.path().join("q");
    let (code, out, err) = ckpt(&["convert", s(&fixture("qwen2")), s(&q), "-q"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Families whose computation LLaMA cannot express at all are never converted to it, even with
/// `--allow-lossy`.
#[test]
fn impossible_conversions_are_refused_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    // Gemma's names are LLaMA's; its math is not.
    let g = variant(t.path(), "llama-tied", "gemma", |c| {
        c["model_type"] = serde_json::json!("gemma");
        c["architectures"] = serde_json::json!(["GemmaForCausalLM"]);
        c["hidden_act"] = serde_json::json!("gelu_pytorch_tanh");
    });
    let (code, out, _) = ckpt(&["detect", s(&g)]);
    assert!(
        out.contains("family      gemma  (not LLaMA-exact"),
        "{code} {out}"
    );
    let out_dir = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&g), s(&out_dir), "--allow-lossy"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot be converted") && err.contains("1 + w"),
        "{err}"
    );
    assert!(!out_dir.exists());
    // Baichuan's W_pack holds three hidden-size blocks: grouped-query k/v do not fit, and that is
    // the model's limit, not a fault of the mapping file.
    convert_refused(
        &fixture("llama-gqa"),
        &out_dir,
        &["--to", "baichuan"],
        &[
            "error[unsupported]",
            "family `baichuan` cannot hold this checkpoint",
            "grouped-query attention: 2 key/value heads for 4 query heads",
        ],
    );
}

/// An MHA model converts to Baichuan; without Baichuan's modeling code names and config cannot
/// tell its generations apart on reading back, which convert says, naming the flag that reads it.
#[test]
fn converting_to_baichuan_says_how_to_read_it_back() {
    let t = tempfile::tempdir().unwrap();
    let bc = t.path().join("to-baichuan");
    let (code, out, err) = ckpt(&[
        "convert",
        s(&fixture("llama-mha")),
        s(&bc),
        "--to",
        "baichuan",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("detection does not read the output back as `baichuan`")
            && out.contains("`--family baichuan`"),
        "{out}"
    );
    let (code, _, err) = ckpt(&["logits", s(&bc), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ckpt(&["logits", s(&bc), "--ids", "1,2,3", "--family", "baichuan"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ckpt(&[
        "verify",
        s(&fixture("llama-mha")),
        s(&bc),
        "--family-b",
        "baichuan",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // A conversion that reads back as its target says nothing of the kind.
    let yi = t.path().join("to-yi");
    let (code, out, err) = ckpt(&["convert", s(&fixture("llama-mha")), s(&yi), "--to", "yi"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("detection"), "{out}");
}

/// A `[math]` table is input like the rest of a mapping file: unknown keys and values are errors
/// naming them.
#[test]
fn math_tables_are_validated() {
    let t = tempfile::tempdir().unwrap();
    for (body, want) in [
        ("[math]\nrope = \"sideways\"\n", "rope"),
        ("[math]\nplacement = \"middle\"\n", "placement"),
        ("[math]\nactivation = \"relu6\"\n", "activation"),
        ("[math]\nembedding_scale = \"lots\"\n", "embedding_scale"),
        ("[math]\nbogus = 1\n", "bogus"),
    ] {
        let f = t.path().join("m.toml");
        std::fs::write(
            &f,
            format!(
                "name = \"m\"\nsummary = \"x\"\nbase = \"llama\"\nexact = true\nsources = [\"x\"]\n{body}"
            ),
        )
        .unwrap();
        let (code, _, err) = ckpt(&["families", "--mapping", s(&f)]);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(want), "{body}: {err}");
    }
}

/// `max |a - b|` over two equal-length slices.
fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn golden(name: &str) -> (Vec<Vec<u32>>, Vec<f32>) {
    common::golden(&fixture(name))
}

/// Every look-alike fixture, saved by its own transformers class, read through its *detected*
/// family (names, config and shipped code, no hand-built math): the reference reproduces the class's
/// logits. A tool that computed LLaMA for them is off by more than 0.1 (asserted by the fixture
/// script), so this fails for any family whose math is misread.
#[test]
fn every_look_alike_computes_its_own_class_logits_through_detection() {
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    for (name, family) in [
        ("granite", "granite"),
        ("helium", "helium"),
        ("smollm3", "smollm3"),
        ("mistral-window", "mistral"),
        ("qwen3", "qwen3"),
        ("olmo2", "olmo2"),
        ("gemma", "gemma"),
        ("gemma2", "gemma2"),
        ("baichuan2", "baichuan2"),
        ("stablelm", "stablelm"),
        ("stablelm-qk-parallel", "stablelm"),
        ("cohere", "cohere"),
        ("cohere-qk", "cohere"),
    ] {
        let ck = ckpt::checkpoint::Checkpoint::open(fixture(name)).unwrap();
        let (view, got_family) =
            ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got_family, family, "{name}");
        let (batch, want) = golden(name);
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let model = ckpt::reference::Model::new(&view).unwrap();
        for isa in [ckpt::kernels::Isa::Scalar, ckpt::kernels::best_isa()] {
            let got = ckpt::reference::forward(&view, &batch, isa)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let err = max_abs(&got.data, &want);
            assert!(
                err <= 1e-4 * scale,
                "{name} on {isa:?}: max abs error {err}"
            );
            common::check_last_rows(name, &model, &batch, isa, &got, &want, 1e-4 * scale);
        }
    }
}

/// `ckpt logits` on the unknown-model-type fixture refuses; asserted as llama it gives LLaMA's
/// logits (what the fixture's golden values are).
#[test]
fn mystery_fixture_is_refused_then_computed_on_the_users_word() {
    let (code, _, err) = ckpt(&["logits", s(&fixture("mystery")), "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let ck = ckpt::checkpoint::Checkpoint::open(fixture("mystery")).unwrap();
    assert!(ckpt::detect::open_view(&ck, &reg, None, &[]).is_err());
    let (view, _) = ckpt::detect::open_view(&ck, &reg, Some("llama"), &[]).unwrap();
    let (batch, want) = golden("mystery");
    let got = ckpt::reference::forward(&view, &batch, ckpt::kernels::best_isa()).unwrap();
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    assert!(max_abs(&got.data, &want) <= 1e-4 * scale);
}

/// Each look-alike converted to LLaMA: exact ones bit-identical, value ones verified under the
/// stated tolerance, lossy and impossible ones refused with nothing written.
#[test]
fn look_alike_conversions_are_classified() {
    let t = tempfile::tempdir().unwrap();
    // helium: a rotary permutation, exact and verified bit-identical.
    let out = t.path().join("helium");
    let (code, o, err) = ckpt(&["convert", s(&fixture("helium")), s(&out), "--verify"]);
    assert_eq!(code, 0, "{o}{err}");
    assert!(o.contains("max abs 0.000e0"), "{o}");
    // granite and baichuan2: value conversions, verified on logits even without --verify, and
    // the output is plain LLaMA that `check` accepts.
    for (name, step) in [("granite", "multiplied by"), ("baichuan2", "normalised")] {
        let out = t.path().join(name);
        let (code, o, err) = ckpt(&["convert", s(&fixture(name)), s(&out)]);
        assert_eq!(code, 0, "{name}: {o}{err}");
        assert!(
            o.contains("value conversion (not bit-exact)") && o.contains(step),
            "{name}: {o}"
        );
        assert!(o.contains("verdict: equivalent"), "{name}: {o}");
        // The verdict names the tolerance it applied (the user stated none).
        assert!(
            o.contains("logits agree within the tolerance applied, ") && !o.contains("stated"),
            "{name}: {o}"
        );
        let (code, o, _) = ckpt(&["check", s(&out)]);
        assert!(!o.contains("C011"), "{name}: {code} {o}");
        // The converted LLaMA reproduces the source class's golden logits.
        let reg = ckpt::mapping::Registry::builtin().unwrap();
        let ck = ckpt::checkpoint::Checkpoint::open(&out).unwrap();
        let (view, fam) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
        assert_eq!(fam, "llama");
        let (batch, want) = golden(name);
        let got = ckpt::reference::forward(&view, &batch, ckpt::kernels::best_isa()).unwrap();
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let err = max_abs(&got.data, &want);
        assert!(err <= 1e-3 * scale, "{name}: converted LLaMA off by {err}");
    }
    // Lossy: refused without the flag.
    for name in ["smollm3", "mistral-window"] {
        let out = t.path().join(name);
        let (code, _, err) = ckpt(&["convert", s(&fixture(name)), s(&out)]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(
            err.contains("lossy") && err.contains("--allow-lossy"),
            "{name}: {err}"
        );
        assert!(!out.exists());
    }
    // Lossy and verified: the window changes outputs at 16 tokens, so nothing is written.
    let out = t.path().join("mw");
    let (code, o, err) = ckpt(&[
        "convert",
        s(&fixture("mistral-window")),
        s(&out),
        "--allow-lossy",
        "--verify",
    ]);
    assert_eq!(code, 1, "{o}{err}");
    assert!(!out.exists());
    // Impossible: refused even with --allow-lossy.
    for name in ["qwen3", "olmo2", "gemma", "gemma2", "stablelm"] {
        let out = t.path().join(name);
        let (code, _, err) = ckpt(&["convert", s(&fixture(name)), s(&out), "--allow-lossy"]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains("cannot be converted"), "{name}: {err}");
        assert!(!out.exists());
    }
}

/// Cohere (parallel blocks, LayerNorm, interleaved rotary, logit_scale) through its family file
/// matches CohereForCausalLM, and is never converted to LLaMA.
#[test]
fn cohere_is_computed_by_its_family_and_not_converted() {
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let ck = ckpt::checkpoint::Checkpoint::open(fixture("cohere")).unwrap();
    let (view, fam) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
    assert_eq!(fam, "cohere");
    let (batch, want) = golden("cohere");
    let got = ckpt::reference::forward(&view, &batch, ckpt::kernels::best_isa()).unwrap();
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    assert!(max_abs(&got.data, &want) <= 1e-4 * scale);
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let (code, _, err) = ckpt(&["convert", s(&fixture("cohere")), s(&out), "--allow-lossy"]);
    assert_eq!(code, 2, "{err}");
    assert!(!out.exists());
}

/// HeliumAttention gives q/k/v a bias when `attention_bias` is true but builds `o_proj` without one
/// (transformers' `modeling_helium.py`), so a Helium checkpoint saved with `attention_bias: true`
/// has no `o_proj.bias`. It was detected as LLaMA-exact, then refused by `logits`, `verify` and
/// `convert` as missing a tensor the model needs. The family adds an all-zero `o_proj.bias` (as
/// Qwen2's does). The fixture with zero q/k/v and MLP biases added computes the fixture's own
/// golden logits (HeliumForCausalLM's, which zero biases do not change).
#[test]
fn regression_helium_attention_bias_has_no_o_proj_bias() {
    use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "helium", "helium-bias", |c| {
        c["attention_bias"] = serde_json::json!(true);
        c["mlp_bias"] = serde_json::json!(true);
    });
    let bytes = std::fs::read(ck.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (q, kv, hidden, inter) = (4 * 16, 2 * 16, 64, 96);
    let mut zeros: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..2 {
        for (name, rows) in [
            ("self_attn.q_proj", q),
            ("self_attn.k_proj", kv),
            ("self_attn.v_proj", kv),
            ("mlp.gate_proj", inter),
            ("mlp.up_proj", inter),
            ("mlp.down_proj", hidden),
        ] {
            zeros.push((format!("model.layers.{i}.{name}.bias"), vec![0u8; rows * 4]));
        }
    }
    let mut tensors: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    for (n, b) in &zeros {
        tensors.push((
            n.clone(),
            TensorView::new(StDtype::F32, vec![b.len() / 4], b).unwrap(),
        ));
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let out = safetensors::serialize(tensors, Some(meta)).unwrap();
    drop(st);
    std::fs::write(ck.join("model.safetensors"), out).unwrap();

    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("family      helium"), "{out}");
    // the reference forward pass runs it and gives HeliumForCausalLM's logits
    let (batch, want) = golden("helium");
    let ids: Vec<String> = batch
        .iter()
        .map(|r| r.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        .collect();
    let lf = t.path().join("logits.safetensors");
    let (code, o, err) = ckpt(&[
        "logits",
        s(&ck),
        "--ids",
        &ids[0],
        "--ids",
        &ids[1],
        "--out",
        s(&lf),
        "-q",
    ]);
    assert_eq!(code, 0, "{o}{err}");
    let got = common::golden(&{
        let d = t.path().join("got");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::rename(&lf, d.join("expected.safetensors")).unwrap();
        d
    })
    .1;
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let err = max_abs(&got, &want);
    assert!(err <= 1e-4 * scale, "max abs error {err}");
    // converting to LLaMA adds the zero o_proj bias LLaMA's attention_bias asks for, and verifies
    let dst = t.path().join("llama");
    let (code, o, err) = ckpt(&["convert", s(&ck), s(&dst), "--verify", "-q"]);
    assert_eq!(code, 0, "{o}{err}");
    let w = ckpt::checkpoint::Checkpoint::open(&dst).unwrap();
    let ob = w.get("model.layers.1.self_attn.o_proj.bias").unwrap();
    assert_eq!(ob.shape, vec![64]);
    assert!(w.read(ob).unwrap().iter().all(|b| *b == 0));
}

/// MistralConfig has no `layer_types`, and MistralModel applies `sliding_window` to every layer
/// whatever such a key says (other loaders read one per layer). ckpt's Mistral read it and windowed
/// only the layers it named, so `ckpt logits` differed from MistralForCausalLM's (by 2.4 on a
/// transformers-saved model with `layer_types: [sliding, full]`). The key is now unmodelled:
/// named and refused, never assumed.
#[test]
fn regression_mistral_layer_types_is_not_modelled() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "mistral-window", "mistral-layer-types", |c| {
        c["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"]);
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`layer_types` = "), "{out}");
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3,4,5,6,7"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("layer_types"), "{err}");
    // without the key, the window applies to every layer (the fixture's golden logits)
    let (code, out, err) = ckpt(&["logits", s(&fixture("mistral-window")), "--ids", "1,2,3"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// transformers 5 saves `partial_rotary_factor` inside `rope_parameters`. In a family that does
/// not model partial rotary (LLaMA) it was silently ignored: detect said LLaMA-exact and convert
/// dropped the key, although loaders that read it (vLLM, and transformers' own linear and dynamic
/// scalings) rotate part of each head only. It is now an unmodelled key like the top-level one;
/// 1.0 (Phi-3's default) changes nothing and is not reported.
#[test]
fn regression_partial_rotary_in_rope_parameters_is_unmodelled() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "llama-theta", "llama-partial", |c| {
        c["rope_parameters"]["partial_rotary_factor"] = serde_json::json!(0.5);
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`rope_parameters.partial_rotary_factor` = 0.5"),
        "{out}"
    );
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("partial_rotary_factor"), "{err}");
    let dst = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&ck), s(&dst)]);
    assert_eq!(code, 2, "{err}");
    assert!(!dst.exists());
    let (_, out, _) = ckpt(&["check", s(&ck)]);
    assert!(
        out.contains("C011") && out.contains("partial_rotary_factor"),
        "{out}"
    );
    // 1.0 rotates whole heads: nothing to report
    let one = variant(t.path(), "llama-theta", "llama-partial-one", |c| {
        c["rope_parameters"]["partial_rotary_factor"] = serde_json::json!(1.0);
    });
    let (code, out, _) = ckpt(&["detect", s(&one)]);
    assert_eq!(code, 0, "{out}");
    // The same at the top level, where transformers 4 saves it (a Phi-3 config always has it):
    // 1.0 is not reported, 0.5 is.
    for (v, want) in [(1.0, 0), (0.5, 1)] {
        let top = variant(t.path(), "llama-theta", &format!("llama-top-{v}"), |c| {
            c["partial_rotary_factor"] = serde_json::json!(v);
        });
        let (code, out, _) = ckpt(&["detect", s(&top)]);
        assert_eq!(code, want, "top-level {v}: {out}");
        assert_eq!(
            out.contains("`partial_rotary_factor`"),
            want == 1,
            "{v}: {out}"
        );
    }
    // Regression (a Phi-3 saved by transformers 4.57): converted to LLaMA it keeps the 1.0, and
    // `check` of the output must not refuse what `convert` produced.
    let phi3 = variant(t.path(), "phi3", "phi3-top-one", |c| {
        c["partial_rotary_factor"] = serde_json::json!(1.0);
    });
    let dst = t.path().join("phi3-llama");
    let (code, out, err) = ckpt(&["convert", s(&phi3), s(&dst), "--to", "llama", "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: equivalent"), "{out}");
    let (_, out, err) = ckpt(&["check", s(&dst), "--target", "transformers"]);
    assert!(!out.contains("C011"), "{out}{err}");
    // a family that models it (Phi-3) still runs it
    let (code, out, err) = ckpt(&["logits", s(&fixture("phi3-partial")), "--ids", "1,2,3"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Rotary parameters per layer type (Gemma 3's transformers 5 shape) carry no flat `rope_theta`;
/// read flat they would give every layer the default base of 10000. They are named as unmodelled
/// and nothing computes with them.
#[test]
fn regression_rope_parameters_per_layer_type_are_unmodelled() {
    let t = tempfile::tempdir().unwrap();
    let ck = variant(t.path(), "llama-theta", "llama-per-layer-rope", |c| {
        c["rope_parameters"] = serde_json::json!({
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}
        });
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`rope_parameters.full_attention`"), "{out}");
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rope_parameters.full_attention"), "{err}");
    let dst = t.path().join("out");
    let (code, _, err) = ckpt(&["convert", s(&ck), s(&dst)]);
    assert_eq!(code, 2, "{err}");
    assert!(!dst.exists());
}

/// Bias tensors are computed only where the family's own class computes them (`[biases]`): a
/// class without them (Mistral), or a config that switches them off (`attention_bias: false`),
/// means its loader drops the tensors while a LLaMA loader of the same names adds them. Every
/// command that computes or converts refuses, naming the tensor and why; none computes one
/// reading silently. The case the config allows still runs.
#[test]
fn bias_tensors_the_class_does_not_compute_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let ids = "1,2,3";
    // LLaMA's biases stored, the config switching them off.
    let off = variant(t.path(), "llama-bias", "off", |c| {
        c["attention_bias"] = false.into();
    });
    // Qwen2's q/k/v biases under a config naming Mistral, whose class has none.
    let mistral = variant(t.path(), "qwen2", "mistral", |c| {
        c["model_type"] = "mistral".into();
        c["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    });
    for (dir, key) in [
        (&off, "`attention_bias`"),
        (&mistral, "has no q/k/v biases"),
    ] {
        for cmd in [vec!["logits", s(dir), "--ids", ids], vec!["detect", s(dir)]] {
            let (code, out, err) = ckpt(&cmd);
            let text = format!("{out}{err}");
            assert_ne!(code, 0, "{cmd:?}: {text}");
            assert!(
                text.contains(key) && text.contains("bias"),
                "{cmd:?}: {text}"
            );
        }
        convert_refused(dir, &t.path().join("converted"), &["--to", "llama"], &[key]);
    }
    // The same llama-bias checkpoint with MLP biases off only: the MLP tensors are named.
    let mlp_off = variant(t.path(), "llama-bias", "mlp-off", |c| {
        c["mlp_bias"] = false.into();
    });
    let (code, _, err) = ckpt(&["logits", s(&mlp_off), "--ids", ids]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mlp_bias") && err.contains("mlp."), "{err}");
    // Qwen2's class has no o_proj bias: a stored one is refused as such (not as a gap in the
    // mapping file), by every command.
    let mut owned = common::fixture_tensors("qwen2");
    let hidden = owned.iter().find(|t| t.0 == "model.norm.weight").unwrap().1[0];
    for l in 0..2 {
        let one = 1.0f32.to_le_bytes().repeat(hidden);
        owned.push((
            format!("model.layers.{l}.self_attn.o_proj.bias"),
            vec![hidden],
            one,
        ));
    }
    let o_bias = variant(t.path(), "qwen2", "o-bias", |_| {});
    common::write_f32_safetensors(&o_bias.join("model.safetensors"), &owned);
    for cmd in [
        vec!["logits", s(&o_bias), "--ids", ids],
        vec!["verify", s(&fixture("qwen2")), s(&o_bias)],
    ] {
        let (code, _, err) = ckpt(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(
            err.contains("family `qwen2`'s own class has no o_proj biases"),
            "{cmd:?}: {err}"
        );
    }
    // Detection says why it names no family (it named qwen2, LLaMA-exact, before).
    let (code, out, _) = ckpt(&["detect", s(&o_bias)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("none detected") && out.contains("has no o_proj biases"),
        "{out}"
    );
    // ... and asserting the family gives the same reason as an error of the family.
    let (code, _, err) = ckpt(&["logits", s(&o_bias), "--ids", ids, "--family", "qwen2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error[unsupported]") && err.contains("has no o_proj biases"),
        "{err}"
    );
    // As stored, llama-bias runs (its goldens are checked in tests/forward.rs).
    let (code, _, err) = ckpt(&["logits", s(&fixture("llama-bias")), "--ids", ids]);
    assert_eq!(code, 0, "{err}");
    // Converting Qwen2 to Mistral would write biases MistralForCausalLM drops.
    let dst = t.path().join("to-mistral");
    convert_refused(
        &fixture("qwen2"),
        &dst,
        &["--to", "mistral"],
        &[
            "family `mistral`'s own class has no q/k/v biases",
            "_proj.bias",
        ],
    );
    // ... while Qwen2 to LLaMA keeps them, as LLaMA's attention_bias computes them.
    let dst = t.path().join("to-llama");
    let (code, _, err) = ckpt(&[
        "convert",
        s(&fixture("qwen2")),
        s(&dst),
        "--to",
        "llama",
        "--verify",
    ]);
    assert_eq!(code, 0, "{err}");
}

/// A config with both RoPE spellings that say different things (transformers 5's
/// `rope_parameters` beside transformers 4's top-level `rope_theta` / `rope_scaling`) has no one
/// meaning: transformers 4 reads the top level, transformers 5 merges them. Refused by every
/// command that computes or converts; both spellings agreeing is fine.
#[test]
fn rope_spellings_that_disagree_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let ids = "1,2,3";
    let theta = variant(t.path(), "llama-mha", "theta", |c| {
        c["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 10000.0});
        c["rope_theta"] = 50000.0.into();
    });
    let scaling = variant(t.path(), "llama-mha", "scaling", |c| {
        c["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 10000.0});
        c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 2.0});
    });
    for (dir, what) in [
        (&theta, "`rope_theta` 50000"),
        (&scaling, "`linear` factor 2"),
    ] {
        let (code, _, err) = ckpt(&["logits", s(dir), "--ids", ids]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("both ways") && err.contains(what), "{err}");
        // The config named the family and the family refused: the error says so, and offers no
        // other family or renaming as a way out (nor the family some other names came closest to).
        assert!(
            err.contains("the config names llama, which cannot be read as llama"),
            "{err}"
        );
        assert!(
            !err.contains("--family") && !err.contains("--rename") && !err.contains("closest"),
            "{err}"
        );
        convert_refused(
            dir,
            &t.path().join("out"),
            &["--to", "llama"],
            &["both ways"],
        );
        // `check` still reads it and reports the spellings.
        let (code, out, _) = ckpt(&["check", s(dir)]);
        assert_ne!(code, 0);
        assert!(out.contains("L001"), "{out}");
    }
    // The two spellings agreeing: the same logits as the fixture's own config.
    let agree = variant(t.path(), "llama-mha", "agree", |c| {
        c["rope_parameters"] =
            serde_json::json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0});
        c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
        c["rope_theta"] = 10000.0.into();
    });
    let legacy = variant(t.path(), "llama-mha", "legacy", |c| {
        c.as_object_mut().unwrap().remove("rope_parameters");
        c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
        c["rope_theta"] = 10000.0.into();
    });
    let (c1, a, e1) = ckpt(&["logits", s(&agree), "--ids", ids, "--json"]);
    let (c2, b, e2) = ckpt(&["logits", s(&legacy), "--ids", ids, "--json"]);
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    let strip = |j: &str| {
        let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    assert_eq!(strip(&a), strip(&b));
}

/// StableLM's `use_qkv_bias` (stablelm-2-1_6b ships it on) gives q/k/v a bias and o_proj none: read
/// through LLaMA's `attention_bias`, the canonical view adds an all-zero o_proj bias (as Qwen2's
/// does) instead of asking for one. The stablelm fixture with all-zero q/k/v biases added and the
/// switch on computes the fixture's own transformers logits; with the switch off they are refused.
#[test]
fn stablelm_qkv_biases_run_without_an_o_proj_bias() {
    let t = tempfile::tempdir().unwrap();
    let mut owned = common::fixture_tensors("stablelm");
    for (name, _, bytes) in owned.clone() {
        let Some(p) = name.strip_suffix("_proj.weight") else {
            continue;
        };
        if ["q", "k", "v"]
            .iter()
            .any(|x| p.ends_with(&format!("self_attn.{x}")))
        {
            let rows = bytes.len() / 4 / 64;
            owned.push((format!("{p}_proj.bias"), vec![rows], vec![0u8; rows * 4]));
        }
    }
    let write = |dir: &Path| common::write_f32_safetensors(&dir.join("model.safetensors"), &owned);
    let on = variant(t.path(), "stablelm", "on", |c| {
        c["use_qkv_bias"] = true.into()
    });
    write(&on);
    let off = variant(t.path(), "stablelm", "off", |c| {
        c["use_qkv_bias"] = false.into()
    });
    write(&off);
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let ck = ckpt::checkpoint::Checkpoint::open(&on).unwrap();
    assert_eq!(ck.tensors.len(), 26 + 6);
    let (view, family) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
    assert_eq!(family, "stablelm");
    let (batch, want) = golden("stablelm");
    let got = ckpt::reference::forward(&view, &batch, ckpt::kernels::best_isa()).unwrap();
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    assert!(max_abs(&got.data, &want) <= 1e-4 * scale);
    let (code, _, err) = ckpt(&["logits", s(&off), "--ids", "1,2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use_qkv_bias"), "{err}");
}

/// Converting into a family writes a config its own class loads as the same shapes and rotary, or
/// refuses: Phi3Config accepts no RoPE scaling but longrope; Helium's o_proj is hidden x hidden and
/// its head_dim defaults to 128, so it is written, and a head size it cannot hold is refused.
#[test]
fn conversions_write_configs_the_target_class_accepts_or_refuse() {
    let t = tempfile::tempdir().unwrap();
    convert_refused(
        &fixture("llama3-scaling"),
        &t.path().join("phi3"),
        &["--to", "phi3"],
        &["cannot express rope scaling `llama3`"],
    );
    // Meta's params.json says only `use_scaled_rope` (llama3 with Meta's constants): other
    // llama3 parameters (this fixture's original_max_position_embeddings is 32) are refused,
    // not written as 8192.
    convert_refused(
        &fixture("llama3-scaling"),
        &t.path().join("meta"),
        &["--to", "llama-meta"],
        &["can say only `use_scaled_rope`", "has 32, 1 and 4"],
    );
    // Qwen2 (no head_dim key) to Helium: head_dim written as hidden / heads, not left to 128.
    let dst = t.path().join("helium");
    let (code, _, err) = ckpt(&[
        "convert",
        s(&fixture("qwen2")),
        s(&dst),
        "--to",
        "helium",
        "--verify",
    ]);
    assert_eq!(code, 0, "{err}");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
    let want = c["hidden_size"].as_u64().unwrap() / c["num_attention_heads"].as_u64().unwrap();
    assert_eq!(c["head_dim"].as_u64(), Some(want), "{c}");
    // A head size Helium's square o_proj cannot hold.
    let cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 2,
        "intermediate_size": 96, "vocab_size": 256
    });
    let cfg = ckpt::checkpoint::ModelConfig::parse(
        &serde_json::to_vec(&cfg).unwrap(),
        ckpt::checkpoint::ConfigSource::ConfigJson,
    )
    .unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let e = ckpt::mapping::configmap::from_llama(&cfg, reg.get("helium").unwrap()).unwrap_err();
    assert!(
        e.message().contains("heads x head_dim must equal"),
        "{}",
        e.message()
    );
    let mut ok = cfg.clone();
    ok.head_dim = Some(16);
    ok.raw.insert("head_dim".into(), 16.into());
    assert!(ckpt::mapping::configmap::from_llama(&ok, reg.get("helium").unwrap()).is_ok());
}

/// Qwen2's class always has q/k/v biases: a LLaMA without them converted to Qwen2 stores all-zero
/// ones (a loader would otherwise report them missing and initialise them its own way), the
/// output reads back as Qwen2, and verify calls the two equivalent (an absent bias is a zero one).
#[test]
fn converting_into_a_family_with_fixed_biases_writes_zero_ones() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("llama-gqa");
    let dst = t.path().join("qwen2");
    let (code, _, err) = ckpt(&["convert", s(&src), s(&dst), "--to", "qwen2", "--verify"]);
    assert_eq!(code, 0, "{err}");
    let ck = ckpt::checkpoint::Checkpoint::open(&dst).unwrap();
    for l in 0..2 {
        for p in ["q", "k", "v"] {
            let name = format!("model.layers.{l}.self_attn.{p}_proj.bias");
            let b = ck.get(&name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(ck.read(b).unwrap().iter().all(|&x| x == 0), "{name}");
        }
        assert!(
            ck.get(&format!("model.layers.{l}.self_attn.o_proj.bias"))
                .is_none()
        );
    }
    let (code, out, _) = ckpt(&["detect", s(&dst)]);
    assert!(code == 0 && out.contains("family      qwen2"), "{out}");
    let (code, out, err) = ckpt(&["verify", s(&src), s(&dst)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: equivalent"), "{out}");
}

/// The parts of a family's computation a boolean config key switches on (`[[math.when]]`):
/// StableLM's `qk_layernorm` (a LayerNorm of each query and key head, one tensor per head) and
/// `use_parallel_residual`, Cohere's `use_qk_norm` (one `[heads, head_dim]` weight). The fixtures
/// saved with them on compute their class's logits (`every_look_alike_...`); here, every config
/// that does not match its tensors is refused, never computed without the weights it stores or
/// with weights it lacks, and a switch that is null or not a bool is refused by name.
#[test]
fn switched_qk_norms_and_parallel_residual_are_computed_or_refused() {
    let t = tempfile::tempdir().unwrap();
    let refused = |dir: &Path, want: &str| {
        let (code, out, err) = ckpt(&["logits", s(dir), "--ids", "1,2,3"]);
        assert_eq!(code, 2, "{}: {out}{err}", dir.display());
        assert!(
            err.contains(want),
            "{}: no `{want}` in {err}",
            dir.display()
        );
    };
    // The switches left out (their classes' default: off) or off, with the tensors they add
    // stored: refused, naming the checkpoint's own tensors the family would leave out.
    for (name, key, stored) in [
        (
            "stablelm-qk-parallel",
            "qk_layernorm",
            "model.layers.0.self_attn.k_layernorm.norms.0.weight",
        ),
        (
            "cohere-qk",
            "use_qk_norm",
            "model.layers.0.self_attn.k_norm.weight",
        ),
    ] {
        let absent = variant(t.path(), name, &format!("{name}-absent"), |c| {
            c.as_object_mut().unwrap().remove(key);
        });
        refused(&absent, stored);
        let off = variant(t.path(), name, &format!("{name}-off"), |c| {
            c[key] = false.into()
        });
        refused(&off, "does not compute with");
        let null = variant(t.path(), name, &format!("{name}-null"), |c| {
            c[key] = serde_json::Value::Null
        });
        refused(&null, &format!("config key `{key}` is null"));
        let text = variant(t.path(), name, &format!("{name}-text"), |c| {
            c[key] = "yes".into()
        });
        refused(&text, &format!("config key `{key}` must be true or false"));
    }
    // Sequential blocks asked of a checkpoint without the second norm: the missing tensor named.
    let seq = variant(t.path(), "stablelm-qk-parallel", "sequential", |c| {
        c["use_parallel_residual"] = false.into()
    });
    refused(&seq, "model.layers.0.post_attention_layernorm.weight");
    // The switches on for checkpoints without their tensors: the missing weights named.
    let on = variant(t.path(), "stablelm", "stablelm-parallel-on", |c| {
        c["use_parallel_residual"] = true.into()
    });
    refused(&on, "post_attention_layernorm");
    for (name, key) in [("stablelm", "qk_layernorm"), ("cohere", "use_qk_norm")] {
        let on = variant(t.path(), name, &format!("{name}-qk-on"), |c| {
            c[key] = true.into()
        });
        refused(
            &on,
            "or one `model.layers.0.self_attn.q_norm.{h}.weight` [16] per head",
        );
    }
    // One head's norm missing: refused, not computed with the others.
    let src = ckpt::checkpoint::Checkpoint::open(fixture("stablelm-qk-parallel")).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = src
        .tensors
        .iter()
        .filter(|t| t.name != "model.layers.1.self_attn.q_layernorm.norms.2.weight")
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                src.read(t).unwrap().into_owned(),
            )
        })
        .collect();
    let dir = variant(t.path(), "stablelm-qk-parallel", "head-missing", |_| {});
    common::write_f32_safetensors(&dir.join("model.safetensors"), &owned);
    refused(&dir, "model.layers.1.self_attn.q_norm.2.weight");
    // With both switches on, the family's math has them: `detect` says nothing is unmodelled.
    let (code, out, err) = ckpt(&["detect", s(&fixture("stablelm-qk-parallel"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("family      stablelm"), "{out}");
}

/// Regression: transformers 4's `save_pretrained` leaves out `tie_word_embeddings` when it equals
/// the default of both its config class and the base class, so a tied Gemma, Gemma 2, Cohere or
/// SmolLM3 saved by it has no such key (and no `lm_head.weight`). Read as LLaMA's default (untied),
/// `logits` refused it for a missing `lm_head`, `verify` called it different from the same model
/// saved by transformers 5, and `convert --to llama` wrote a config without the key, which
/// `LlamaForCausalLM` loads with a random output layer. The class default is now read.
#[test]
fn regression_a_missing_tie_key_means_the_classs_default() {
    let t = tempfile::tempdir().unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    for name in ["gemma", "gemma2", "smollm3", "cohere"] {
        let ck = variant(t.path(), name, &format!("{name}-tf4"), |c| {
            c.as_object_mut().unwrap().remove("tie_word_embeddings");
        });
        let opened = ckpt::checkpoint::Checkpoint::open(&ck).unwrap();
        let (view, _) = ckpt::detect::open_view(&opened, &reg, None, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (batch, want) = golden(name);
        let got = ckpt::reference::forward(&view, &batch, ckpt::kernels::best_isa())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        assert!(max_abs(&got.data, &want) <= 1e-4 * scale, "{name}");
        let (code, out, err) = ckpt(&["verify", s(&fixture(name)), s(&ck)]);
        assert_eq!(code, 0, "{name}: {out}{err}");
    }
    // Converted to LLaMA (whose class does not tie), the output says it ties.
    let ck = t.path().join("smollm3-tf4");
    let dst = t.path().join("smollm3-llama");
    let (code, out, err) = ckpt(&["convert", s(&ck), s(&dst), "--to", "llama", "--allow-lossy"]);
    assert_eq!(code, 0, "{out}{err}");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["tie_word_embeddings"], serde_json::json!(true), "{c}");
    let (_, out, _) = ckpt(&["check", s(&dst), "--target", "transformers"]);
    assert!(!out.contains("T008"), "{out}");
    // LLaMA's class does not tie: without the key, a LLaMA without `lm_head` is refused.
    let ck = variant(t.path(), "llama-tied", "llama-tied-nokey", |c| {
        c.as_object_mut().unwrap().remove("tie_word_embeddings");
    });
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lm_head.weight"), "{err}");
}

/// Regression (a sweep of checkpoints saved by transformers, one config key left out): a key the
/// config does not write means its class's default, not LLaMA's. ckpt computed Phi-3 and OLMo 2
/// with `rms_norm_eps` 1e-6 (their classes: 1e-5), Helium with LLaMA's eps and rotary base, SmolLM3
/// with base 10000 (class: 2000000), Cohere without its 0.0625 logit scale, and a Gemma 2 without
/// soft-caps, with head size ** -0.5 instead of 256 ** -0.5, and (without `layer_types`, as
/// transformers 4.44 saved it) with the window on every layer instead of every other one; all with
/// exit 0, and `convert --to llama --verify` said `equivalent` for outputs that transformers
/// computes differently. Each key left out must now compute exactly as the key set to the
/// class's default, and differently from LLaMA's default.
#[test]
fn regression_missing_config_keys_mean_the_classs_defaults() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let logits = |dir: &Path, name: &str| {
        let ck = ckpt::checkpoint::Checkpoint::open(dir).unwrap();
        let (view, _) = ckpt::detect::open_view(&ck, &reg, None, &[])
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let (batch, _) = golden(name);
        let out = ckpt::reference::forward(&view, &batch, ckpt::kernels::Isa::Scalar)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        out.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    // (fixture, keys to leave out, the class default, another value that computes differently)
    let remove_rope = |c: &mut serde_json::Value| {
        c.as_object_mut().unwrap().remove("rope_parameters");
    };
    let cases: Vec<(&str, &str, serde_json::Value, serde_json::Value)> = vec![
        ("phi3", "rms_norm_eps", json!(1e-5), json!(1e-6)),
        ("olmo2", "rms_norm_eps", json!(1e-5), json!(1e-6)),
        ("helium", "rms_norm_eps", json!(1e-8), json!(1e-6)),
        ("helium", "rope_theta", json!(100000.0), json!(10000.0)),
        ("smollm3", "rope_theta", json!(2000000.0), json!(10000.0)),
        ("stablelm", "layer_norm_eps", json!(1e-5), json!(1e-6)),
        ("cohere", "layer_norm_eps", json!(1e-5), json!(1e-6)),
        ("cohere", "logit_scale", json!(0.0625), json!(1.0)),
        ("gemma2", "attn_logit_softcapping", json!(50.0), json!(null)),
        (
            "gemma2",
            "final_logit_softcapping",
            json!(30.0),
            json!(null),
        ),
        (
            "gemma2",
            "layer_types",
            json!(["sliding_attention", "full_attention"]),
            json!(["sliding_attention", "sliding_attention"]),
        ),
    ];
    for (i, (name, key, class, other)) in cases.into_iter().enumerate() {
        // `rope_theta` lives in `rope_parameters` in these fixtures: remove that, and state the
        // base (when stated) at the top level.
        let rope = key == "rope_theta";
        let make = |tag: &str, v: Option<&serde_json::Value>| {
            variant(t.path(), name, &format!("{name}-{i}-{tag}"), |c| {
                if rope {
                    remove_rope(c);
                }
                c.as_object_mut().unwrap().remove(key);
                if let Some(v) = v {
                    c[key] = v.clone();
                }
            })
        };
        let absent = logits(&make("absent", None), name);
        let stated = logits(&make("class", Some(&class)), name);
        let llama = logits(&make("other", Some(&other)), name);
        assert!(absent == stated, "{name}: `{key}` left out is not {class}");
        assert!(
            stated != llama,
            "{name}: `{key}` = {other} computes the same (a useless case)"
        );
    }
    // Without `head_dim`, Qwen 3's and Gemma's classes read 128 and 256, not hidden / heads; the
    // fixtures' tensors (head size 16) then do not fit, as in transformers, which refuses them.
    for name in ["qwen3", "gemma", "gemma2"] {
        let ck = variant(t.path(), name, &format!("{name}-no-head-dim"), |c| {
            c.as_object_mut().unwrap().remove("head_dim");
        });
        let why = format!("the config names {name}, whose shapes do not fit");
        let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(&why), "{name}: {err}");
        let (code, out, _) = ckpt(&["detect", s(&ck)]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(&why), "{name}: {out}");
        let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3", "--family", name]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains("but the config implies"), "{name}: {err}");
    }
    // Regression: a Qwen 3 without `head_dim` or window keys has only names Cohere's rules allow
    // (q/k norms, an optional second norm); `detect` named cohere with exit 0. The config names
    // qwen3: no other family is chosen in its place.
    let ck = variant(t.path(), "qwen3", "qwen3-bare", |c| {
        let c = c.as_object_mut().unwrap();
        for k in [
            "head_dim",
            "layer_types",
            "max_window_layers",
            "use_sliding_window",
            "sliding_window",
        ] {
            c.remove(k);
        }
    });
    let (code, out, _) = ckpt(&["detect", s(&ck)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("family      none detected"), "{out}");
    assert!(
        out.contains("the names also fit cohere, but ckpt does not assume"),
        "{out}"
    );
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the config names qwen3, whose shapes do not fit"),
        "{err}"
    );
}

/// Regression: Gemma's activation is read differently by transformers generations (4.44 reads
/// `hidden_activation`, default the tanh GELU; 4.57 `hidden_act` as written; 5 `hidden_act` with
/// the legacy `"gelu"` read as the tanh GELU). ckpt computed 4.57's exact GELU for the legacy
/// `hidden_act: "gelu"`, unlike 4.44 and 5 (and `verify` called it different from the same model
/// saying `gelu_pytorch_tanh`). Where the generations disagree it now refuses, naming the keys.
#[test]
fn regression_gemma_activation_the_generations_disagree_on_is_refused() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let cases = [
        ("legacy", json!("gelu"), None, false),
        (
            "legacy-both",
            json!("gelu"),
            Some(json!("gelu_pytorch_tanh")),
            false,
        ),
        (
            "split",
            json!("gelu_pytorch_tanh"),
            Some(json!("gelu")),
            false,
        ),
        (
            "agree",
            json!("gelu_pytorch_tanh"),
            Some(json!("gelu_pytorch_tanh")),
            true,
        ),
        (
            "agree-null",
            json!("gelu_pytorch_tanh"),
            Some(json!(null)),
            true,
        ),
        // `gelu_new` is the same tanh GELU under another name: the same model.
        ("gelu-new", json!("gelu_new"), None, true),
    ];
    for (tag, act, other, runs) in cases {
        let ck = variant(t.path(), "gemma", &format!("gemma-{tag}"), |c| {
            c["hidden_act"] = act.clone();
            if let Some(o) = &other {
                c["hidden_activation"] = o.clone();
            }
        });
        let (code, out, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
        if runs {
            assert_eq!(code, 0, "{tag}: {out}{err}");
            let (code, out, err) = ckpt(&["verify", s(&fixture("gemma")), s(&ck)]);
            assert_eq!(code, 0, "{tag}: {out}{err}");
        } else {
            assert_eq!(code, 2, "{tag}: {out}{err}");
            assert!(err.contains("the loaders disagree"), "{tag}: {err}");
        }
    }
}

/// Regression (a sweep of configs with one key set to null): transformers' classes read a null
/// `rms_norm_eps`, `hidden_act`, `rope_theta` (not given in `rope_parameters`), multiplier, logit
/// scale, window span of sliding layers or (Qwen 2, Gemma, ...) `head_dim` as None and cannot
/// build the model (4.57 and 5.24 raise); ckpt computed its own default with exit 0, and
/// `convert --verify` called the result equivalent. Each is now refused by name. A null that
/// means "off" (a soft-cap, a window without sliding layers) still computes, and a top-level null
/// `partial_rotary_factor` gives way to the one in `rope_parameters`, as transformers 5 reads it.
#[test]
fn regression_null_where_the_class_needs_a_value_is_refused() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let refused = [
        ("llama-theta", "rms_norm_eps"),
        ("llama-theta", "hidden_act"),
        ("granite", "embedding_multiplier"),
        ("cohere", "logit_scale"),
        ("qwen3", "head_dim"),
        ("gemma2", "sliding_window"),
        ("gemma2", "query_pre_attn_scalar"),
    ];
    for (name, key) in refused {
        let ck = variant(t.path(), name, &format!("{name}-null-{key}"), |c| {
            c[key] = json!(null);
        });
        let (code, out, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
        assert_eq!(code, 2, "{name} {key}: {out}{err}");
        let want = format!("config key `{key}` is null where the model needs a value");
        assert!(err.contains(&want), "{name} {key}: {err}");
        let dst = t.path().join(format!("{name}-null-{key}-out"));
        let (code, _, err) = ckpt(&["convert", s(&ck), s(&dst), "--to", "llama"]);
        assert_eq!(code, 2, "{name} {key}: {err}");
        assert!(!dst.exists());
    }
    // A top-level `rope_theta: null` with none in `rope_parameters` (a transformers 4 config).
    let ck = variant(t.path(), "llama-theta", "llama-null-theta", |c| {
        c.as_object_mut().unwrap().remove("rope_parameters");
        c["rope_theta"] = json!(null);
    });
    let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`rope_theta` is null"), "{err}");
    // Null as "off": computes as without the key.
    for (name, key) in [
        ("gemma2", "attn_logit_softcapping"),
        ("mistral", "sliding_window"),
    ] {
        let ck = variant(t.path(), name, &format!("{name}-off-{key}"), |c| {
            c[key] = json!(null);
        });
        let (code, out, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
        assert_eq!(code, 0, "{name} {key}: {out}{err}");
    }
    // Phi-3: a top-level null beside `rope_parameters.partial_rotary_factor` reads the latter.
    let (code, out, err) = ckpt(&["logits", s(&fixture("phi3-partial")), "--ids", "1,2,3"]);
    assert_eq!(code, 0, "{out}{err}");
    let ck = variant(t.path(), "phi3-partial", "phi3-partial-null-top", |c| {
        c["partial_rotary_factor"] = json!(null);
    });
    let (code, _, err) = ckpt(&["verify", s(&fixture("phi3-partial")), s(&ck)]);
    assert_eq!(code, 0, "{err}");
}

/// Regression (found by a sweep of configs with one key removed or null, each loaded by
/// transformers 4.57 and 5.24):
/// - a Qwen2 config with a window but no `use_sliding_window` computed the window; the class's
///   default switch is off (wrong logits, exit 0);
/// - a `layer_types` naming sliding layers with the switch off was computed; transformers since
///   4.57 raises;
/// - a Cohere config with no rotary base was computed with transformers 4's 10000 (5 reads
///   500000);
/// - a null in a strictly typed switch (`attention_bias`, `tie_word_embeddings`,
///   `max_position_embeddings`), refused by transformers 5 and read by truthiness in 4, was
///   computed;
/// - an extra null `rms_norm_eps` beside Cohere's `layer_norm_eps` was refused as a rename
///   conflict, though the class reads only the latter;
/// - a tied Gemma config with neither `tie_word_embeddings` nor `model_type` was read as untied
///   (the tie default was looked up by `model_type` only) and refused for a missing `lm_head`;
/// - a Phi-3 config without `pad_token_id` in a small vocabulary was computed, though its class's
///   default padding index (32000) makes every transformers fail to build the embedding.
#[test]
fn regression_config_keys_the_class_reads_otherwise_or_not_at_all() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let ids = ["--ids", "1,15,72,9,30,4,33,120"];
    let runs = std::cell::Cell::new(0);
    let logits = |ck: &Path| {
        runs.set(runs.get() + 1);
        let out = t.path().join(format!("logits-{}.safetensors", runs.get()));
        let (code, stdout, err) =
            ckpt(&[&["logits", s(ck), "--out", s(&out), "-q"][..], &ids[..]].concat());
        assert_eq!(code, 0, "{}: {err}", ck.display());
        assert_eq!(stdout, "", "-q with --out prints nothing");
        std::fs::read(&out).unwrap()
    };
    // The window: without the switch, as with it off; and on, another computation.
    let off = variant(t.path(), "qwen2-window", "q-off", |c| {
        c["use_sliding_window"] = json!(false);
        c.as_object_mut().unwrap().remove("layer_types");
    });
    let absent = variant(t.path(), "qwen2-window", "q-absent", |c| {
        c.as_object_mut().unwrap().remove("use_sliding_window");
        c.as_object_mut().unwrap().remove("layer_types");
    });
    assert!(
        logits(&absent) == logits(&off),
        "no switch is not the switch off"
    );
    assert!(
        logits(&fixture("qwen2-window")) != logits(&off),
        "a useless case"
    );
    let contradiction = variant(t.path(), "qwen2-window", "q-contra", |c| {
        c.as_object_mut().unwrap().remove("use_sliding_window");
    });
    let (code, _, err) = ckpt(&[&["logits", s(&contradiction)][..], &ids[..]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("lists sliding_attention layers while `use_sliding_window` is false"),
        "{err}"
    );
    // Cohere's rotary base (10000 in transformers 4.57, 500000 in 5.24) and Gemma 2's
    // `query_pre_attn_scalar` (224 in 4.44, 256 since) must be stated.
    for (name, key, remove) in [
        ("cohere", "rope_theta", "rope_parameters"),
        ("gemma2", "query_pre_attn_scalar", "query_pre_attn_scalar"),
    ] {
        let ck = variant(t.path(), name, &format!("{name}-no-{key}"), |c| {
            c.as_object_mut().unwrap().remove(remove);
        });
        let (code, _, err) = ckpt(&[&["logits", s(&ck)][..], &ids[..]].concat());
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "the config has no `{key}`, and transformers generations"
            )),
            "{err}"
        );
    }
    let top_base = variant(t.path(), "cohere", "cohere-top-base", |c| {
        c.as_object_mut().unwrap().remove("rope_parameters");
        c["rope_theta"] = json!(500000.0);
    });
    assert!(
        logits(&top_base) == logits(&fixture("cohere")),
        "a top-level base"
    );
    // A null strict switch.
    for (name, key) in [
        ("llama-theta", "attention_bias"),
        ("llama-theta", "mlp_bias"),
        ("llama-tied", "tie_word_embeddings"),
        ("gemma", "tie_word_embeddings"),
        ("llama3-scaling", "max_position_embeddings"),
    ] {
        let ck = variant(t.path(), name, &format!("{name}-null-{key}"), |c| {
            c[key] = json!(null);
        });
        let (code, _, err) = ckpt(&[&["logits", s(&ck)][..], &ids[..]].concat());
        assert_eq!(code, 2, "{name} {key}: {err}");
        assert!(
            err.contains(&format!(
                "config key `{key}` is null: transformers 5 refuses"
            )),
            "{name} {key}: {err}"
        );
    }
    // A tied Gemma saved by transformers 4 writes no `tie_word_embeddings`; without a
    // `model_type` too, the class `architectures` names (which loads it) still ties by default.
    let no_type = variant(t.path(), "gemma", "gemma-no-type", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("tie_word_embeddings");
        c.remove("model_type");
    });
    assert!(
        logits(&no_type) == logits(&fixture("gemma")),
        "tied by default"
    );
    // The class builds its embedding with `pad_token_id` as the padding index: outside the
    // vocabulary (Phi-3's class default 32000 in a 256-token fixture) no transformers builds it.
    for (tag, pad, why) in [
        (
            "absent",
            None,
            "`pad_token_id` 32000 (its class's default) is outside the vocabulary of 256",
        ),
        (
            "past",
            Some(256),
            "`pad_token_id` 256 is outside the vocabulary of 256",
        ),
    ] {
        let ck = variant(t.path(), "phi3", &format!("phi3-pad-{tag}"), |c| {
            c.as_object_mut().unwrap().remove("pad_token_id");
            if let Some(p) = pad {
                c["pad_token_id"] = json!(p);
            }
        });
        let (code, _, err) = ckpt(&[&["logits", s(&ck)][..], &ids[..]].concat());
        assert_eq!(code, 2, "{tag}: {err}");
        assert!(err.contains(why), "{tag}: {err}");
    }
    // A null in the spelling the class does not read is not a second value.
    let extra = variant(t.path(), "cohere", "cohere-extra-null", |c| {
        c["rms_norm_eps"] = json!(null);
    });
    assert!(
        logits(&extra) == logits(&fixture("cohere")),
        "an extra null"
    );
    let extra = variant(t.path(), "cohere", "cohere-extra-value", |c| {
        c["rms_norm_eps"] = json!(1e-3);
    });
    let (code, _, err) = ckpt(&[&["logits", s(&extra)][..], &ids[..]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("both become `rms_norm_eps`"), "{err}");
}

/// Regression (found by a sweep of configs edited after saving with transformers 5.24): a
/// `partial_rotary_factor` both at the top level and in `rope_parameters` with different values
/// was computed with the top-level one (transformers 5 reads `rope_parameters`, 4 the top level:
/// rel error up to 0.98, exit 0); and a multiplier found only in `rope_parameters` was computed,
/// though no class reads it there (transformers 5 warns and computes without it: rel 0.67).
#[test]
fn regression_rope_parameters_is_read_only_for_rotary_keys_and_conflicts_are_refused() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    for (name, top) in [
        ("phi3-partial", 1.0),
        ("phi3-partial", 0.25),
        ("stablelm", 0.25),
    ] {
        let ck = variant(t.path(), name, &format!("{name}-top-{top}"), |c| {
            c["partial_rotary_factor"] = json!(top);
        });
        let (code, _, err) = ckpt(&["logits", s(&ck), "--ids", "1,2,3"]);
        assert_eq!(code, 2, "{name} {top}: {err}");
        assert!(
            err.contains(&format!("top-level `partial_rotary_factor` {top} against")),
            "{name} {top}: {err}"
        );
    }
    // The same value at both places is one value.
    let ck = variant(t.path(), "phi3-partial", "phi3-both-same", |c| {
        c["partial_rotary_factor"] = c["rope_parameters"]["partial_rotary_factor"].clone();
    });
    let (code, out, err) = ckpt(&["verify", s(&fixture("phi3-partial")), s(&ck)]);
    assert_eq!(code, 0, "{out}{err}");
    // Granite's multipliers are read at the top level only: moved into `rope_parameters`, the
    // class computes with its defaults (1.0), as a config without them does.
    for key in ["embedding_multiplier", "logits_scaling"] {
        let nested = variant(t.path(), "granite", &format!("granite-nested-{key}"), |c| {
            let v = c[key].clone();
            c.as_object_mut().unwrap().remove(key);
            c["rope_parameters"][key] = v;
        });
        let absent = variant(t.path(), "granite", &format!("granite-no-{key}"), |c| {
            c.as_object_mut().unwrap().remove(key);
        });
        let (code, out, err) = ckpt(&["verify", s(&absent), s(&nested)]);
        assert_eq!(code, 0, "{key}: {out}{err}");
        let (code, out, err) = ckpt(&["verify", s(&fixture("granite")), s(&nested)]);
        assert_eq!(code, 1, "{key}: {out}{err}");
    }
}
