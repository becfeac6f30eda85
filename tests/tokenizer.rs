//! Issue 14: a converted release works in every LLaMA loader, tokenizer included, and `check` knows
//! each loader.
//!
//! * The tokenizer fixtures (`fixtures/tokenizers/`, made by `scripts/make_tokenizer_fixtures.py`,
//!   which converted them with `ckpt` and checked the outputs with the real transformers) convert
//!   today to exactly the outputs the script verified: same files, same tokenizer class, same
//!   convert report; the frozen checks all passed.
//! * Converted outputs carry the portable config keys, one set of weights, a loadable tokenizer
//!   config, and numbers in their original spelling.
//! * `check` catches each defect listed under "What was found" in the issue, in a crafted copy,
//!   tagged with the loaders it affects.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{ckpt, fixture};

fn tok_fixture(name: &str) -> PathBuf {
    fixture("tokenizers").join(name)
}

fn frozen() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("tokenizers").join("expected.json")).unwrap())
        .unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap_or_else(|e| panic!("{p:?}: {e}"))
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn convert(src: &Path, dst: &Path) -> String {
    let (code, out, err) = ckpt(&[
        "convert",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--to",
        "llama",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// `check --format json` with extra args: (exit code, report).
fn check_json(path: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["check", path.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = ckpt(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

/// The findings with this id: (severity, loaders, message).
fn findings(v: &Value, id: &str) -> Vec<(String, Vec<String>, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["loaders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has_error(v: &Value, id: &str, loader: &str) -> bool {
    findings(v, id)
        .iter()
        .any(|(s, l, _)| s == "error" && l.iter().any(|x| x == loader))
}

#[test]
fn frozen_results_all_passed_and_convert_still_produces_them() {
    let fz = frozen();
    let cases = fz["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 4, "yi-sp, yi-remote, llama-tokjson, meta-sp");
    let d = tempfile::tempdir().unwrap();
    for (name, res) in cases {
        // What transformers confirmed when the fixtures were generated.
        for (check, ok) in res["checks"].as_object().unwrap() {
            assert_eq!(
                ok,
                &Value::Bool(true),
                "{name}: frozen check {check} failed"
            );
        }
        // The binary still produces what was verified.
        let out = d.path().join(name);
        let stdout = convert(&tok_fixture(name), &out);
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("wrote "))
            .collect();
        let want: Vec<&str> = res["convert_output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            lines, want,
            "{name}: convert report changed since the fixtures were verified"
        );
        let want_files: Vec<&str> = res["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(files(&out), want_files, "{name}");
        let tc = read_json(&out.join("tokenizer_config.json"));
        assert_eq!(tc["tokenizer_class"], res["tokenizer_class"], "{name}");
        // And the converted release passes check for every loader (the remote-code case only
        // with its warnings).
        let (code, v) = check_json(&out, &["--target", "llama"]);
        assert_eq!(code, 0, "{name}: {v:#}");
        assert_eq!(v["errors"], 0, "{name}: {v:#}");
        match name.as_str() {
            "yi-remote" => assert_eq!(findings(&v, "K003-tokenizer-auto-map")[0].0, "warning"),
            // A tokenizer.json without byte fallback: llama.cpp's converter fails on it (measured
            // by scripts/run_loaders.py, docs/LOADERS.md), and check says so.
            "llama-tokjson" => {
                let f = findings(&v, "K009-llama-cpp-vocab");
                assert_eq!((f.len(), v["warnings"].as_u64()), (1, Some(1)), "{v:#}");
                assert_eq!(f[0].1, ["llama.cpp"]);
            }
            _ => assert_eq!(v["warnings"], 0, "{name}: {v:#}"),
        }
    }
    // The exact token ids transformers produced from the converted tokenizers are frozen; the
    // stock class for a LLaMA-style SentencePiece model is LlamaTokenizer, for tokenizer.json the
    // generic fast tokenizer.
    assert_eq!(cases["yi-sp"]["tokenizer_class"], "LlamaTokenizer");
    assert_eq!(cases["yi-sp"]["loaded_as"], "LlamaTokenizer");
    assert_eq!(
        cases["llama-tokjson"]["tokenizer_class"],
        "PreTrainedTokenizerFast"
    );
    assert_eq!(cases["meta-sp"]["tokenizer_class"], "LlamaTokenizer");
    assert_eq!(cases["yi-remote"]["tokenizer_class"], "YiTokenizer");
    assert_eq!(cases["yi-sp"]["token_ids"][0][0], 1, "bos first");
}

#[test]
fn converted_outputs_carry_portable_config_and_one_set_of_weights() {
    let d = tempfile::tempdir().unwrap();
    // Yi with a stray expected.safetensors and remote code.
    let yi = d.path().join("yi");
    let out = convert(&tok_fixture("yi-sp"), &yi);
    assert!(out.contains("not copied: expected.safetensors:"), "{out}");
    assert!(
        out.contains(
            "not copied (remote code, not needed by the target): modeling_yi.py, tokenization_yi.py"
        ),
        "{out}"
    );
    assert!(!yi.join("expected.safetensors").exists());
    let tc = read_json(&yi.join("tokenizer_config.json"));
    assert!(tc.get("auto_map").is_none());
    assert_eq!(tc["add_bos_token"], true, "other keys kept");
    let cfg = read_json(&yi.join("config.json"));
    assert_eq!(cfg["rope_theta"], 5e6);
    assert!(cfg["rope_scaling"].is_null());
    assert_eq!(cfg["rope_parameters"]["rope_theta"], 5e6);
    for k in ["max_position_embeddings", "bos_token_id", "eos_token_id"] {
        assert!(cfg.get(k).is_some(), "{k}");
    }
    let text = std::fs::read_to_string(yi.join("config.json")).unwrap();
    assert!(text.contains("\"rms_norm_eps\": 1e-05"), "{text}");
    assert!(text.contains("\"rope_theta\": 5000000.0"), "{text}");

    // Meta layout: config.json gets bos/eos from the SentencePiece model, max_position_embeddings,
    // and a generation_config.json.
    let meta = d.path().join("meta");
    convert(&tok_fixture("meta-sp"), &meta);
    let cfg = read_json(&meta.join("config.json"));
    assert_eq!(
        (cfg["bos_token_id"].as_u64(), cfg["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(cfg["max_position_embeddings"].as_u64().is_some());
    let g = read_json(&meta.join("generation_config.json"));
    assert_eq!(
        (g["bos_token_id"].as_u64(), g["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    let text = std::fs::read_to_string(meta.join("config.json")).unwrap();
    assert!(text.contains("\"rms_norm_eps\": 1e-05"), "{text}");
    assert_eq!(
        files(&meta),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.model",
            "tokenizer_config.json"
        ]
    );

    // A second layout's weights next to the checkpoint are not copied, and the output says why.
    let tj = d.path().join("tj");
    let out = convert(&tok_fixture("llama-tokjson"), &tj);
    assert!(
        out.contains("not copied: consolidated.safetensors: Meta-layout weights"),
        "{out}"
    );
    assert!(!tj.join("consolidated.safetensors").exists());

    // Qwen2: keys meaningless for LLaMA are dropped and listed; sliding_window kept.
    let q = d.path().join("q");
    let out = convert(&fixture("qwen2"), &q);
    let cfg = read_json(&q.join("config.json"));
    let src = read_json(&fixture("qwen2").join("config.json"));
    for k in ["max_window_layers", "use_sliding_window", "layer_types"] {
        if src.get(k).is_some() {
            assert!(cfg.get(k).is_none(), "{k}");
            assert!(out.contains(&format!("{k} (")), "{k}: {out}");
        }
    }
    assert!(
        out.contains("config.json: dropped keys meaningless for llama:"),
        "{out}"
    );
}

#[test]
fn dry_run_lists_the_file_selection() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = ckpt(&[
        "convert",
        tok_fixture("llama-tokjson").to_str().unwrap(),
        d.path().join("o").to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("not copied: consolidated.safetensors"),
        "{out}"
    );
    assert!(
        out.contains("tokenizer_class `BaichuanTokenizer` -> `PreTrainedTokenizerFast`"),
        "{out}"
    );
    assert!(!d.path().join("o").exists());
}

#[test]
fn check_catches_each_defect_the_issue_found() {
    let d = tempfile::tempdir().unwrap();

    // 1. Tokenizer: a Yi conversion that dropped tokenization_yi.py but kept the auto_map.
    let yi = d.path().join("yi");
    convert(&tok_fixture("yi-sp"), &yi);
    std::fs::copy(
        tok_fixture("yi-sp").join("tokenizer_config.json"),
        yi.join("tokenizer_config.json"),
    )
    .unwrap();
    let (code, v) = check_json(&yi, &[]);
    assert_eq!(code, 1);
    let f = findings(&v, "K003-tokenizer-auto-map");
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0].0, "error");
    assert_eq!(f[0].1, ["transformers", "vllm"]);
    assert!(f[0].2.contains("tokenization_yi.py"), "{}", f[0].2);
    // Not a llama.cpp or candle problem: those targets pass.
    assert_eq!(check_json(&yi, &["--target", "candle"]).0, 0);
    assert_eq!(check_json(&yi, &["--target", "llama.cpp"]).0, 0);
    // A leftover class without auto_map.
    let mut tc = read_json(&yi.join("tokenizer_config.json"));
    tc.as_object_mut().unwrap().remove("auto_map");
    tc["tokenizer_class"] = "BaichuanTokenizer".into();
    write_json(&yi.join("tokenizer_config.json"), &tc);
    let (_, v) = check_json(&yi, &[]);
    assert!(
        has_error(&v, "K004-tokenizer-class", "transformers"),
        "{v:#}"
    );

    // 2. Generated Meta config without max_position_embeddings and bos/eos, no generation config.
    let meta = d.path().join("meta");
    convert(&tok_fixture("meta-sp"), &meta);
    let mut cfg = read_json(&meta.join("config.json"));
    for k in ["max_position_embeddings", "bos_token_id", "eos_token_id"] {
        cfg.as_object_mut().unwrap().remove(k);
    }
    write_json(&meta.join("config.json"), &cfg);
    std::fs::remove_file(meta.join("generation_config.json")).unwrap();
    std::fs::remove_file(meta.join("tokenizer_config.json")).unwrap();
    std::fs::remove_file(meta.join("tokenizer.model")).unwrap();
    let (code, v) = check_json(&meta, &[]);
    assert_eq!(code, 1);
    // candle's serde fails; llama.cpp's converter (through AutoConfig) writes transformers' 2048.
    let f = findings(&v, "L002-max-position-embeddings");
    assert_eq!(f.len(), 2, "{v:#}");
    assert!(
        f.iter().any(|x| x.0 == "error" && x.1 == ["candle"]),
        "{v:#}"
    );
    assert!(
        f.iter()
            .any(|x| x.0 == "warning" && x.1 == ["llama.cpp"] && x.2.contains("2048")),
        "{v:#}"
    );
    assert_eq!(findings(&v, "K008-no-eos")[0].0, "warning");
    assert!(
        has_error(&v, "K001-tokenizer-missing", "llama.cpp"),
        "{v:#}"
    );
    // transformers loads it (with its 2048 default): no error for that target.
    assert_eq!(
        check_json(&meta, &["--target", "transformers"]).1["errors"],
        0
    );

    // 3. Config portability: theta 5e6 and llama3 scaling only in rope_parameters.
    for (name, needle) in [
        (
            "llama-theta",
            "`rope_theta` 5000000 is only in `rope_parameters`",
        ),
        (
            "llama3-scaling",
            "RoPE scaling `llama3` is only in `rope_parameters`",
        ),
    ] {
        let (_, v) = check_json(&fixture(name), &[]);
        let f = findings(&v, "L001-rope-spelling");
        assert_eq!(f.len(), 1, "{name}: {v:#}");
        assert_eq!(
            (f[0].0.as_str(), f[0].1.clone()),
            ("error", vec!["candle".to_string(), "vllm".to_string()])
        );
        assert!(f[0].2.contains(needle), "{}", f[0].2);
        // Converting writes both spellings, and the finding is gone.
        let out = d.path().join(format!("{name}-out"));
        convert(&fixture(name), &out);
        let (_, v) = check_json(&out, &[]);
        assert!(findings(&v, "L001-rope-spelling").is_empty(), "{v:#}");
    }

    // 4. Leftovers: a second full set of weights beside model.safetensors.
    let two = d.path().join("two");
    convert(&tok_fixture("llama-tokjson"), &two);
    let (code, _) = check_json(&two, &[]);
    assert_eq!(code, 0);
    std::fs::copy(
        two.join("model.safetensors"),
        two.join("consolidated.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        two.join("model.safetensors"),
        two.join("model-extra.safetensors"),
    )
    .unwrap();
    std::fs::write(two.join("pytorch_model.bin"), b"PK\x03\x04 not read").unwrap();
    let (code, v) = check_json(&two, &[]);
    assert_eq!(code, 1);
    let f = findings(&v, "W001-extra-weights");
    assert_eq!(f.len(), 3, "{v:#}");
    let by = |needle: &str| {
        f.iter()
            .find(|x| x.2.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {f:?}"))
            .clone()
    };
    assert_eq!(by("Meta-layout").1, ["vllm"]);
    assert_eq!(by("index or layout").1, ["llama.cpp", "vllm"]);
    assert_eq!(by("PyTorch pickle").0, "warning");
    assert!(by("Meta-layout").2.contains("second set of weights"));

    // 5. Vocabulary larger than the embedding, special ids outside it, bos/eos disagreeing.
    let y2 = d.path().join("y2");
    convert(&tok_fixture("yi-sp"), &y2);
    let mut tc = read_json(&y2.join("tokenizer_config.json"));
    tc["added_tokens_decoder"] =
        serde_json::json!({"400": {"content": "<extra>", "special": true}});
    write_json(&y2.join("tokenizer_config.json"), &tc);
    let mut cfg = read_json(&y2.join("config.json"));
    cfg["pad_token_id"] = 999.into();
    write_json(&y2.join("config.json"), &cfg);
    let mut g = read_json(&y2.join("generation_config.json"));
    g["eos_token_id"] = 7.into();
    write_json(&y2.join("generation_config.json"), &g);
    let (_, v) = check_json(&y2, &[]);
    let f = findings(&v, "K005-tokenizer-vocab");
    assert_eq!(f.len(), 1, "{v:#}");
    assert!(
        f[0].2.contains("401 tokens") && f[0].2.contains("320 rows"),
        "{}",
        f[0].2
    );
    assert!(
        findings(&v, "K006-special-token-id")
            .iter()
            .any(|x| x.2.contains("`pad_token_id` 999")),
        "{v:#}"
    );
    let f = findings(&v, "K007-bos-eos");
    assert!(
        f.iter()
            .any(|x| x.2.contains("eos_token_id") && x.2.contains("[7]")),
        "{v:#}"
    );

    // 6. Tokenizer files that are not what they claim: an LFS pointer and a truncated model.
    let y3 = d.path().join("y3");
    convert(&tok_fixture("yi-sp"), &y3);
    let sp = std::fs::read(y3.join("tokenizer.model")).unwrap();
    std::fs::write(y3.join("tokenizer.model"), &sp[..sp.len() / 2]).unwrap();
    std::fs::write(
        y3.join("tokenizer.json"),
        b"version https://git-lfs.github.com/spec/v1\n",
    )
    .unwrap();
    let (code, v) = check_json(&y3, &[]);
    assert_eq!(code, 1);
    let f = findings(&v, "K002-tokenizer-kind");
    assert_eq!(f.len(), 2, "{v:#}");
    assert!(f.iter().all(|x| x.0 == "error"));
    let files: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["id"] == "K002-tokenizer-kind")
        .map(|x| x["file"].as_str().unwrap())
        .collect();
    assert!(files.iter().any(|p| p.ends_with("tokenizer.model")));
    assert!(files.iter().any(|p| p.ends_with("tokenizer.json")));
}

#[test]
fn candle_rules_and_target_filtering() {
    // llama-bias: biases candle's llama does not load; explicit head_dim that differs.
    let (_, v) = check_json(&fixture("llama-bias"), &["--target", "candle"]);
    assert!(has_error(&v, "L003-biases", "candle"), "{v:#}");
    assert_eq!(v["target"], "candle");
    // Every finding of a single-loader target is tagged with that loader.
    for f in v["findings"].as_array().unwrap() {
        assert!(
            f["loaders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == "candle"),
            "{f:#}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("hd");
    copy_dir(&fixture("llama-gqa"), &p);
    let mut cfg = read_json(&p.join("config.json"));
    cfg["head_dim"] = 32.into();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "dynamic", "factor": 2.0});
    write_json(&p.join("config.json"), &cfg);
    let (_, v) = check_json(&p, &[]);
    assert!(has_error(&v, "L004-head-dim", "candle"), "{v:#}");
    assert!(has_error(&v, "L005-rope-scaling", "candle"), "{v:#}");
    assert!(
        findings(&v, "L005-rope-scaling")
            .iter()
            .any(|x| x.0 == "warning" && x.1 == ["llama.cpp"])
    );
    // Text output tags findings that concern only some loaders.
    let (_, out, _) = ckpt(&["check", fixture("llama-bias").to_str().unwrap()]);
    assert!(out.contains("error[L003-biases] (candle): "), "{out}");
    let (code, _, err) = ckpt(&[
        "check",
        fixture("llama-bias").to_str().unwrap(),
        "--target",
        "nope",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("llama.cpp"), "{err}");
}

/// Config values the real loaders refuse or compute differently, measured with transformers 5.23
/// (`from_pretrained`), llama.cpp's converter and its runtime (libllama, f32 GGUF) on tiny LLaMA
/// checkpoints; each was `ok` for the loader it breaks before.
#[test]
fn config_values_the_loaders_refuse_are_findings_for_them() {
    let d = tempfile::tempdir().unwrap();
    let edit = |name: &str, f: &dyn Fn(&mut Value)| {
        let p = d.path().join(name);
        copy_dir(&fixture("llama-gqa"), &p);
        std::fs::remove_file(p.join("expected.safetensors")).unwrap();
        let mut cfg = read_json(&p.join("config.json"));
        f(&mut cfg);
        write_json(&p.join("config.json"), &cfg);
        p
    };
    // `null` in a field LlamaConfig types strictly: StrictDataclassFieldValidationError.
    for key in [
        "rms_norm_eps",
        "hidden_act",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
    ] {
        let p = edit(key, &|c| c[key] = Value::Null);
        let (code, v) = check_json(&p, &["--target", "transformers"]);
        assert_eq!(code, 1, "{key}: {v:#}");
        assert!(has_error(&v, "C006-config-field", "transformers"), "{v:#}");
    }
    // rms_norm_eps null also breaks the GGUF (the converter falls back to the raw JSON).
    let p = edit("eps", &|c| c["rms_norm_eps"] = Value::Null);
    assert!(has_error(
        &check_json(&p, &[]).1,
        "C006-config-field",
        "llama.cpp"
    ));
    // max_position_embeddings null: transformers and candle refuse, the GGUF has no context length.
    let p = edit("mpe", &|c| c["max_position_embeddings"] = Value::Null);
    let (_, v) = check_json(&p, &[]);
    let f = findings(&v, "L002-max-position-embeddings");
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0].1, ["transformers", "llama.cpp", "candle"]);
    // hidden_size not a multiple of the heads, even with head_dim: validate_architecture refuses.
    let p = edit("heads", &|c| {
        c["num_attention_heads"] = 6.into();
        c["head_dim"] = 16.into();
    });
    let (_, v) = check_json(&p, &["--target", "transformers"]);
    assert!(has_error(&v, "C008-heads", "transformers"), "{v:#}");
    // A RoPE type transformers does not implement: KeyError in from_pretrained.
    let p = edit("foo", &|c| {
        c["rope_parameters"] =
            serde_json::json!({"rope_type": "foo", "rope_theta": 10000.0, "factor": 2.0});
        c["rope_scaling"] = c["rope_parameters"].clone();
    });
    let (code, v) = check_json(&p, &["--target", "transformers"]);
    assert_eq!(code, 1, "{v:#}");
    assert!(has_error(&v, "L005-rope-scaling", "transformers"), "{v:#}");
    // longrope: llama.cpp's GGUF runs unscaled (12.9 off transformers at 16 tokens): an error there;
    // dynamic stays a warning (unscaled equals it up to max_position_embeddings).
    let p = edit("longrope", &|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "short_factor": vec![1.5; 8], "long_factor": vec![2.0; 8], "original_max_position_embeddings": 64});
    });
    let (code, v) = check_json(&p, &["--target", "llama.cpp"]);
    assert_eq!(code, 1, "{v:#}");
    assert!(has_error(&v, "L005-rope-scaling", "llama.cpp"), "{v:#}");
    let p = edit("dynamic", &|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "dynamic", "factor": 2.0});
    });
    let (_, v) = check_json(&p, &["--target", "llama.cpp"]);
    let f = findings(&v, "L005-rope-scaling");
    assert!(f.len() == 1 && f[0].0 == "warning", "{v:#}");
}

#[test]
fn hostile_tokenizer_files_are_findings_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_dir(&tok_fixture("yi-sp"), &src);
    std::fs::write(src.join("tokenizer_config.json"), b"{\"auto_map\": [1, 2").unwrap();
    std::fs::write(src.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(
        src.join("tokenizer.model"),
        [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .unwrap();
    std::fs::write(src.join("generation_config.json"), b"[]").unwrap();
    let (code, v) = check_json(&src, &[]);
    assert_eq!(code, 1, "{v:#}");
    let mut named: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "K002-tokenizer-kind")
        .map(|f| {
            Path::new(f["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json"
        ],
        "{v:#}"
    );
    // Convert still works: the unreadable tokenizer_config.json is copied as it is, and said so.
    let out = d.path().join("out");
    let (code, stdout, err) = ckpt(&[
        "convert",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "llama",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        stdout.contains("note: tokenizer_config.json: not rewritten, it cannot be read"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer_config.json")).unwrap(),
        b"{\"auto_map\": [1, 2"
    );
}

/// transformers 5.23 reads the legacy `special_tokens_map.json` (overriding `tokenizer_config.json`)
/// and `added_tokens.json` when `tokenizer_config.json` has no `added_tokens_decoder`, and refuses a
/// special token that is not a string or `{"content": ...}`. Measured on a tiny LLaMA with
/// `AutoTokenizer.from_pretrained`: a `pad_token` "<pad>" missing from the vocabulary became id 256
/// of a 256-row embedding; `added_tokens.json` ids 256/257 made `len(tok)` 258; `bos_token: 5`
/// raised TypeError. `check` said ok to all three.
#[test]
fn legacy_special_tokens_map_added_tokens_and_bad_special_values() {
    let file_of = |f: &(String, Vec<String>, String), v: &Value, id: &str| -> String {
        let found = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id && x["message"] == f.2.as_str())
            .unwrap();
        Path::new(found["file"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_dir(&tok_fixture("yi-sp"), &src);
    let cfg = serde_json::json!({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"
    });
    write_json(&src.join("tokenizer_config.json"), &cfg);
    let (_, v) = check_json(&src, &[]);
    assert!(findings(&v, "K005-tokenizer-vocab").is_empty(), "{v:#}");
    assert!(findings(&v, "K006-special-token-id").is_empty(), "{v:#}");

    // special_tokens_map.json names a token the vocabulary lacks; added_tokens.json goes past the rows.
    write_json(
        &src.join("special_tokens_map.json"),
        &serde_json::json!({"bos_token": "<s>", "pad_token": "<pad>"}),
    );
    write_json(
        &src.join("added_tokens.json"),
        &serde_json::json!({"<|im_start|>": 320, "<|im_end|>": 321}),
    );
    let (code, v) = check_json(&src, &[]);
    assert_eq!(code, 1);
    let k6 = findings(&v, "K006-special-token-id");
    assert_eq!(k6.len(), 1, "{v:#}");
    assert!(k6[0].2.contains("\"<pad>\""), "{v:#}");
    assert_eq!(
        file_of(&k6[0], &v, "K006-special-token-id"),
        "special_tokens_map.json"
    );
    let k5 = findings(&v, "K005-tokenizer-vocab");
    assert_eq!(k5.len(), 1, "{v:#}");
    assert!(k5[0].2.contains("322 tokens"), "{v:#}");

    // With `added_tokens_decoder`, transformers ignores both legacy files.
    let mut with_decoder = cfg.clone();
    with_decoder["added_tokens_decoder"] = serde_json::json!({
        "0": {"content": "<unk>", "special": true}
    });
    write_json(&src.join("tokenizer_config.json"), &with_decoder);
    let (_, v) = check_json(&src, &[]);
    assert!(findings(&v, "K005-tokenizer-vocab").is_empty(), "{v:#}");
    assert!(findings(&v, "K006-special-token-id").is_empty(), "{v:#}");

    // A special token transformers cannot build.
    let mut bad = cfg.clone();
    bad["bos_token"] = serde_json::json!(5);
    bad["eos_token"] = serde_json::json!({"id": 2});
    write_json(&src.join("tokenizer_config.json"), &bad);
    std::fs::remove_file(src.join("special_tokens_map.json")).unwrap();
    let (code, v) = check_json(&src, &[]);
    assert_eq!(code, 1);
    let k6 = findings(&v, "K006-special-token-id");
    assert_eq!(k6.len(), 2, "{v:#}");
    for f in &k6 {
        assert_eq!(f.0, "error");
        assert_eq!(f.1, ["transformers", "vllm"], "{v:#}");
        assert!(f.2.contains("AutoTokenizer` refuses it"), "{v:#}");
        assert_eq!(
            file_of(f, &v, "K006-special-token-id"),
            "tokenizer_config.json"
        );
    }
}

/// transformers 5.23's `AutoTokenizer` falls back to `TokenizersBackend` for a `tokenizer_class` it
/// does not know (measured: `FooTokenizer` loads); with a `tokenizer.json` that backend loads the
/// file as written, so only transformers 4 (vLLM) fails. Without `tokenizer.json` it builds a
/// tokenizer from `tokenizer.model` whose ids differ from SentencePiece's (measured), so
/// transformers stays affected. `check` said "`AutoTokenizer` fails" for both.
#[test]
fn unknown_tokenizer_class_fails_in_transformers_4_only_when_tokenizer_json_is_shipped() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_dir(&tok_fixture("llama-tokjson"), &src);
    let mut tc = read_json(&src.join("tokenizer_config.json"));
    tc.as_object_mut().unwrap().remove("auto_map");
    tc["tokenizer_class"] = "FooTokenizer".into();
    write_json(&src.join("tokenizer_config.json"), &tc);
    let (_, v) = check_json(&src, &[]);
    let f = findings(&v, "K004-tokenizer-class");
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0].1, ["vllm"], "{v:#}");
    assert!(f[0].2.contains("transformers 4 (vLLM) fails"), "{}", f[0].2);
    let (_, v) = check_json(&src, &["--target", "transformers"]);
    assert!(findings(&v, "K004-tokenizer-class").is_empty(), "{v:#}");
    // SentencePiece only: transformers 5 loads a tokenizer that tokenizes differently.
    let yi = d.path().join("yi");
    copy_dir(&tok_fixture("yi-sp"), &yi);
    let mut tc = read_json(&yi.join("tokenizer_config.json"));
    tc.as_object_mut().unwrap().remove("auto_map");
    tc["tokenizer_class"] = "FooTokenizer".into();
    write_json(&yi.join("tokenizer_config.json"), &tc);
    let (_, v) = check_json(&yi, &["--target", "transformers"]);
    let f = findings(&v, "K004-tokenizer-class");
    assert_eq!(f.len(), 1, "{v:#}");
    assert!(f[0].2.contains("does not tokenize like"), "{}", f[0].2);
}
