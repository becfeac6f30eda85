#!/usr/bin/env python3
"""Run the real LLaMA loaders on `ckpt convert` outputs and print a results table (docs/LOADERS.md).

Loaders:

* transformers (whatever is installed): `AutoTokenizer.from_pretrained(OUT)` without remote code, and
  `AutoModelForCausalLM.from_pretrained(OUT)` logits against the fixture's frozen expected logits;
* llama.cpp's converter (`--llama-cpp DIR`, a llama.cpp source tree with `convert_hf_to_gguf.py`,
  `conversion/` and `gguf-py/`; e.g. `pip download --no-binary :all: --no-deps llama-cpp-python` and
  unpack `vendor/llama.cpp`): converts OUT to an f32 GGUF, then reads the GGUF back with its gguf-py
  and compares the vocabulary size, bos/eos, context length and RoPE settings with the config;
  llama.cpp's own forward pass needs its C++ build and is not run here;
* candle (`--candle-project DIR`): writes a small Rust program using candle-transformers'
  `llama` model into DIR (a Cargo project; reuse the directory to keep the build), builds it in
  release mode and compares its last-position logits with the expected ones.

Releases: the tokenizer fixtures converted to LLaMA (`fixtures/tokenizers/{yi-sp,llama-tokjson,meta-sp}`)
and `fixtures/llama3-scaling` before (transformers 5 spelling only) and after conversion (both
spellings), which shows the RoPE spelling defect of issue 14.

Usage (from the repository root; Python with torch, transformers, sentencepiece, gguf deps):
    python scripts/run_loaders.py target/debug/ckpt --llama-cpp /tmp/llama.cpp --candle-project /tmp/ckpt-candle
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
FX = ROOT / "fixtures"
VOCAB = 256

CANDLE_CARGO = """[package]
name = "ckpt-candle-runner"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
candle-core = "0.9"
candle-nn = "0.9"
candle-transformers = "0.9"
serde_json = "1"
anyhow = "1"

[profile.release]
opt-level = 2
"""

CANDLE_MAIN = r"""//! Load a Hugging Face LLaMA directory with candle-transformers' `llama` model and print the
//! last-position logits for each input sequence (JSON). Written by ckpt's scripts/run_loaders.py.
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let ids: Vec<Vec<u32>> = serde_json::from_str(&args[2])?;
    let cfg: LlamaConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let cfg = cfg.into_config(false);
    let dev = Device::Cpu;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev)? };
    let model = Llama::load(vb, &cfg)?;
    let mut out = Vec::new();
    for seq in ids {
        let mut cache = Cache::new(false, DType::F32, &cfg, &dev)?;
        let x = Tensor::new(seq.as_slice(), &dev)?.unsqueeze(0)?;
        let logits = model.forward(&x, 0, &mut cache)?;
        out.push(logits.squeeze(0)?.to_vec1::<f32>()?);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
"""


def expected(fixture):
    return load_file(str(FX / fixture / "expected.safetensors"))


def run_transformers(release, fixture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    notes = []
    try:
        tok = AutoTokenizer.from_pretrained(release)
        notes.append(f"tokenizer {type(tok).__name__} (no remote code)")
    except Exception as e:  # the release may have no tokenizer (weights-only fixture)
        notes.append(f"no tokenizer: {str(e).splitlines()[0][:80]}")
    model = AutoModelForCausalLM.from_pretrained(release, dtype=torch.float32).eval()
    exp = expected(fixture)
    with torch.no_grad():
        logits = model(exp["input_ids"]).logits[..., :VOCAB]
    diff = (logits - exp["logits"]).abs().max().item()
    ok = diff <= 1e-4
    notes.append(f"logits max abs diff {diff:.1e}")
    return ok, "; ".join(notes)


def run_llama_cpp(release, fixture, llama_cpp, work):
    out = Path(work) / (release.name + ".gguf")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(llama_cpp) / "gguf-py")
    r = subprocess.run(
        [sys.executable, str(Path(llama_cpp) / "convert_hf_to_gguf.py"), str(release),
         "--outfile", str(out), "--outtype", "f32"],
        capture_output=True, text=True, env=env,
    )
    if r.returncode != 0:
        last = [l for l in (r.stderr + r.stdout).splitlines() if l.strip()]
        return False, "converter failed: " + (last[-1][:160] if last else f"exit {r.returncode}")
    sys.path.insert(0, str(Path(llama_cpp) / "gguf-py"))
    import gguf  # noqa: E402  (llama.cpp's own gguf-py)

    rd = gguf.GGUFReader(str(out))

    def field(name):
        f = rd.fields.get(name)
        if f is None:
            return None
        v = f.parts[f.data[0]]
        if len(f.data) > 1:
            return len(f.data)
        return v.tolist()[0] if hasattr(v, "tolist") and len(v) == 1 else bytes(v).decode(errors="replace")

    cfg = json.loads((release / "config.json").read_text())
    got = {
        "tokenizer": field("tokenizer.ggml.model"),
        "tokens": field("tokenizer.ggml.tokens"),
        "bos": field("tokenizer.ggml.bos_token_id"),
        "eos": field("tokenizer.ggml.eos_token_id"),
        "ctx": field("llama.context_length"),
        "theta": field("llama.rope.freq_base"),
        "scaling": field("llama.rope.scaling.type"),
    }
    # The values the model was trained with, whichever spelling holds them (transformers 5 reads
    # rope_parameters first).
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = rp.get("rope_type") or (cfg.get("rope_scaling") or {}).get("rope_type")
    problems = []
    if got["ctx"] != cfg.get("max_position_embeddings"):
        problems.append(f"context length {got['ctx']} (config {cfg.get('max_position_embeddings')})")
    if got["theta"] is None or abs(got["theta"] - theta) > 1e-3 * theta:
        problems.append(f"rope theta {got['theta']} (config {theta})")
    if got["bos"] != cfg.get("bos_token_id") or got["eos"] != cfg.get("eos_token_id"):
        problems.append(f"bos/eos {got['bos']}/{got['eos']} (config {cfg.get('bos_token_id')}/{cfg.get('eos_token_id')})")
    rope_freqs = any(t.name == "rope_freqs.weight" for t in rd.tensors)
    if scaling == "llama3" and not rope_freqs:
        problems.append("llama3 scaling lost (no rope_freqs tensor)")
    desc = (f"GGUF: {got['tokenizer']} vocab {got['tokens']} tokens, bos {got['bos']} eos {got['eos']}, "
            f"ctx {got['ctx']}, theta {got['theta']:g}{', rope_freqs (llama3)' if rope_freqs else ''}, "
            f"{len(rd.tensors)} tensors")
    return not problems, desc + ("; " + "; ".join(problems) if problems else "")


def build_candle(project):
    project = Path(project)
    (project / "src").mkdir(parents=True, exist_ok=True)
    (project / "Cargo.toml").write_text(CANDLE_CARGO)
    (project / "src" / "main.rs").write_text(CANDLE_MAIN)
    r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=project, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("candle runner did not build:\n" + r.stderr[-2000:])
    return project / "target" / "release" / "ckpt-candle-runner"


def run_candle(binary, release, fixture):
    exp = expected(fixture)
    ids = exp["input_ids"].tolist()
    r = subprocess.run([str(binary), str(release), json.dumps(ids)], capture_output=True, text=True)
    if r.returncode != 0:
        last = [l for l in r.stderr.splitlines() if l.strip()]
        return False, "load failed: " + (last[-1][:160] if last else f"exit {r.returncode}")
    got = torch.tensor(json.loads(r.stdout))[..., :VOCAB]
    want = exp["logits"][:, -1, :]
    diff = (got - want).abs().max().item()
    return diff <= 1e-3, f"last-position logits max abs diff {diff:.1e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="the built ckpt binary")
    ap.add_argument("--llama-cpp", help="llama.cpp source directory (convert_hf_to_gguf.py)")
    ap.add_argument("--candle-project", help="directory for the candle runner's Cargo project")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="ckpt-loaders-")
    releases = []
    for case, fixture in [("yi-sp", "yi"), ("llama-tokjson", "llama-bf16"), ("meta-sp", "llama-meta")]:
        out = Path(work) / f"{case}-llama"
        subprocess.run([a.ckpt, "convert", str(FX / "tokenizers" / case), str(out), "--to", "llama", "-q"], check=True)
        releases.append((f"`tokenizers/{case}` converted", out, fixture))
    # llama3-scaling is weights-only; llama.cpp's converter needs a vocabulary, so give it the
    # 256-piece SentencePiece model of tokenizers/yi-remote (256 rows, as the fixture).
    l3 = Path(work) / "llama3-scaling"
    l3.mkdir()
    for f in ["config.json", "generation_config.json", "model.safetensors"]:
        shutil.copyfile(FX / "llama3-scaling" / f, l3 / f)
    shutil.copyfile(FX / "tokenizers" / "yi-remote" / "tokenizer.model", l3 / "tokenizer.model")
    releases.append(("`llama3-scaling` as stored (rope_parameters only) + tokenizer.model", l3, "llama3-scaling"))
    out = Path(work) / "llama3-scaling-llama"
    subprocess.run([a.ckpt, "convert", str(l3), str(out), "--to", "llama", "-q"], check=True)
    releases.append(("`llama3-scaling` converted (both spellings)", out, "llama3-scaling"))

    candle = build_candle(a.candle_project) if a.candle_project else None
    rows = []
    for label, path, fixture in releases:
        row = [label]
        for name, fn in [
            ("transformers", lambda: run_transformers(path, fixture)),
            ("llama.cpp", (lambda: run_llama_cpp(path, fixture, a.llama_cpp, work)) if a.llama_cpp else None),
            ("candle", (lambda: run_candle(candle, path, fixture)) if candle else None),
        ]:
            if fn is None:
                row.append("not run")
                continue
            try:
                ok, desc = fn()
            except Exception as e:
                ok, desc = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            row.append(("PASS: " if ok else "FAIL: ") + desc)
            print(f"{label} / {name}: {row[-1]}", file=sys.stderr)
        rows.append(row)
    print("| release | transformers | llama.cpp converter | candle |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")


if __name__ == "__main__":
    main()
