//! Reference forward pass on tiny arbitrary LLaMA checkpoints (RELIABILITY.md C.1, slot `forward_tiny`).
//!
//! Dims are drawn small (hidden 2-16, heads dividing hidden with an even head_dim, kv_heads dividing
//! heads, 1-2 layers, intermediate 1-16, vocab 2-32, tied or not); weights come from the input bytes
//! as F32 or BF16, written with `config.json` as a real checkpoint in a temp dir, opened through
//! `detect::open_view` as family `llama`, and run on 1-2 sequences of 1-6 ids for `Isa::Scalar` and
//! `kernels::active_isa()`.
//!
//! Two modes. `Bounded`: every weight is a finite value in [-2, 2); the forward must succeed with
//! `batch x seq x vocab` logits, and when every logit of both ISAs is finite they agree within
//! 1e-3 x max(1, max |logit|) (SIMD and scalar sum in different orders). `Raw`: the weights are the
//! raw input bits (NaN, infinities, subnormals); only "no panic, and Ok has the right length".
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ckpt::Checkpoint;
use ckpt::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use ckpt::kernels::{Isa, active_isa};
use ckpt::mapping::Registry;
use ckpt::synth::{Dims, llama_tensors};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const HIDDEN: &[usize] = &[2, 4, 8, 16];

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Registry::builtin().expect("built-in mappings load"))
}

fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n % d == 0).collect()
}

struct Case {
    dims: Dims,
    bf16: bool,
    bounded: bool,
    batch: Vec<Vec<u32>>,
    weights: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Case> {
        let hidden = *u.choose(HIDDEN)?;
        let heads_ok: Vec<usize> = divisors(hidden)
            .into_iter()
            .filter(|h| (hidden / h) % 2 == 0)
            .collect();
        let heads = *u.choose(&heads_ok)?;
        let kv_heads = *u.choose(&divisors(heads))?;
        let dims = Dims {
            hidden,
            layers: u.int_in_range(1..=2)?,
            heads,
            kv_heads,
            intermediate: u.int_in_range(1..=16)?,
            vocab: u.int_in_range(2..=32)?,
            tied: u.arbitrary()?,
        };
        let bf16 = u.arbitrary()?;
        let bounded = u.ratio(3, 4)?;
        let n_seq = u.int_in_range(1..=2)?;
        let len = u.int_in_range(1..=6)?;
        let vocab = dims.vocab as u32;
        let mut batch = Vec::with_capacity(n_seq);
        for _ in 0..n_seq {
            let mut s = Vec::with_capacity(len);
            for _ in 0..len {
                s.push(u.int_in_range(0..=vocab - 1)?);
            }
            batch.push(s);
        }
        let weights = u.arbitrary::<&[u8]>()?.to_vec();
        Ok(Case {
            dims,
            bf16,
            bounded,
            batch,
            weights,
        })
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Case {{ {:?}, bf16: {}, bounded: {}, batch: {:?}, {} weight bytes }}",
            self.dims,
            self.bf16,
            self.bounded,
            self.batch,
            self.weights.len()
        )
    }
}

/// A stream of weight values from the input bytes (cycled; zeros when there are none).
struct Source<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Source<'_> {
    fn byte(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.pos % self.bytes.len()];
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// One element's bytes in `dtype`.
    fn element(&mut self, bounded: bool, bf16: bool, out: &mut Vec<u8>) {
        if bounded {
            // A finite value in [-2, 2) with 15 bits of resolution.
            let v = f32::from(self.u16() as i16) / 16384.0;
            if bf16 {
                out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        } else if bf16 {
            out.extend_from_slice(&self.u16().to_le_bytes());
        } else {
            let bits = u32::from(self.u16()) | (u32::from(self.u16()) << 16);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
}

fn write_case(dir: &std::path::Path, c: &Case) {
    let dtype = if c.bf16 { Dtype::BF16 } else { Dtype::F32 };
    let specs = llama_tensors(&c.dims, dtype, false);
    let mut entries = Vec::with_capacity(specs.len());
    let mut data = Vec::new();
    let mut src = Source {
        bytes: &c.weights,
        pos: 0,
    };
    for (name, dt, shape) in &specs {
        let n = checked_nbytes(*dt, shape).expect("tiny sizes");
        let begin = data.len();
        let elems = n / if c.bf16 { 2 } else { 4 };
        for _ in 0..elems {
            src.element(c.bounded, c.bf16, &mut data);
        }
        entries.push((name.clone(), *dt, shape.clone(), begin, data.len()));
    }
    let dtype_name = if c.bf16 { "bfloat16" } else { "float32" };
    let config = c.dims.config_json("llama", "LlamaForCausalLM", dtype_name);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    let mut file = serialize_header(None, &entries).expect("valid names");
    file.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), file).expect("write tensors");
}

fuzz_target!(|c: Case| {
    let tmp = tempfile::tempdir().expect("temp dir");
    write_case(tmp.path(), &c);
    let ck = Checkpoint::open(tmp.path()).expect("a well-formed checkpoint opens");
    let (view, fam) = ckpt::detect::open_view(&ck, registry(), Some("llama"), &[])
        .expect("a LLaMA checkpoint opens as llama");
    assert_eq!(fam, "llama");

    let (batch, seq, vocab) = (c.batch.len(), c.batch[0].len(), c.dims.vocab);
    let mut isas = vec![Isa::Scalar];
    if active_isa() != Isa::Scalar {
        isas.push(active_isa());
    }
    let mut results = Vec::new();
    for &isa in &isas {
        let r = ckpt::reference::forward(&view, &c.batch, isa);
        if c.bounded {
            let r = r.unwrap_or_else(|e| panic!("{isa:?}: valid tiny model refused: {e:?}"));
            results.push(r);
        } else if let Ok(l) = r {
            results.push(l);
        } else {
            continue;
        }
        let l = results.last().expect("just pushed");
        assert_eq!((l.batch, l.seq, l.vocab), (batch, seq, vocab), "{isa:?}");
        assert_eq!(l.data.len(), batch * seq * vocab, "{isa:?}");
    }

    if !c.bounded || results.len() != 2 {
        return;
    }
    let (a, b) = (&results[0], &results[1]);
    if !a.data.iter().chain(&b.data).all(|x| x.is_finite()) {
        return;
    }
    let scale = a
        .data
        .iter()
        .chain(&b.data)
        .fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
        assert!(
            (x - y).abs() <= 1e-3 * scale,
            "logit {i}: scalar {x} vs {:?} {y} (scale {scale})",
            isas[1]
        );
    }
});
