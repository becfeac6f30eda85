//! Mapping files and views: every fixture family to canonical LLaMA and back, byte for byte; the
//! canonical bytes against the fixture script's transforms; and each mapping-file error.

use ckpt::Checkpoint;
use ckpt::mapping::{Registry, RenameRule, canonical_view, to_family};

mod common;

fn fixture(name: &str) -> Checkpoint {
    Checkpoint::open(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn round_trip_reproduces_every_tensor() {
    let reg = Registry::builtin().unwrap();
    for (case, fam) in common::llama_exact_fixtures() {
        let ck = fixture(case);
        let f = reg.get(fam).unwrap();
        let canon = canonical_view(&ck, f, &[]).unwrap_or_else(|e| panic!("{case}: {e}"));
        let back = to_family(&canon, f).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(back.tensors.len(), ck.tensors.len(), "{case}");
        for t in &ck.tensors {
            let vt = back
                .get(&t.name)
                .unwrap_or_else(|| panic!("{case}: {} missing", t.name));
            assert_eq!(vt.shape, t.shape, "{case} {}", t.name);
            assert_eq!(
                &*back.read(vt).unwrap(),
                ck.data(t).unwrap(),
                "{case} {}",
                t.name
            );
            assert!(
                vt.is_whole_tensor(&ck).is_some(),
                "{case} {}: segments not merged back",
                t.name
            );
        }
    }
}

/// (name, shape) of every tensor of a view, sorted.
fn set_of(v: &ckpt::mapping::View) -> Vec<(String, Vec<usize>)> {
    let mut s: Vec<_> = v
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    s.sort();
    s
}

fn canon<'a>(ck: &'a Checkpoint, reg: &Registry, fam: &str) -> ckpt::mapping::View<'a> {
    canonical_view(ck, reg.get(fam).unwrap(), &[]).unwrap()
}

#[test]
fn canonical_tensor_sets_are_llamas() {
    let reg = Registry::builtin().unwrap();
    let gqa = fixture("llama-gqa");
    let mha = fixture("llama-mha");
    let want_gqa = set_of(&canon(&gqa, &reg, "llama"));
    let want_mha = set_of(&canon(&mha, &reg, "llama"));
    for (case, fam) in [
        ("yi", "yi"),
        ("llama-meta", "llama-meta"),
        ("mistral", "mistral"),
        ("phi3", "phi3"),
        ("internlm2", "internlm2"),
    ] {
        let ck = fixture(case);
        assert_eq!(set_of(&canon(&ck, &reg, fam)), want_gqa, "{case}");
    }
    let bc = fixture("baichuan");
    assert_eq!(set_of(&canon(&bc, &reg, "baichuan")), want_mha);
    // qwen2: tied (no lm_head) and q/k/v biases plus the zero o_proj bias LLaMA's attention_bias implies.
    let q = fixture("qwen2");
    let mut want: Vec<_> = want_gqa
        .iter()
        .filter(|(n, _)| n != "lm_head.weight")
        .cloned()
        .collect();
    for i in 0..2 {
        for (p, rows) in [("q", 64), ("k", 32), ("v", 32), ("o", 64)] {
            want.push((
                format!("model.layers.{i}.self_attn.{p}_proj.bias"),
                vec![rows],
            ));
        }
    }
    want.sort();
    let qv = canon(&q, &reg, "qwen2");
    assert_eq!(set_of(&qv), want);
    let ob = qv.get("model.layers.1.self_attn.o_proj.bias").unwrap();
    assert_eq!(ob.transform, "zeros");
    assert!(qv.read(ob).unwrap().iter().all(|&b| b == 0));
    assert_eq!(qv.read(ob).unwrap().len(), 64 * 4);
}

/// Rows `r` of a physical tensor, as bytes.
fn rows(ck: &Checkpoint, name: &str, r: std::ops::Range<usize>) -> Vec<u8> {
    let t = ck.get(name).unwrap();
    let rb = t.nbytes() / t.shape[0];
    ck.data(t).unwrap()[r.start * rb..r.end * rb].to_vec()
}

fn canon_bytes(v: &ckpt::mapping::View, name: &str) -> Vec<u8> {
    v.read(v.get(name).unwrap()).unwrap().into_owned()
}

#[test]
fn yi_canonical_bytes_are_the_renamed_norms() {
    let reg = Registry::builtin().unwrap();
    let ck = fixture("yi");
    let v = canon(&ck, &reg, "yi");
    for i in 0..2 {
        assert_eq!(
            canon_bytes(&v, &format!("model.layers.{i}.input_layernorm.weight")),
            rows(&ck, &format!("model.layers.{i}.ln1.weight"), 0..64)
        );
        assert_eq!(
            canon_bytes(
                &v,
                &format!("model.layers.{i}.post_attention_layernorm.weight")
            ),
            rows(&ck, &format!("model.layers.{i}.ln2.weight"), 0..64)
        );
    }
}

/// The fixture script's `permute_meta_to_hf` (transformers' converter), written as index arithmetic:
/// `w.view(n, d1/n/2, 2, d2).transpose(1, 2)`: output (h, a, b) = input (h, b, a).
fn script_meta_to_hf(ck: &Checkpoint, name: &str, n: usize) -> Vec<u8> {
    let t = ck.get(name).unwrap();
    let (d1, half) = (t.shape[0], t.shape[0] / n / 2);
    let mut out = Vec::new();
    for h in 0..n {
        for a in 0..2 {
            for b in 0..half {
                let src = h * (d1 / n) + b * 2 + a;
                out.extend(rows(ck, name, src..src + 1));
            }
        }
    }
    out
}

/// The script's `permute_hf_to_meta` applied to Meta rows: the wrong direction for reading Meta.
fn script_hf_to_meta(ck: &Checkpoint, name: &str, n: usize) -> Vec<u8> {
    let t = ck.get(name).unwrap();
    let (d1, half) = (t.shape[0], t.shape[0] / n / 2);
    let mut out = Vec::new();
    for h in 0..n {
        for b in 0..half {
            for a in 0..2 {
                let src = h * (d1 / n) + a * half + b;
                out.extend(rows(ck, name, src..src + 1));
            }
        }
    }
    out
}

#[test]
fn meta_rotary_permutation_matches_the_hf_converter_direction() {
    let reg = Registry::builtin().unwrap();
    let ck = fixture("llama-meta");
    let v = canon(&ck, &reg, "llama-meta");
    for i in 0..2 {
        for (m, hf, n) in [("wq", "q_proj", 4), ("wk", "k_proj", 2)] {
            let meta = format!("layers.{i}.attention.{m}.weight");
            let got = canon_bytes(&v, &format!("model.layers.{i}.self_attn.{hf}.weight"));
            assert_eq!(got, script_meta_to_hf(&ck, &meta, n), "{meta}");
            // The opposite direction is a different permutation for head_dim 16: a wrong direction
            // would be caught here, not only by the forward pass.
            assert_ne!(got, script_hf_to_meta(&ck, &meta, n), "{meta}");
        }
        assert_eq!(
            canon_bytes(&v, &format!("model.layers.{i}.mlp.gate_proj.weight")),
            rows(&ck, &format!("layers.{i}.feed_forward.w1.weight"), 0..96)
        );
        assert_eq!(
            canon_bytes(&v, &format!("model.layers.{i}.mlp.up_proj.weight")),
            rows(&ck, &format!("layers.{i}.feed_forward.w3.weight"), 0..96)
        );
        assert_eq!(
            canon_bytes(&v, &format!("model.layers.{i}.mlp.down_proj.weight")),
            rows(&ck, &format!("layers.{i}.feed_forward.w2.weight"), 0..64)
        );
    }
    // un-permuting then re-permuting is the identity, and collapses back to whole tensors
    let back = to_family(&v, reg.get("llama-meta").unwrap()).unwrap();
    let wq = back.get("layers.0.attention.wq.weight").unwrap();
    assert_eq!(wq.segments.len(), 1);
    assert_eq!(wq.transform, "permute");
}

#[test]
fn fused_splits_match_the_fixture_script() {
    let reg = Registry::builtin().unwrap();
    // phi3: qkv_proj = cat([q, k, v]) with q 64 rows and k, v 32; gate_up_proj = cat([gate, up]).
    let ck = fixture("phi3");
    let v = canon(&ck, &reg, "phi3");
    let qkv = "model.layers.1.self_attn.qkv_proj.weight";
    assert_eq!(
        canon_bytes(&v, "model.layers.1.self_attn.q_proj.weight"),
        rows(&ck, qkv, 0..64)
    );
    assert_eq!(
        canon_bytes(&v, "model.layers.1.self_attn.k_proj.weight"),
        rows(&ck, qkv, 64..96)
    );
    assert_eq!(
        canon_bytes(&v, "model.layers.1.self_attn.v_proj.weight"),
        rows(&ck, qkv, 96..128)
    );
    let gu = "model.layers.1.mlp.gate_up_proj.weight";
    assert_eq!(
        canon_bytes(&v, "model.layers.1.mlp.gate_proj.weight"),
        rows(&ck, gu, 0..96)
    );
    assert_eq!(
        canon_bytes(&v, "model.layers.1.mlp.up_proj.weight"),
        rows(&ck, gu, 96..192)
    );
    // baichuan: W_pack = cat([q, k, v]), three equal blocks (MHA).
    let ck = fixture("baichuan");
    let v = canon(&ck, &reg, "baichuan");
    let w = "model.layers.0.self_attn.W_pack.weight";
    for (k, p) in ["q", "k", "v"].iter().enumerate() {
        assert_eq!(
            canon_bytes(&v, &format!("model.layers.0.self_attn.{p}_proj.weight")),
            rows(&ck, w, k * 64..(k + 1) * 64)
        );
    }
    // internlm2: wqkv viewed as (kv=2, g+2=4, hd=16, H): q = [:, :2], k = [:, 2], v = [:, 3].
    let ck = fixture("internlm2");
    let v = canon(&ck, &reg, "internlm2");
    let w = "model.layers.1.attention.wqkv.weight";
    let (g, hd) = (2, 16);
    let mut q = Vec::new();
    let (mut k, mut vv) = (Vec::new(), Vec::new());
    for j in 0..2 {
        let base = j * (g + 2) * hd;
        q.extend(rows(&ck, w, base..base + g * hd));
        k.extend(rows(&ck, w, base + g * hd..base + (g + 1) * hd));
        vv.extend(rows(&ck, w, base + (g + 1) * hd..base + (g + 2) * hd));
    }
    assert_eq!(canon_bytes(&v, "model.layers.1.self_attn.q_proj.weight"), q);
    assert_eq!(canon_bytes(&v, "model.layers.1.self_attn.k_proj.weight"), k);
    assert_eq!(
        canon_bytes(&v, "model.layers.1.self_attn.v_proj.weight"),
        vv
    );
    assert_eq!(
        canon_bytes(&v, "model.embed_tokens.weight"),
        rows(&ck, "model.tok_embeddings.weight", 0..256)
    );
    assert_eq!(
        canon_bytes(&v, "lm_head.weight"),
        rows(&ck, "output.weight", 0..256)
    );
}

#[test]
fn cross_family_conversion_through_canonical() {
    // yi -> canonical -> llama-meta: names and rows of Meta, config as params.json.
    let reg = Registry::builtin().unwrap();
    let ck = fixture("yi");
    let c = canon(&ck, &reg, "yi");
    let meta = to_family(&c, reg.get("llama-meta").unwrap()).unwrap();
    assert!(meta.get("layers.0.attention.wq.weight").is_some());
    assert!(meta.get("layers.1.attention_norm.weight").is_some());
    let cfg = meta.config.as_ref().unwrap();
    assert_eq!(cfg.source, Some(ckpt::checkpoint::ConfigSource::ParamsJson));
    assert_eq!(cfg.raw.get("dim"), Some(&serde_json::json!(64)));
    assert_eq!(cfg.rope_theta, Some(5e6));
    // ... and to phi3: fused tensors concatenated from the canonical parts.
    let phi = to_family(&c, reg.get("phi3").unwrap()).unwrap();
    let qkv = phi.get("model.layers.0.self_attn.qkv_proj.weight").unwrap();
    assert_eq!(qkv.shape, vec![128, 64]);
    assert_eq!(qkv.transform, "concat");
    let mut want = canon_bytes(&c, "model.layers.0.self_attn.q_proj.weight");
    want.extend(canon_bytes(&c, "model.layers.0.self_attn.k_proj.weight"));
    want.extend(canon_bytes(&c, "model.layers.0.self_attn.v_proj.weight"));
    assert_eq!(phi.read(qkv).unwrap().into_owned(), want);
    // ... and to internlm2 (grouped interleave), then back to canonical bytes.
    let il = to_family(&c, reg.get("internlm2").unwrap()).unwrap();
    let w = il.get("model.layers.0.attention.wqkv.weight").unwrap();
    assert_eq!(w.transform, "interleave");
    let wb = il.read(w).unwrap().into_owned();
    let q = canon_bytes(&c, "model.layers.0.self_attn.q_proj.weight");
    let rb = 64 * 4;
    // group 0 = q heads 0,1 then k head 0 then v head 0
    assert_eq!(&wb[..32 * rb], &q[..32 * rb]);
    assert_eq!(
        &wb[32 * rb..48 * rb],
        &canon_bytes(&c, "model.layers.0.self_attn.k_proj.weight")[..16 * rb]
    );
    assert_eq!(
        il.config.as_ref().unwrap().model_type.as_deref(),
        Some("internlm2")
    );
    // qwen2's zero o_proj bias leaves again; a non-zero one cannot.
    let q2 = fixture("qwen2");
    let qc = canon(&q2, &reg, "qwen2");
    let back = to_family(&qc, reg.get("qwen2").unwrap()).unwrap();
    assert!(back.get("model.layers.0.self_attn.o_proj.bias").is_none());
    assert!(
        back.dropped
            .iter()
            .any(|(n, _)| n == "model.layers.0.self_attn.o_proj.bias")
    );
    let lb = fixture("llama-bias");
    let Err(e) = to_family(&canon(&lb, &reg, "llama"), reg.get("qwen2").unwrap()) else {
        panic!("non-zero o_proj bias or mlp bias must not be dropped silently");
    };
    assert!(
        e.to_string().contains("not all zeros") || e.to_string().contains("has no name"),
        "{e}"
    );
}

#[test]
fn config_is_rewritten_to_llama_keeping_order() {
    let reg = Registry::builtin().unwrap();
    let ck = fixture("yi");
    let v = canon(&ck, &reg, "yi");
    let c = v.config.as_ref().unwrap();
    assert_eq!(c.model_type.as_deref(), Some("llama"));
    assert_eq!(c.architectures, vec!["LlamaForCausalLM".to_string()]);
    assert!(c.raw.get("auto_map").is_none());
    assert_eq!(c.rope_theta, Some(5e6));
    let orig: Vec<&String> = ck
        .config
        .as_ref()
        .unwrap()
        .raw
        .keys()
        .filter(|k| *k != "auto_map")
        .collect();
    // Source keys keep their order; the portability keys (both RoPE spellings, bos/eos,
    // max_position_embeddings) are added next to them.
    let now: Vec<&String> = c.raw.keys().filter(|k| orig.contains(k)).collect();
    assert_eq!(orig, now, "key order kept");
    assert!(c.raw.contains_key("rope_theta") && c.raw.contains_key("rope_parameters"));
    // Back to yi: model_type and architectures restored.
    let back = to_family(&v, reg.get("yi").unwrap()).unwrap();
    assert_eq!(
        back.config.as_ref().unwrap().model_type.as_deref(),
        Some("Yi")
    );

    // internlm2: `bias` -> `attention_bias`, in place.
    let ck = fixture("internlm2");
    let v = canon(&ck, &reg, "internlm2");
    let c = v.config.as_ref().unwrap();
    assert!(c.raw.get("bias").is_none());
    assert_eq!(c.attention_bias, Some(false));
    let kpos = |c: &ckpt::checkpoint::ModelConfig, k: &str| c.raw.keys().position(|x| x == k);
    assert_eq!(
        kpos(c, "attention_bias"),
        kpos(ck.config.as_ref().unwrap(), "bias").map(|p| p - 1)
    );
    assert_eq!(c.rope_theta, Some(1e6));
    let back = to_family(&v, reg.get("internlm2").unwrap()).unwrap();
    assert_eq!(
        back.config.as_ref().unwrap().raw.get("bias"),
        Some(&serde_json::json!(false))
    );

    // baichuan: no rope_theta in the file -> 10000 in the llama config, removed again on the way back.
    let ck = fixture("baichuan");
    let v = canon(&ck, &reg, "baichuan");
    assert_eq!(v.config.as_ref().unwrap().rope_theta, Some(10000.0));
    let back = to_family(&v, reg.get("baichuan").unwrap()).unwrap();
    // The LLaMA config carries both RoPE spellings (mapping/portable.rs); they come back as the
    // defaults they are.
    let mut back_raw = back.config.as_ref().unwrap().raw.clone();
    assert_eq!(
        back_raw.shift_remove("rope_scaling"),
        Some(serde_json::Value::Null)
    );
    assert_eq!(
        back_raw.shift_remove("rope_parameters"),
        Some(serde_json::json!({"rope_type": "default", "rope_theta": 10000.0}))
    );
    assert_eq!(back_raw, {
        let mut m = ck.config.as_ref().unwrap().raw.clone();
        m.shift_remove("auto_map");
        m
    });

    // qwen2: attention_bias set because biases exist.
    let ck = fixture("qwen2");
    let c = canon(&ck, &reg, "qwen2").config.unwrap();
    assert_eq!(c.attention_bias, Some(true));
    assert_eq!(c.tie_word_embeddings, Some(true));

    // llama-meta: config.json generated from params.json and the shapes.
    let ck = fixture("llama-meta");
    let c = canon(&ck, &reg, "llama-meta").config.unwrap();
    assert_eq!(c.source, Some(ckpt::checkpoint::ConfigSource::ConfigJson));
    assert_eq!(c.model_type.as_deref(), Some("llama"));
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (Some(64), Some(2), Some(4), Some(2))
    );
    assert_eq!((c.intermediate_size, c.vocab_size), (Some(96), Some(256)));
    assert_eq!((c.rms_norm_eps, c.rope_theta), (Some(1e-5), Some(10000.0)));
    assert_eq!(c.tie_word_embeddings, Some(false));
    assert_eq!(c.hidden_act.as_deref(), Some("silu"));
    assert!(c.raw.get("multiple_of").is_none() && c.raw.get("dim").is_none());
}

/// Load `body` (after a valid header) as `bad.toml`; the error text.
fn load_err(body: &str) -> String {
    let text = format!("name = \"bad\"\nsummary = \"s\"\nexact = true\nsources = [\"x\"]\n{body}");
    let mut reg = Registry::builtin().unwrap();
    let e = reg.load_str(&text, "bad.toml").unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("bad.toml: "), "error must name the file: {s}");
    s
}

#[test]
fn mapping_file_errors_name_file_and_rule() {
    // unknown key (deny_unknown_fields), at top level and inside a table
    let e = load_err("colour = \"red\"\n[tensors]\n\"a\" = \"b\"\n");
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = load_err(
        "[[split]]\nfrom = \"a.{i}\"\ninto = [\"b.{i}\", \"c.{i}\"]\nrows = [\"q\", \"kv\"]\nsize = 3\n",
    );
    assert!(e.contains("unknown field `size`"), "{e}");
    // a name matched by two rules
    let e = load_err(
        "[tensors]\n\"model.layers.{i}.x.weight\" = \"model.layers.{i}.a.weight\"\n\"model.layers.0.x.weight\" = \"model.layers.0.b.weight\"\n",
    );
    assert!(e.contains("is also matched by rule"), "{e}");
    assert!(e.contains("[tensors] \"model.layers."), "{e}");
    // two sources onto one target
    let e = load_err(
        "[tensors]\n\"a.weight\" = \"model.norm.weight\"\n\"b.weight\" = \"model.norm.weight\"\n",
    );
    assert!(e.contains("two sources onto one target"), "{e}");
    assert!(
        e.contains("[tensors] \"a.weight\"") && e.contains("[tensors] \"b.weight\""),
        "{e}"
    );
    // ... also between a split part and a rename
    let e = load_err(
        "[tensors]\n\"l.{i}.q\" = \"model.layers.{i}.self_attn.q_proj.weight\"\n[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"model.layers.{i}.self_attn.q_proj.weight\", \"model.layers.{i}.self_attn.k_proj.weight\"]\nrows = [\"q\", \"kv\"]\n",
    );
    assert!(
        e.contains("two sources onto one target") && e.contains("[[split]] #1"),
        "{e}"
    );
    // placeholders that differ between sides
    let e = load_err("[tensors]\n\"l.{i}.ln1\" = \"model.norm.weight\"\n");
    assert!(
        e.contains("placeholders differ between the two sides"),
        "{e}"
    );
    assert!(e.contains("rule [tensors] \"l.{i}.ln1\""), "{e}");
    let e = load_err(
        "[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"q.{i}\", \"k.{e}\"]\nrows = [\"q\", \"kv\"]\n",
    );
    assert!(
        e.contains("placeholders differ") && e.contains("[[split]] #1"),
        "{e}"
    );
    // transforms with no inverse
    let e = load_err(
        "[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"q.{i}\", \"q.{i}\"]\nrows = [\"q\", \"q\"]\n",
    );
    assert!(
        e.contains("has no inverse") && e.contains("[[split]] #1"),
        "{e}"
    );
    let e = load_err(
        "[[permute]]\nfrom = \"l.{i}.wq\"\nto = \"q.{i}\"\nrope = \"blocked\"\nheads = \"heads\"\n",
    );
    assert!(
        e.contains("no inverse") || e.contains("known inverse"),
        "{e}"
    );
    assert!(e.contains("[[permute]] #1"), "{e}");
    let e = load_err(
        "[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"q.{i}\", \"k.{i}\", \"v.{i}\"]\nrows = [\"q\", \"kv\"]\n",
    );
    assert!(e.contains("3 parts but 2 row sizes"), "{e}");
    let e = load_err(
        "[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"q.{i}\", \"k.{i}\", \"v.{i}\"]\nrows = [\"kv\", \"q\", \"kv\"]\nlayout = \"grouped\"\n",
    );
    assert!(
        e.contains("grouped split is defined for query, key and value"),
        "{e}"
    );
    // sizes are named quantities, never numbers
    let e = load_err(
        "[[split]]\nfrom = \"l.{i}.qkv\"\ninto = [\"q.{i}\", \"k.{i}\"]\nrows = [\"4096\", \"q\"]\n",
    );
    assert!(e.contains("unknown size `4096`"), "{e}");
    // a base that does not exist, a non-exact family without a note
    let e = load_err("base = \"nope\"\n");
    assert!(e.contains("base family `nope` is not known"), "{e}");
    let mut reg = Registry::builtin().unwrap();
    let e = reg
        .load_str(
            "name = \"x\"\nsummary = \"s\"\nexact = false\nsources = [\"x\"]\nbase = \"llama\"\n",
            "x.toml",
        )
        .unwrap_err();
    assert!(e.to_string().contains("must say why in `note`"), "{e}");
    // a name already taken
    let e = reg
        .load_str(
            "name = \"yi\"\nsummary = \"s\"\nexact = true\nsources = [\"x\"]\nbase = \"llama\"\n",
            "y.toml",
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("family `yi` is already defined"),
        "{e}"
    );
    // patterns are input: a huge one is refused
    let huge = format!("[tensors]\n\"{}\" = \"b\"\n", "a".repeat(5000));
    assert!(load_err(&huge).contains("over the limit"));
}

fn tiny_dir(
    specs: &[(String, ckpt::checkpoint::header::Dtype, Vec<usize>)],
    config: serde_json::Value,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ckpt::synth::write_checkpoint(
        dir.path(),
        Some(&config),
        specs,
        1,
        ckpt::synth::Fill::Random(3),
    )
    .unwrap();
    dir
}

#[test]
fn view_time_errors_name_rule_file_and_tensor() {
    use ckpt::checkpoint::header::Dtype;
    use ckpt::synth::{Dims, llama_tensors};
    let reg = Registry::builtin().unwrap();
    let d = Dims {
        hidden: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        intermediate: 96,
        vocab: 256,
        tied: false,
    };
    // Phi-3 layout whose qkv_proj has the wrong number of rows for the config.
    let mut specs: Vec<_> = llama_tensors(&d, Dtype::F32, false)
        .into_iter()
        .filter(|s| !s.0.contains("q_proj") && !s.0.contains("k_proj") && !s.0.contains("v_proj"))
        .collect();
    specs.push((
        "model.layers.0.self_attn.qkv_proj.weight".into(),
        Dtype::F32,
        vec![120, 64],
    ));
    specs.push((
        "model.layers.1.self_attn.qkv_proj.weight".into(),
        Dtype::F32,
        vec![128, 64],
    ));
    let specs: Vec<_> = specs
        .into_iter()
        .flat_map(|s| {
            if s.0.contains("gate_proj") {
                vec![(s.0.replace("gate_proj", "gate_up_proj"), s.1, vec![192, 64])]
            } else if s.0.contains("up_proj") {
                vec![]
            } else {
                vec![s]
            }
        })
        .collect();
    let dir = tiny_dir(&specs, d.config_json("phi3", "Phi3ForCausalLM", "float32"));
    let ck = Checkpoint::open(dir.path()).unwrap();
    let e = canonical_view(&ck, reg.get("phi3").unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mappings/phi3.toml"), "{e}");
    assert!(
        e.contains("model.layers.0.self_attn.qkv_proj.weight"),
        "{e}"
    );
    assert!(e.contains("[[split]] #1"), "{e}");
    assert!(
        e.contains("add up to 128 but the fused tensor has 120 rows"),
        "{e}"
    );

    // A tensor no rule maps is an error naming it; an ad-hoc rename fixes a PEFT prefix.
    let mut specs = llama_tensors(&d, Dtype::F32, false);
    for s in specs.iter_mut() {
        s.0 = format!("base_model.model.{}", s.0);
    }
    let dir = tiny_dir(
        &specs,
        d.config_json("llama", "LlamaForCausalLM", "float32"),
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    let llama = reg.get("llama").unwrap();
    let e = canonical_view(&ck, llama, &[]).unwrap_err().to_string();
    assert!(
        e.contains("tensor \"base_model.model.model.embed_tokens.weight\""),
        "{e}"
    );
    assert!(e.contains("no rule of family `llama`"), "{e}");
    let strip = RenameRule::parse(r"base_model\.model\.(.*)=$1").unwrap();
    let v = canonical_view(&ck, llama, std::slice::from_ref(&strip)).unwrap();
    assert!(v.get("model.norm.weight").is_some());
    assert_eq!(v.tensors.len(), ck.tensors.len());
    // Ad-hoc rules get the same checks: two sources onto one target.
    let both = RenameRule::parse(r"base_model\.model\.model\.layers\.[01]\.(.*)=$1").unwrap();
    let e = canonical_view(&ck, llama, &[both]).unwrap_err().to_string();
    assert!(e.contains("two sources onto one target"), "{e}");
    // A split without the config quantities it needs names the key.
    let dir = tiny_dir(
        &[(
            "model.layers.0.self_attn.W_pack.weight".into(),
            Dtype::F32,
            vec![192, 64],
        )],
        serde_json::json!({"model_type": "baichuan"}),
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    let e = canonical_view(&ck, reg.get("baichuan").unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs `hidden` (hidden_size)") && e.contains("[[split]] #1"),
        "{e}"
    );
    // Detect-only families do not convert.
    let e = canonical_view(&ck, reg.get("gpt2").unwrap(), &[]).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Unsupported);
}

#[test]
fn custom_mapping_file_loads_and_converts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("yi-upper.toml");
    std::fs::write(
        &p,
        "name = \"yi-upper\"\nsummary = \"Yi with LN1/LN2\"\nbase = \"llama\"\nexact = true\nsources = [\"test\"]\n[config]\nmodel_type = \"YiUpper\"\n[tensors]\n\"model.layers.{i}.LN1.weight\" = \"model.layers.{i}.input_layernorm.weight\"\n\"model.layers.{i}.LN2.weight\" = \"model.layers.{i}.post_attention_layernorm.weight\"\n",
    )
    .unwrap();
    let mut reg = Registry::builtin().unwrap();
    assert_eq!(reg.load_file(&p).unwrap(), "yi-upper");
    let ck = fixture("yi");
    let c = canon(&ck, &reg, "yi");
    let up = to_family(&c, reg.get("yi-upper").unwrap()).unwrap();
    assert!(up.get("model.layers.0.LN1.weight").is_some());
    assert_eq!(
        up.config.as_ref().unwrap().model_type.as_deref(),
        Some("YiUpper")
    );
    // a file that is not TOML
    std::fs::write(&p, "name = ").unwrap();
    let e = reg.load_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("yi-upper.toml") && e.contains("invalid mapping file"),
        "{e}"
    );
}

#[test]
fn inverse_refuses_to_drop_required_tensors() {
    // A tied LLaMA has no lm_head: Meta's layout needs output.weight.
    let reg = Registry::builtin().unwrap();
    let ck = fixture("llama-tied");
    let c = canon(&ck, &reg, "llama");
    let e = to_family(&c, reg.get("llama-meta").unwrap()).unwrap_err();
    assert_eq!(e.kind(), ckpt::ErrorKind::Unsupported);
    assert!(e.to_string().contains("needs `output.weight`"), "{e}");
    // Families whose lm_head is optional take it (mistral inherits llama's rules).
    assert!(to_family(&c, reg.get("mistral").unwrap()).is_ok());
}

#[test]
fn meta_layouts_of_many_shapes_round_trip() {
    use ckpt::checkpoint::header::Dtype;
    use ckpt::mapping::apply::{hf_row_of_meta, meta_row_of_hf};
    let reg = Registry::builtin().unwrap();
    let meta = reg.get("llama-meta").unwrap();
    for (heads, kv, hd, dtype) in [
        (4usize, 4usize, 2usize, Dtype::F32),
        (6, 2, 8, Dtype::BF16),
        (8, 1, 6, Dtype::F16),
        (3, 3, 10, Dtype::BF16),
    ] {
        // the two index maps are inverse permutations
        for j in 0..hd {
            assert_eq!(hf_row_of_meta(meta_row_of_hf(j, hd), hd), j);
        }
        let hidden = heads * hd;
        let dir = tempfile::tempdir().unwrap();
        let specs = vec![
            ("tok_embeddings.weight".to_string(), dtype, vec![32, hidden]),
            (
                "layers.0.attention.wq.weight".into(),
                dtype,
                vec![heads * hd, hidden],
            ),
            (
                "layers.0.attention.wk.weight".into(),
                dtype,
                vec![kv * hd, hidden],
            ),
            (
                "layers.0.attention.wv.weight".into(),
                dtype,
                vec![kv * hd, hidden],
            ),
            (
                "layers.0.attention.wo.weight".into(),
                dtype,
                vec![hidden, heads * hd],
            ),
            ("layers.0.attention_norm.weight".into(), dtype, vec![hidden]),
            ("layers.0.ffn_norm.weight".into(), dtype, vec![hidden]),
            (
                "layers.0.feed_forward.w1.weight".into(),
                dtype,
                vec![24, hidden],
            ),
            (
                "layers.0.feed_forward.w2.weight".into(),
                dtype,
                vec![hidden, 24],
            ),
            (
                "layers.0.feed_forward.w3.weight".into(),
                dtype,
                vec![24, hidden],
            ),
            ("norm.weight".into(), dtype, vec![hidden]),
            ("output.weight".into(), dtype, vec![32, hidden]),
            ("rope.freqs".into(), Dtype::F32, vec![hd / 2]),
        ];
        ckpt::synth::write_file(
            &dir.path().join("consolidated.safetensors"),
            &specs,
            ckpt::synth::Fill::Random(heads as u64),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("params.json"),
            format!(r#"{{"dim": {hidden}, "n_layers": 1, "n_heads": {heads}, "n_kv_heads": {kv}, "vocab_size": -1, "norm_eps": 1e-6, "rope_theta": 500000.0}}"#),
        )
        .unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        let v = canonical_view(&ck, meta, &[]).unwrap();
        assert_eq!(v.dropped.len(), 1, "rope.freqs dropped");
        let c = v.config.as_ref().unwrap();
        assert_eq!(
            (c.vocab_size, c.intermediate_size, c.head_dim),
            (Some(32), Some(24), None)
        );
        assert_eq!(c.resolved_head_dim(), Some(hd));
        for (m, hf, n) in [("wq", "q_proj", heads), ("wk", "k_proj", kv)] {
            let name = format!("layers.0.attention.{m}.weight");
            assert_eq!(
                canon_bytes(&v, &format!("model.layers.0.self_attn.{hf}.weight")),
                script_meta_to_hf(&ck, &name, n),
                "{heads}/{kv}/{hd} {m}"
            );
        }
        let back = to_family(&v, meta).unwrap();
        for t in ck.tensors.iter().filter(|t| t.name != "rope.freqs") {
            let b = back.get(&t.name).unwrap();
            assert_eq!(&*back.read(b).unwrap(), ck.data(t).unwrap(), "{}", t.name);
            assert!(b.is_whole_tensor(&ck).is_some(), "{}", t.name);
        }
    }
}

/// Release builds load the embedded families without the rule clash check (it took a third of
/// every command's start-up); this is the test that makes that safe: each embedded file passes
/// every check a user's mapping file gets, loaded the way a user's file is.
#[test]
fn builtin_families_pass_the_clash_check() {
    let mut reg = Registry::empty();
    for (file, text) in ckpt::mapping::family::BUILTIN {
        reg.load_str(text, file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let builtin = Registry::builtin().unwrap();
    assert_eq!(reg.families().len(), builtin.families().len());
    assert!(reg.families().len() >= 20);
}

/// A rotary permutation rule over the wrong head count (`heads` for a GQA key, which has
/// `kv_heads` heads): the key's rows still divide into heads of an even size, so the wrong
/// permutation was applied on both sides of a `--verify` and called equivalent. A head is
/// `head_dim` rows; anything else is refused naming the rule, the file and the tensor.
#[test]
fn permutation_over_the_wrong_head_count_is_refused() {
    let meta = include_str!("../mappings/llama-meta.toml")
        .replace("name = \"llama-meta\"", "name = \"my-meta\"");
    let k = meta
        .find("from = \"layers.{i}.attention.wk.weight\"")
        .unwrap();
    let (head, tail) = meta.split_at(k);
    let text = format!(
        "{head}{}",
        tail.replacen("heads = \"kv_heads\"", "heads = \"heads\"", 1)
    );
    let mut reg = Registry::builtin().unwrap();
    reg.load_str(&text, "my-meta.toml").unwrap();
    let ck = fixture("llama-meta");
    // the right rules read it
    canon(&ck, &reg, "llama-meta");
    let e = canonical_view(&ck, reg.get("my-meta").unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("my-meta.toml"), "{e}");
    assert!(e.contains("[[permute]] #2"), "{e}");
    assert!(e.contains("layers.0.attention.wk.weight"), "{e}");
    assert!(e.contains("head_dim is 16"), "{e}");
    // and the same towards the family
    let c = canon(&ck, &reg, "llama-meta");
    let e = to_family(&c, reg.get("my-meta").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[[permute]] #2") && e.contains("head_dim is 16"),
        "{e}"
    );
}
