//! GGUF as a checkpoint format (fixtures written by `scripts/make_gguf_fixtures.py` with gguf-py):
//! the dequantizers against gguf-py's values, quantized matmuls against their dequantized f32
//! equivalent on every ISA, inspect and detect, the reference forward against transformers run on
//! gguf-py's dequantization, verify and diff against the Hugging Face source, convert back
//! bit-exact, and hostile files refused with exit 2 and no panic.

mod common;

use std::path::{Path, PathBuf};

use ckpt::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::kernels::{self, Isa, WDtype, Weights};
use ckpt::mapping::family::Registry;
use common::ckpt;

fn gguf(name: &str) -> PathBuf {
    common::fixture("gguf").join(name)
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn isas() -> Vec<Isa> {
    let mut v = kernels::available_isas();
    if !v.contains(&Isa::Scalar) {
        v.push(Isa::Scalar);
    }
    v
}

/// Each dequantizer reproduces gguf-py's values bit for bit on random blocks (every packed field
/// random, scales finite).
#[test]
fn dequantizers_match_gguf_py_bit_for_bit() {
    let ck = Checkpoint::open(gguf("dequant.safetensors")).unwrap();
    let types = [
        ("Q8_0", WDtype::Q8_0),
        ("Q4_0", WDtype::Q4_0),
        ("Q4_1", WDtype::Q4_1),
        ("Q5_0", WDtype::Q5_0),
        ("Q5_1", WDtype::Q5_1),
        ("Q2_K", WDtype::Q2K),
        ("Q3_K", WDtype::Q3K),
        ("Q4_K", WDtype::Q4K),
        ("Q5_K", WDtype::Q5K),
        ("Q6_K", WDtype::Q6K),
    ];
    for (name, wd) in types {
        let bytes = ck.data(ck.get(&format!("{name}.bytes")).unwrap()).unwrap();
        let want = f32s(ck.data(ck.get(&format!("{name}.values")).unwrap()).unwrap());
        assert_eq!(wd.name(), name);
        for isa in isas() {
            let mut got = vec![f32::NAN; want.len()];
            kernels::to_f32_with(isa, Weights::new(wd, bytes), &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{name} {isa} element {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// A quantized matmul equals the f32 matmul of its dequantized weights (up to summation order), on
/// every ISA, for the few-token path and the GEMM path, with rows spanning several K blocks.
#[test]
fn quantized_matmul_equals_dequantized_f32() {
    let ck = Checkpoint::open(gguf("dequant.safetensors")).unwrap();
    for (name, wd) in [
        ("Q8_0", WDtype::Q8_0),
        ("Q4_K", WDtype::Q4K),
        ("Q6_K", WDtype::Q6K),
        ("Q5_0", WDtype::Q5_0),
    ] {
        let bytes = ck.data(ck.get(&format!("{name}.bytes")).unwrap()).unwrap();
        let total = Weights::new(wd, bytes).len();
        // Tile the fixture's blocks into a bigger [n, k] matrix: k = 1280 crosses a 1024 K block.
        let k = 1280;
        let n = 7;
        let (be, bb) = wd.block();
        let mut w = Vec::new();
        let blocks = total / be;
        for i in 0..(n * k / be) {
            let b = i % blocks;
            w.extend_from_slice(&bytes[b * bb..(b + 1) * bb]);
        }
        let mut wf = vec![0f32; n * k];
        kernels::to_f32(Weights::new(wd, &w), &mut wf).unwrap();
        let wf_bytes: Vec<u8> = wf.iter().flat_map(|v| v.to_le_bytes()).collect();
        for t in [1, 3, 20] {
            let x: Vec<f32> = (0..t * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let mut want = vec![0f32; t * n];
            kernels::matmul(
                Isa::Scalar,
                &x,
                t,
                k,
                Weights::new(WDtype::F32, &wf_bytes),
                n,
                &mut want,
            )
            .unwrap();
            for isa in isas() {
                let mut got = vec![f32::NAN; t * n];
                kernels::matmul(isa, &x, t, k, Weights::new(wd, &w), n, &mut got).unwrap();
                for (g, e) in got.iter().zip(&want) {
                    let tol = 1e-4 * (1.0 + e.abs()) * 50.0;
                    assert!((g - e).abs() <= tol, "{name} {isa} t={t}: {g} vs {e}");
                }
            }
        }
        // Rows that are not whole blocks are refused, not read past.
        let mut out = vec![0f32; 1];
        let e = kernels::matmul(
            Isa::Scalar,
            &vec![0f32; be + 1],
            1,
            be + 1,
            Weights::new(wd, &w[..bb]),
            1,
            &mut out,
        )
        .unwrap_err();
        assert!(e.message().contains("block"), "{}", e.message());
    }
}

/// Every GGUF fixture's forward pass against transformers run on gguf-py's dequantization, within
/// 1e-4 x max |logit|, on every ISA.
#[test]
fn logits_match_gguf_py_dequantization_plus_transformers() {
    let reg = Registry::builtin().unwrap();
    for name in [
        "gqa-f32",
        "f16",
        "bf16",
        "llama3-f32",
        "bias-f32",
        "tied-q8_0",
        "gqa-q8_0",
        "gqa-q4_0",
        "gqa-q4_1",
        "gqa-q5_0",
        "gqa-q5_1",
        "k-mix",
        // a rotary factor without a type, and under the older key: linear scaling, as llama.cpp
        "rope-factor-q8_0",
        "rope-scale-linear-q8_0",
        "q8_0-f16-embd",
        // an f32 source rounded to F16 / BF16 (`--outtype f16` / `bf16`)
        "gqa-f16-rounded",
        "gqa-bf16-rounded",
        // the `qwen2` architecture: Qwen2ForCausalLM's logits on the dequantized weights
        "qwen2-f32",
        "qwen2-q8_0",
        // the `qwen3` architecture (per-head q/k norms), square and wide: Qwen3ForCausalLM's
        "qwen3-f32",
        "qwen3-wide-q8_0",
    ] {
        let exp = Checkpoint::open(gguf(&format!("{name}.expected.safetensors"))).unwrap();
        let ids_t = exp.get("input_ids").unwrap();
        let seq = ids_t.shape[1];
        let ids: Vec<u32> = exp
            .data(ids_t)
            .unwrap()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        let batch: Vec<Vec<u32>> = ids.chunks(seq).map(|c| c.to_vec()).collect();
        let want = f32s(exp.data(exp.get("logits").unwrap()).unwrap());
        let ck = Checkpoint::open(gguf(&format!("{name}.gguf"))).unwrap();
        let (view, fam) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
        let want_fam = match name.get(..5) {
            Some("qwen2") => "qwen2-gguf",
            Some("qwen3") => "qwen3-gguf",
            _ => "llama-gguf",
        };
        assert_eq!(fam, want_fam, "{name}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let model = ckpt::reference::Model::new(&view).unwrap();
        for isa in isas() {
            let got = ckpt::reference::forward(&view, &batch, isa).unwrap();
            let d = got
                .data
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                d <= 1e-4 * scale,
                "{name} {isa}: max |diff| {d:e} > 1e-4 x {scale}"
            );
            // the last positions alone, with the block types decoded for a few rows
            common::check_last_rows(name, &model, &batch, isa, &got, &want, 1e-4 * scale);
        }
    }
}

#[test]
fn inspect_and_detect_read_gguf() {
    let (code, out, err) = ckpt(&["inspect", gguf("k-mix.gguf").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_0",
        "hidden=256",
        "token_embd.weight",
        "[256, 256]",
    ] {
        assert!(out.contains(want), "inspect lacks {want}:\n{out}");
    }
    let ck = Checkpoint::open(gguf("k-mix.gguf")).unwrap();
    // Row-major shapes: attn_k is [kv_heads * head_dim, hidden] = [128, 256].
    let k = ck.get("blk.0.attn_k.weight").unwrap();
    assert_eq!((k.shape.clone(), k.dtype), (vec![128, 256], Dtype::Q5_K));
    let (code, out, err) = ckpt(&["detect", gguf("gqa-q8_0.gguf").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("llama-gguf"), "{out}");
}

/// An f32 GGUF of an f32 checkpoint is the same model: identical bytes after the permutation and
/// equal logits; quantized files are equivalent only within their band.
#[test]
fn verify_against_the_hf_source() {
    let src = common::fixture("llama-gqa");
    let (code, out, err) = ckpt(&[
        "verify",
        src.to_str().unwrap(),
        gguf("gqa-f32.gguf").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("21/21 tensors identical"), "{out}");
    for (src, name) in [
        ("llama-f16", "f16.gguf"),
        ("llama-bf16", "bf16.gguf"),
        ("llama3-scaling", "llama3-f32.gguf"),
        // q/k biases permuted like their weights, undone by the mapping: bytes identical
        ("llama-bias", "bias-f32.gguf"),
    ] {
        let (code, out, err) = ckpt(&[
            "verify",
            common::fixture(src).to_str().unwrap(),
            gguf(name).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("tensors identical"), "{out}");
    }
    // llama.cpp stores the bf16 source's norms in F32: the verdict says why the bytes differ
    // (another dtype, the same values), not -0/+0 or NaN payloads.
    let (code, out, err) = ckpt(&[
        "verify",
        common::fixture("llama-bf16").to_str().unwrap(),
        gguf("bf16.gguf").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not in value: the same values stored in another dtype)"),
        "{out}"
    );
}

/// llama.cpp stores llama3 rope scaling as per-frequency factors, which fix `(low_freq_factor,
/// high_freq_factor, original_max_position_embeddings)` only up to a common scale; the GGUF reads
/// back with `low_freq_factor = 1`. A source written with the same frequencies at another scale
/// (`low 2, high 8, original 64` for the fixture's `1, 4, 32`) is the same model; one with other
/// frequencies (`original 100`) is not.
#[test]
fn llama3_scaling_at_another_scale_is_the_same_rotary() {
    let tmp = tempfile::tempdir().unwrap();
    for (low, high, old, code_want) in [(2.0, 8.0, 64, 0), (2.0, 8.0, 100, 1)] {
        let dir = tmp.path().join(format!("src-{old}"));
        std::fs::create_dir_all(&dir).unwrap();
        let from = common::fixture("llama3-scaling");
        std::fs::copy(
            from.join("model.safetensors"),
            dir.join("model.safetensors"),
        )
        .unwrap();
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(from.join("config.json")).unwrap()).unwrap();
        let rp = &mut cfg["rope_parameters"];
        rp["low_freq_factor"] = low.into();
        rp["high_freq_factor"] = high.into();
        rp["original_max_position_embeddings"] = old.into();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let (code, out, err) = ckpt(&[
            "verify",
            dir.to_str().unwrap(),
            gguf("llama3-f32.gguf").to_str().unwrap(),
        ]);
        assert_eq!(code, code_want, "original {old}: {out}{err}");
        if code_want == 1 {
            assert!(out.contains("config rope_scaling"), "{out}");
        }
    }
}

/// Quantized files verify within their bands; the same file with two tensors swapped (k and v of
/// layer 0, same shape and type) does not, and the report names them.
#[test]
fn quantized_verify_uses_bands_and_catches_a_swap() {
    for (src, name) in [
        ("llama-gqa", "gqa-q8_0.gguf"),
        ("llama-gqa", "gqa-q4_0.gguf"),
        ("llama-gqa", "gqa-q5_1.gguf"),
        ("llama-tied", "tied-q8_0.gguf"),
        // the embedding kept in F16 (llama.cpp's converter does so for some types): the source's
        // values rounded to f16 and nothing else
        ("llama-gqa", "q8_0-f16-embd.gguf"),
    ] {
        let (code, out, err) = ckpt(&[
            "verify",
            common::fixture(src).to_str().unwrap(),
            gguf(name).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("within the quantization bands"), "{out}");
        assert!(out.contains("NMSE"), "{out}");
    }
    let (code, out, err) = ckpt(&[
        "verify",
        common::fixture("gguf/k-src").to_str().unwrap(),
        gguf("k-mix.gguf").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["quant"]["over"], 0);
    assert!(j["logits"]["nmse"].as_f64().unwrap() > 0.0);
    // Swap the names of blk.0.attn_k and blk.0.attn_v (same length, shape and type).
    let mut bytes = std::fs::read(gguf("gqa-q8_0.gguf")).unwrap();
    let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat).unwrap();
    let k = find(&bytes, b"blk.0.attn_k.weight");
    let v = find(&bytes, b"blk.0.attn_v.weight");
    bytes[k + 11] = b'v';
    bytes[v + 11] = b'k';
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("swapped.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, out, err) = ckpt(&[
        "verify",
        common::fixture("llama-gqa").to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("k_proj.weight (Q8_0): weight NMSE"), "{out}");
    assert!(out.contains("NOT equivalent"), "{out}");
    let src = common::fixture("llama-gqa");
    // An F16 embedding that is not the source's rounded: not equivalent, though within the bands.
    let (code, out, err) = ckpt(&[
        "verify",
        src.to_str().unwrap(),
        gguf("q8_0-f16-embd-changed.gguf").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("NOT equivalent (a tensor that is not quantized differs")
            && out.contains("not the other side's values rounded to it: model.embed_tokens.weight"),
        "{out}"
    );
    // A type ckpt cannot decode (IQ4_NL): its bytes differing says nothing, and the logits cannot
    // run, so the run is inconclusive (exit 2), never "not equivalent".
    let (code, out, err) = ckpt(&[
        "verify",
        src.to_str().unwrap(),
        gguf("iq4_nl-undecoded.gguf").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("verdict: inconclusive"), "{out}");
    // diff --values says which it could not compare (the 15 IQ4_NL matrices), not only how many
    // of the others differ (the F16 embedding).
    let (code, out, err) = ckpt(&[
        "diff",
        src.to_str().unwrap(),
        gguf("iq4_nl-undecoded.gguf").to_str().unwrap(),
        "--values",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("15 not compared by value"), "{out}");
}

/// `--outtype f16` / `bf16` of an f32 source, llama.cpp's default conversion: every value is the
/// source's rounded to nearest even, so the file is the source stored in F16 / BF16 ("equivalent up
/// to the rounding", either order, logits within the type's band), not "NOT equivalent" for
/// differing from f32 by the rounding. The same F16 file with one matrix truncated toward zero
/// (logits within the F16 band all the same) is not the source's rounding, and verify names it;
/// a stated tolerance switches the bands off (the exact comparison, within that tolerance).
#[test]
fn float_rounding_to_f16_or_bf16_is_checked_exactly() {
    let src = common::fixture("llama-gqa");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for (name, ty) in [("gqa-f16-rounded", "F16"), ("gqa-bf16-rounded", "BF16")] {
        let f = gguf(&format!("{name}.gguf"));
        for (a, b) in [(s(&src), s(&f)), (s(&f), s(&src))] {
            let (code, out, err) = ckpt(&["verify", &a, &b]);
            assert_eq!(code, 0, "{name}: {out}{err}");
            assert!(
                out.contains(&format!(
                    "16 float tensors stored as {ty}: every value exactly"
                )) && out.contains(&format!(
                    "verdict: equivalent up to the rounding to {ty} (docs/GGUF.md)"
                )),
                "{out}"
            );
        }
        let (code, out, _) = ckpt(&["verify", &s(&src), &s(&f), "--json"]);
        assert_eq!(code, 0, "{out}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["verdict"], "equivalent");
        assert_eq!(j["quant"]["rounded"].as_array().unwrap().len(), 16);
        let nmse = j["logits"]["nmse"].as_f64().unwrap();
        let band = j["quant"]["logits_band"].as_f64().unwrap();
        assert!(nmse > 0.0 && nmse <= band, "{nmse} {band}");
    }
    let bad = gguf("gqa-f16-truncated.gguf");
    let (code, out, err) = ckpt(&["verify", &s(&src), &s(&bad)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("rounded    FAIL  15 float tensors stored as F16")
            && out.contains(
                "1 not (values changed beyond the rounding): model.layers.0.self_attn.v_proj.weight"
            )
            && out.contains("NOT equivalent (a tensor that is not quantized differs"),
        "{out}"
    );
    assert!(out.contains("logits     PASS"), "{out}");
    // With a tolerance stated, the exact comparison within it.
    let f16 = s(&gguf("gqa-f16-rounded.gguf"));
    let (code, out, _) = ckpt(&["verify", &s(&src), &f16, "--rtol", "1e-2"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("rounded    PASS") && out.contains("logits agree within the tolerance"),
        "{out}"
    );
}

/// Files written by llama.cpp's own converter (`convert_hf_to_gguf.py` of the pinned
/// llama-cpp-python sdist, `scripts/make_converter_fixtures.sh`) from the Hugging Face fixtures,
/// verified against their sources as a user who ran the converter would: each verdict is the one
/// the file earns, from exact to refused.
#[test]
fn llama_cpp_converter_outputs_get_the_verdict_they_earn() {
    for (src, file, code, want) in [
        // llama3 rope scaling written as the converter writes it (`rope_freqs`)
        (
            "llama3-scaling",
            "llama3-scaling-f32",
            0,
            "verdict: equivalent\n",
        ),
        (
            "llama-tied",
            "llama-tied-q8_0",
            0,
            "verdict: equivalent within the quantization bands",
        ),
        // the converter's default outtype, and BF16
        (
            "qwen2",
            "qwen2-f16",
            0,
            "verdict: equivalent up to the rounding to F16",
        ),
        (
            "qwen3",
            "qwen3-bf16",
            0,
            "verdict: equivalent up to the rounding to BF16",
        ),
        // `phi3`: fused attn_qkv and ffn_up split back; half of each head rotated
        (
            "phi3",
            "phi3-q8_0",
            0,
            "verdict: equivalent within the quantization bands",
        ),
        (
            "phi3-partial",
            "phi3-partial-f32",
            0,
            "verdict: equivalent\n",
        ),
        // a sliding window llama.cpp's llama graph does not apply: not the source's model
        (
            "mistral-window",
            "mistral-window-q8_0",
            1,
            "verdict: NOT equivalent (structure differs; logits differ)",
        ),
    ] {
        let f = gguf(&format!("converter/{file}.gguf"));
        let (got, out, err) = ckpt(&[
            "verify",
            common::fixture(src).to_str().unwrap(),
            f.to_str().unwrap(),
        ]);
        assert_eq!(got, code, "{file}: {out}{err}");
        assert!(out.contains(want), "{file}: {out}");
    }
    // llama.cpp's own quantizer (`llama-quantize`, its default mixes) on the converter's F16 of
    // k-src: the K-quant blocks with the scales llama.cpp picks, within the bands.
    for (file, types) in [
        ("k-src-q4_k_m", "(Q4_K, Q6_K)"),
        ("k-src-q2_k", "(Q2_K, Q3_K, Q6_K)"),
    ] {
        let f = gguf(&format!("converter/{file}.gguf"));
        let (code, out, err) = ckpt(&[
            "verify",
            common::fixture("gguf/k-src").to_str().unwrap(),
            f.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(
            out.contains(&format!("tensors quantized {types}"))
                && out.contains("verdict: equivalent within the quantization bands"),
            "{file}: {out}"
        );
    }
    // The phi3 file back to a Phi-3 directory: q/k/v and gate/up fused again, bit for bit the
    // source's tensors (the padding id read from the file, so Phi-3's class default does not
    // apply); to LLaMA it is refused (half of each head rotates).
    let t = tempfile::tempdir().unwrap();
    let f = gguf("converter/phi3-partial-f32.gguf");
    let dst = t.path().join("phi3");
    let (code, out, err) = ckpt(&[
        "convert",
        f.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--to",
        "phi3",
        "--verify",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ckpt(&[
        "diff",
        common::fixture("phi3-partial").to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    assert!(out.contains("(21 same)"), "{code} {out}{err}");
    let llama = t.path().join("llama");
    let (code, _, err) = ckpt(&[
        "convert",
        f.to_str().unwrap(),
        llama.to_str().unwrap(),
        "--to",
        "llama",
    ]);
    assert!(
        code == 2 && err.contains("8 dimensions of each head rotate"),
        "{err}"
    );
    assert!(!llama.exists());
    // An architecture ckpt does not compute (`gemma`, whose norms the converter stores as 1 + w):
    // detected as such and refused, not read as any family whose names fit.
    let f = gguf("converter/gemma-f16.gguf");
    let (code, out, err) = ckpt(&[
        "verify",
        common::fixture("gemma").to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("gguf-gemma"), "{err}");
}

/// `check` judges releases against LLaMA loaders' rules (llama.cpp through its converter); a GGUF
/// file, which llama.cpp runs as it is, is refused with exit 2 instead of "will not load in
/// llama.cpp", for every target.
#[test]
fn check_refuses_gguf_files() {
    for name in ["gqa-f32.gguf", "gqa-q8_0.gguf"] {
        let p = gguf(name);
        for target in ["llama", "llama.cpp", "transformers"] {
            let (code, out, err) = ckpt(&["check", p.to_str().unwrap(), "--target", target]);
            assert_eq!(code, 2, "{name} {target}: {out}{err}");
            assert!(!out.contains("will not load"), "{out}");
            assert!(err.contains(name) && err.contains("GGUF"), "{err}");
        }
    }
}

/// Back to safetensors: the f32 GGUF converts to a LLaMA directory whose tensors are the source's
/// bytes; a quantized file is refused with the reason.
#[test]
fn convert_back_is_bit_exact_and_quantized_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("back");
    let (code, so, se) = ckpt(&[
        "convert",
        gguf("gqa-f32.gguf").to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "llama",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{so}{se}");
    let a = Checkpoint::open(common::fixture("llama-gqa")).unwrap();
    let b = Checkpoint::open(&out).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let u = b
            .get(&t.name)
            .unwrap_or_else(|| panic!("missing {}", t.name));
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{}", t.name);
        assert_eq!(a.data(t).unwrap(), b.data(u).unwrap(), "{}", t.name);
    }
    let cfg = b.config.as_ref().unwrap();
    assert_eq!(cfg.num_key_value_heads, Some(2));
    assert_eq!(cfg.rms_norm_eps, Some(1e-5));
    assert_eq!(cfg.model_type.as_deref(), Some("llama"));
    let out2 = tmp.path().join("q");
    let (code, so, se) = ckpt(&[
        "convert",
        gguf("gqa-q8_0.gguf").to_str().unwrap(),
        out2.to_str().unwrap(),
        "--to",
        "llama",
    ]);
    assert_eq!(code, 2, "{so}{se}");
    assert!(se.contains("Q8_0"), "{se}");
    assert!(!out2.exists());
}

/// Malformed GGUFs through every command that reads them: exit 2, an error naming the file, no
/// panic.
#[test]
fn hostile_ggufs_are_refused_without_panic() {
    let dir = gguf("hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{} hostile files", files.len());
    let valid = common::fixture("llama-gqa");
    for f in &files {
        let p = f.to_str().unwrap();
        // A well-formed file of another architecture is listed (see
        // `other_gguf_architectures_are_read_but_never_computed_as_llama`), never computed.
        let other_arch = f.ends_with("arch-gemma.gguf");
        if other_arch {
            assert_eq!(ckpt(&["inspect", p]).0, 0, "{p}");
            assert_eq!(ckpt(&["detect", p]).0, 1, "{p}");
        }
        let listing = [vec!["inspect", p], vec!["detect", p]];
        for args in [
            vec!["logits", p, "--ids", "1,2"],
            vec!["verify", valid.to_str().unwrap(), p],
        ]
        .into_iter()
        .chain(listing.into_iter().filter(|_| !other_arch))
        {
            let (code, out, err) = ckpt(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(
                !err.contains("panicked") && !err.contains("error[internal]"),
                "{err}"
            );
            let fname = Path::new(p).file_name().unwrap().to_str().unwrap();
            assert!(
                err.contains(fname),
                "{args:?}: error does not name the file: {err}"
            );
        }
    }
}

/// A split GGUF (gguf-py's `split_max_tensors`, named as llama-gguf-split names the parts) is read
/// from its first part as llama.cpp reads it: every part one shard, the first part's metadata. It
/// is then the unsplit file. A later part given alone, a missing or miscounted part, a first part
/// under another name and a wrong tensor count are refused with the reason, exit 2.
#[test]
fn a_split_gguf_is_read_from_its_first_part() {
    let first = gguf("gqa-q8_0-split-00001-of-00002.gguf");
    let second = gguf("gqa-q8_0-split-00002-of-00002.gguf");
    let whole = gguf("gqa-q8_0.gguf");
    let (code, out, err) = ckpt(&["inspect", first.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 files") && out.contains("tensors     21"),
        "{out}"
    );
    let (code, out, err) = ckpt(&["verify", first.to_str().unwrap(), whole.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("21/21 tensors identical"), "{out}");
    assert!(out.contains("max abs 0.000e0"), "{out}");
    // The same logits as the unsplit file, bit for bit.
    let reg = Registry::builtin().unwrap();
    let batch = vec![vec![1u32, 5, 9, 200, 3]];
    let run = |p: &Path| {
        let ck = Checkpoint::open(p).unwrap();
        let (view, fam) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
        assert_eq!(fam, "llama-gguf");
        ckpt::reference::forward(&view, &batch, kernels::active_isa())
            .unwrap()
            .data
    };
    let (a, b) = (run(&first), run(&whole));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));

    // A later part alone: refused, naming the first part.
    let (code, _, err) = ckpt(&["inspect", second.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("part 2 of 2 of a split GGUF"), "{err}");
    assert!(
        err.contains("`gqa-q8_0-split-00001-of-00002.gguf`"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let (b1, b2) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    let refused = |p: &Path, needles: &[&str]| {
        for args in [vec!["inspect"], vec!["logits", "--ids", "1,2"]] {
            let mut args = args.clone();
            args.insert(1, p.to_str().unwrap());
            let (code, out, err) = ckpt(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            for n in needles {
                assert!(err.contains(n), "{args:?}: {n}: {err}");
            }
            assert!(
                !err.contains("panicked") && !err.contains("internal"),
                "{err}"
            );
        }
    };
    // The second part missing: the error names the file it looked for.
    let lone = put("m-00001-of-00002.gguf", &b1);
    refused(
        &lone,
        &["m-00002-of-00002.gguf", "part 2 of 2 of the split GGUF"],
    );
    // The first part under another name: the others cannot be found.
    let renamed = put("model.gguf", &b1);
    refused(
        &renamed,
        &["model.gguf", "does not end in `-00001-of-00002.gguf`"],
    );
    // The first part twice: the second file says it is part 1, not 2.
    put("d-00001-of-00002.gguf", &b1);
    let twice = put("d-00002-of-00002.gguf", &b1);
    refused(
        &tmp.path().join("d-00001-of-00002.gguf"),
        &[
            "d-00002-of-00002.gguf",
            "should be part 2 of 2",
            "split.no = 0",
        ],
    );
    drop(twice);
    // `split.tensors.count` that disagrees with the parts (21 -> 20, the low byte of the integer).
    let mut miscounted = b1.clone();
    let key = b"split.tensors.count";
    let at = miscounted
        .windows(key.len())
        .position(|w| w == key)
        .unwrap();
    let value = at + key.len() + 4; // after the 4-byte value type
    assert_eq!(miscounted[value], 21);
    miscounted[value] = 20;
    let c1 = put("c-00001-of-00002.gguf", &miscounted);
    put("c-00002-of-00002.gguf", &b2);
    refused(&c1, &["split.tensors.count", "hold 21 tensors"]);
    // `split.count` 0, as `llama-gguf-split --merge` writes into the merged file: one whole file
    // (here the first part's 12 tensors alone, named for what they are).
    let mut merged = b1.clone();
    let key = b"split.count";
    let at = merged.windows(key.len()).position(|w| w == key).unwrap();
    let value = at + key.len() + 4;
    assert_eq!(merged[value], 2);
    merged[value] = 0;
    let m = put("merged.gguf", &merged);
    let (code, out, err) = ckpt(&["inspect", m.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 file") && out.contains("tensors     12"),
        "{out}"
    );
    // A directory of GGUF files is not a checkpoint: the hint names the file to give, the first
    // part for a split one.
    for (files, needle) in [
        (
            vec![&first, &second],
            "give its first part, `gqa-q8_0-split-00001-of-00002.gguf`",
        ),
        (vec![&whole], "give the file, `gqa-q8_0.gguf`"),
    ] {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(f, d.path().join(f.file_name().unwrap())).unwrap();
        }
        let (code, _, err) = ckpt(&["inspect", d.path().to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Both parts beside each other under the llama.cpp names: read.
    let ok = put("ok-00001-of-00002.gguf", &b1);
    put("ok-00002-of-00002.gguf", &b2);
    assert_eq!(ckpt(&["logits", ok.to_str().unwrap(), "--ids", "1,2"]).0, 0);
}

/// A GGUF without tensors (what `convert_hf_to_gguf.py --vocab-only` writes: metadata and the
/// vocabulary) is listed, and every command that needs weights says there are none, exit 2,
/// instead of "cannot tell which family" with a `--family` hint that cannot help.
#[test]
fn a_gguf_without_tensors_is_named_as_such() {
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(4u64.to_le_bytes()); // key/values
    let key = |b: &mut Vec<u8>, k: &str| {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
    };
    key(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    for (k, v) in [
        ("llama.block_count", 2u32),
        ("llama.embedding_length", 64),
        ("llama.attention.head_count", 4),
    ] {
        key(&mut b, k);
        b.extend(4u32.to_le_bytes()); // uint32
        b.extend(v.to_le_bytes());
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("vocab-only.gguf");
    std::fs::write(&p, &b).unwrap();
    let f = p.to_str().unwrap();
    let (code, out, err) = ckpt(&["inspect", f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 tensors"), "{out}");
    let (_, out, _) = ckpt(&["detect", f]);
    assert!(out.contains("holds no tensors"), "{out}");
    for args in [
        vec!["logits", f, "--ids", "1,2"],
        vec!["convert", f, tmp.path().join("out").to_str().unwrap()],
        vec!["logits", f, "--ids", "1,2", "--family", "llama-gguf"],
    ] {
        let (code, out, err) = ckpt(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("vocab-only.gguf") && err.contains("holds no tensors"),
            "{err}"
        );
        assert!(err.contains("--vocab-only"), "{err}");
        assert!(!err.contains("--family FAMILY"), "{err}");
    }
    assert!(!tmp.path().join("out").exists());
}

/// The gqa-q8_0 fixture with `general.architecture` rewritten to another five-letter name (every
/// `blk.N` name and metadata key still llama's).
fn relabelled(arch: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(gguf("gqa-q8_0.gguf")).unwrap();
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    // value: type (u32, 8 = string), length (u64), then the bytes
    assert_eq!(&bytes[at + 12..at + 17], b"llama");
    bytes[at + 12..at + 17].copy_from_slice(arch.as_bytes());
    // the metadata keys follow the architecture (`llama.block_count` -> `gemma.block_count`)
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"llama.") {
            out.extend_from_slice(arch.as_bytes());
            out.push(b'.');
            i += 6;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// A GGUF of an architecture ckpt does not compute (the gqa-q8_0 fixture relabelled `gemma`, every
/// `blk.N` name still llama's): inspect and diff read it; detection names the architecture and
/// does not assume LLaMA although every name fits; computing and converting refuse.
#[test]
fn other_gguf_architectures_are_read_but_never_computed_as_llama() {
    let bytes = relabelled("gemma");
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("gemma.gguf");
    std::fs::write(&f, &bytes).unwrap();
    let p = f.to_str().unwrap();
    let (code, out, err) = ckpt(&["inspect", p]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("model_type=gguf-gemma") && out.contains("blk.0.attn_q.weight"),
        "{out}"
    );
    let (code, out, _) = ckpt(&["diff", p, gguf("gqa-q8_0.gguf").to_str().unwrap()]);
    assert!(out.contains("blk.0.attn_q.weight"), "{code} {out}");
    let (code, out, _) = ckpt(&["detect", p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("none detected") && out.contains("gguf-gemma"),
        "{out}"
    );
    for cmd in [
        vec!["logits", p, "--ids", "1,2"],
        vec![
            "convert",
            p,
            t.path().join("out").to_str().unwrap(),
            "--to",
            "llama",
        ],
    ] {
        let (code, _, err) = ckpt(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(err.contains("gguf-gemma"), "{cmd:?}: {err}");
    }
    assert!(!t.path().join("out").exists());
}

/// The same tensors under the same names, dtypes, shapes and bytes in both checkpoints.
fn assert_same_tensors(a: &Path, b: &Path) {
    let a = Checkpoint::open(a).unwrap();
    let b = Checkpoint::open(b).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let u = b
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{}", t.name);
        assert!(a.data(t).unwrap() == b.data(u).unwrap(), "{}", t.name);
    }
}

/// llama.cpp's `qwen2` architecture (conversion/qwen.py writes Hugging Face's rows unpermuted, and
/// its graph rotates them half-split, adding q/k/v biases when stored): the f32 file is the
/// source's bytes and logits, the Q8_0 one equivalent within its bands, and the f32 file converts
/// back to a Qwen2 directory whose tensors are the source's, bit for bit. A llama file relabelled
/// `qwen2` computes what llama.cpp's qwen2 graph makes of it (its q/k rows are in llama's
/// interleaved order, which that graph does not undo): not the llama model.
#[test]
fn qwen2_gguf_computes_llama_cpp_s_qwen2_graph() {
    let src = common::fixture("qwen2");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (code, out, err) = ckpt(&["verify", &s(&src), &s(&gguf("qwen2-f32.gguf"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("28/28 tensors identical") && out.contains("verdict: equivalent"),
        "{out}"
    );
    let (code, out, err) = ckpt(&["verify", &s(&src), &s(&gguf("qwen2-q8_0.gguf"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("verdict: equivalent within the quantization bands"),
        "{out}"
    );
    // Back to a Hub directory of the source's family.
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("qwen2");
    let (code, out, err) = ckpt(&[
        "convert",
        &s(&gguf("qwen2-f32.gguf")),
        &s(&dst),
        "--to",
        "qwen2",
        "--verify",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_same_tensors(&src, &dst);
    let (code, out, _) = ckpt(&["detect", &s(&dst)]);
    assert!(code == 0 && out.contains("family      qwen2 "), "{out}");
    // A llama file relabelled `qwen2`: read as llama.cpp's qwen2 graph reads it, which is not the
    // llama model (its logits differ), and `verify` says so.
    let f = t.path().join("relabelled.gguf");
    std::fs::write(&f, relabelled("qwen2")).unwrap();
    let (code, out, _) = ckpt(&["detect", &s(&f)]);
    assert!(code == 0 && out.contains("family      qwen2-gguf"), "{out}");
    let (code, out, err) = ckpt(&["verify", &s(&gguf("gqa-q8_0.gguf")), &s(&f)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("verdict: NOT equivalent"), "{out}");
}

/// llama.cpp's `qwen3` architecture (conversion/qwen.py's Qwen3Model: rows unpermuted, per-head
/// `attn_q_norm`/`attn_k_norm`): the f32 file is the source's bytes and logits and converts back to
/// a Qwen3 directory bit for bit; a file whose heads x head size is twice its width (as
/// Qwen3-0.6B) in Q8_0 is equivalent to its source within the bands; converting to LLaMA, which
/// has no q/k norm, is refused and writes nothing.
#[test]
fn qwen3_gguf_computes_llama_cpp_s_qwen3_graph() {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let src = common::fixture("qwen3");
    let n = Checkpoint::open(&src).unwrap().tensors.len();
    let (code, out, err) = ckpt(&["verify", &s(&src), &s(&gguf("qwen3-f32.gguf"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{n}/{n} tensors identical")) && out.contains("verdict: equivalent"),
        "{out}"
    );
    let wide = gguf("qwen3-wide-src");
    let (code, out, err) = ckpt(&["verify", &s(&wide), &s(&gguf("qwen3-wide-q8_0.gguf"))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("verdict: equivalent within the quantization bands"),
        "{out}"
    );
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("qwen3");
    let f32_file = s(&gguf("qwen3-f32.gguf"));
    let (code, out, err) = ckpt(&["convert", &f32_file, &s(&dst), "--to", "qwen3", "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_same_tensors(&src, &dst);
    let (code, out, _) = ckpt(&["detect", &s(&dst)]);
    assert!(code == 0 && out.contains("family      qwen3 "), "{out}");
    let llama = t.path().join("llama");
    let (code, out, err) = ckpt(&["convert", &f32_file, &s(&llama), "--to", "llama"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("q_norm"), "{err}");
    assert!(!llama.exists());
}

/// A checkpoint given as one file brings nothing else of its directory along, so the output may be
/// created next to it, inside that directory; an output that is or contains that directory is
/// still refused (replacing it would delete the source).
#[test]
fn convert_writes_next_to_a_single_file_source_but_never_over_it() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("model.gguf");
    std::fs::copy(gguf("gqa-f32.gguf"), &f).unwrap();
    let before = std::fs::read(&f).unwrap();
    let out = t.path().join("hf");
    let (code, _, err) = ckpt(&[
        "convert",
        f.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "llama",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.join("model.safetensors").exists() && out.join("config.json").exists());
    // (Only the temporary directory itself: a broken guard must not be able to reach further.)
    let dst = t.path();
    let (code, _, err) = ckpt(&[
        "convert",
        f.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--to",
        "llama",
        "--force",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("contains the source"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), before);
}

/// Rotary metadata is read as llama.cpp reads it: a scaling factor without a type (or under the
/// older `rope.scale_linear`) is linear scaling, so such a file is not the unscaled source model;
/// a key llama.cpp computes with that ckpt does not model (`rope.scaling.attn_factor`, which
/// scales q and k) is listed by `inspect` and refused by name by every command that computes.
#[test]
fn rotary_metadata_is_read_as_llama_cpp_reads_it() {
    let src = common::fixture("llama-gqa");
    for name in ["rope-factor-q8_0", "rope-scale-linear-q8_0"] {
        let p = gguf(&format!("{name}.gguf"));
        let (code, out, err) = ckpt(&["inspect", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("linear"), "{name}: {out}");
        // Not the source model: a verdict of equivalence would be false.
        let (code, out, err) = ckpt(&["verify", src.to_str().unwrap(), p.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(!out.contains("verdict: equivalent"), "{out}");
    }
    let p = gguf("attn-factor-q8_0.gguf");
    let p = p.to_str().unwrap();
    let (code, out, err) = ckpt(&["inspect", p]);
    assert_eq!(code, 0, "{err}");
    let (code, out2, _) = ckpt(&["detect", p]);
    assert_eq!(code, 1, "{out}{out2}");
    assert!(
        out2.contains("gguf.llama.rope.scaling.attn_factor"),
        "{out2}"
    );
    for args in [
        vec!["logits", p, "--ids", "1,2"],
        vec!["verify", src.to_str().unwrap(), p],
    ] {
        // verify: inconclusive, exit 2, the reason in its report
        let (code, out, err) = ckpt(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            format!("{out}{err}").contains("`gguf.llama.rope.scaling.attn_factor` = 1.5"),
            "{args:?}: {out}{err}"
        );
    }
}

/// llama.cpp's loader reads each hyperparameter key as one GGUF type and refuses a file that
/// stores it as another ("key ... has wrong type"), even an integer of the same width: ckpt reads
/// none of those files either (it used to accept any integer or float width). The files are
/// gguf-py's, with one key's type code patched in place (same value width).
#[test]
fn metadata_of_a_type_llama_cpp_refuses_is_refused() {
    let bytes = std::fs::read(gguf("gqa-f32.gguf")).unwrap();
    let t = tempfile::tempdir().unwrap();
    // (key, its type code in the file, the code patched in, the names in the message)
    for (key, from, to, names) in [
        ("llama.block_count", 4u32, 5u32, ("i32", "u32")),
        ("llama.context_length", 4, 6, ("f32", "u32")),
        ("llama.rope.freq_base", 6, 4, ("u32", "f32")),
        (
            "llama.attention.layer_norm_rms_epsilon",
            6,
            5,
            ("i32", "f32"),
        ),
    ] {
        let mut patched = bytes.clone();
        let mut pat = (key.len() as u64).to_le_bytes().to_vec();
        pat.extend(key.as_bytes());
        let at = patched
            .windows(pat.len())
            .position(|w| w == pat.as_slice())
            .unwrap_or_else(|| panic!("{key} not in the fixture"))
            + pat.len();
        assert_eq!(patched[at..at + 4], from.to_le_bytes(), "{key}");
        patched[at..at + 4].copy_from_slice(&to.to_le_bytes());
        let p = t.path().join(format!("{key}.gguf"));
        std::fs::write(&p, &patched).unwrap();
        let (code, _, err) = ckpt(&["logits", p.to_str().unwrap(), "--ids", "1,2"]);
        assert_eq!(code, 2, "{key}: {err}");
        let want = format!("metadata key \"{key}\" is {} ", names.0);
        assert!(
            err.contains(&want) && err.contains(&format!("llama.cpp reads {} only", names.1)),
            "{key}: {err}"
        );
    }
}
