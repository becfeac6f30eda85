#!/usr/bin/env python3
"""Generate ckpt's PyTorch (`torch.save`) fixtures and hostile torch archives.

The fixtures are the weights of existing safetensors fixtures (fixtures/llama-gqa and
fixtures/llama-meta, written by scripts/make_fixtures.py) saved again with `torch.save`, so their
golden logits are those fixtures' `expected.safetensors` (copied alongside). The script checks each
one at generation time: HF-named cases are loaded with `torch.load(weights_only=True)` into
transformers' LlamaForCausalLM and must reproduce the expected logits; Meta rank cases, merged with
the concatenation rules of transformers' convert_llama_weights_to_hf.py, must equal the
consolidated tensors byte for byte.

Cases (fixtures/<name>/):
  torch-bin        pytorch_model.bin + config.json (llama-gqa)
  torch-sharded    pytorch_model-0000K-of-00002.bin + pytorch_model.bin.index.json
  torch-views      pytorch_model.bin where q/k/v of each layer are slices of one fused storage, and
                   lm_head and every down_proj are stored transposed (non-contiguous strides)
  torch-nested     model.pth = {"state_dict": {...}, "epoch": 3, "args": {...}}; plus config.json
  torch-legacy     pytorch_model.bin in the legacy (PyTorch < 1.6, non-zip) format, lm_head strided
  meta-llama2-2rank consolidated.00/01.pth + params.json: LLaMA 2 model parallelism (tok_embeddings
                   split by columns), rope.freqs replicated
  meta-llama3-2rank the same in LLaMA 3's layout (tok_embeddings split by rows, no rope.freqs),
                   params.json with vocab_size -1
  torch-tied       a tiny tied-embedding model as transformers 4 pickled it (lm_head.weight sharing
                   the embedding's storage), and st/ its safetensors twin without lm_head.weight

Hostile files (tests/corpus/torch/): each names a code-running global, or breaks a bound or the
container; the payloads would create the file `ckpt-pwned-marker` in the working directory if they
ever ran.

Usage:  python scripts/make_torch_fixtures.py                 # fixtures + corpus
        python scripts/make_torch_fixtures.py --tied          # only torch-tied/
        python scripts/make_torch_fixtures.py --overlap       # only tests/corpus/torch-good/overlap.pth
        python scripts/make_torch_fixtures.py --bench-ranks DIR  # 673 MB of random bf16 Meta ranks
                                                                 # for the README's memory figure
"""

import io
import json
import os
import shutil
import struct
import sys
import zipfile

import torch
from safetensors.torch import load_file

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")
CORPUS = os.path.join(ROOT, "tests", "corpus", "torch")
GOOD = os.path.join(ROOT, "tests", "corpus", "torch-good")
MARKER = "ckpt-pwned-marker"


def fresh(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def copy(src_case, name, dst):
    shutil.copy(os.path.join(FIX, src_case, name), os.path.join(dst, name))


def ordered(sd):
    # Keep the source file's tensor order (safetensors loads sorted; that is fine and stable).
    return {k: sd[k] for k in sorted(sd)}


def check_hf_logits(case_dir, sd, cfg_case="llama-gqa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(os.path.join(FIX, cfg_case))
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    exp = load_file(os.path.join(FIX, cfg_case, "expected.safetensors"))
    with torch.no_grad():
        lg = model(exp["input_ids"]).logits.float()
    d = (lg - exp["logits"]).abs().max().item()
    assert d <= 1e-5, (case_dir, d)
    print(f"  {os.path.basename(case_dir)}: transformers logits vs golden: max |d| = {d:.1e}")


def load_weights_only(path, key=None):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj[key] if key else obj


def hf_cases():
    src = load_file(os.path.join(FIX, "llama-gqa", "model.safetensors"))
    sd = ordered(src)

    d = fresh(os.path.join(FIX, "torch-bin"))
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    for f in ["config.json", "expected.safetensors"]:
        copy("llama-gqa", f, d)
    check_hf_logits(d, load_weights_only(os.path.join(d, "pytorch_model.bin")))

    d = fresh(os.path.join(FIX, "torch-sharded"))
    names = list(sd)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    weight_map = {}
    total = 0
    for i, part in enumerate(shards):
        fn = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save({k: sd[k] for k in part}, os.path.join(d, fn))
        for k in part:
            weight_map[k] = fn
            total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    for f in ["config.json", "expected.safetensors"]:
        copy("llama-gqa", f, d)
    merged = {}
    for part in set(weight_map.values()):
        merged.update(load_weights_only(os.path.join(d, part)))
    check_hf_logits(d, merged)

    d = fresh(os.path.join(FIX, "torch-views"))
    views = {}
    for k, v in sd.items():
        if ".self_attn.q_proj." in k:
            pre = k.split(".self_attn.")[0]
            q, kk, vv = (sd[f"{pre}.self_attn.{p}_proj.weight"] for p in "qkv")
            fused = torch.cat([q, kk, vv], 0).clone()
            a, b = q.shape[0], q.shape[0] + kk.shape[0]
            views[f"{pre}.self_attn.q_proj.weight"] = fused[:a]
            views[f"{pre}.self_attn.k_proj.weight"] = fused[a:b]
            views[f"{pre}.self_attn.v_proj.weight"] = fused[b:]
        elif ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            continue
        elif k == "lm_head.weight" or k.endswith("mlp.down_proj.weight"):
            views[k] = v.t().contiguous().t()  # same values, column-major strides
            assert not views[k].is_contiguous()
        else:
            views[k] = v
    views = {k: views[k] for k in sd}
    torch.save(views, os.path.join(d, "pytorch_model.bin"))
    for f in ["config.json", "expected.safetensors"]:
        copy("llama-gqa", f, d)
    back = load_weights_only(os.path.join(d, "pytorch_model.bin"))
    assert not back["lm_head.weight"].is_contiguous()
    assert back["model.layers.0.self_attn.k_proj.weight"].storage_offset() > 0
    check_hf_logits(d, back)

    d = fresh(os.path.join(FIX, "torch-legacy"))
    legacy = dict(sd)
    legacy["lm_head.weight"] = sd["lm_head.weight"].t().contiguous().t()  # strided here too
    torch.save(legacy, os.path.join(d, "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(os.path.join(d, "pytorch_model.bin"))
    for f in ["config.json", "expected.safetensors"]:
        copy("llama-gqa", f, d)
    check_hf_logits(d, load_weights_only(os.path.join(d, "pytorch_model.bin")))

    d = fresh(os.path.join(FIX, "torch-nested"))
    torch.save(
        {"state_dict": sd, "epoch": 3, "global_step": 1200, "args": {"lr": 3e-4, "name": "run-7"}},
        os.path.join(d, "model.pth"),
    )
    for f in ["config.json", "expected.safetensors"]:
        copy("llama-gqa", f, d)
    check_hf_logits(d, load_weights_only(os.path.join(d, "model.pth"), "state_dict"))


ROWS = ["attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
        "feed_forward.w1.weight", "feed_forward.w3.weight", "output.weight"]
COLS = ["attention.wo.weight", "feed_forward.w2.weight"]


def split_meta(sd, ranks, emb_axis, rope):
    out = [dict() for _ in range(ranks)]
    for k, v in sd.items():
        if any(k.endswith(s) for s in ROWS):
            parts = torch.chunk(v, ranks, 0)
        elif any(k.endswith(s) for s in COLS):
            parts = torch.chunk(v, ranks, 1)
        elif k == "tok_embeddings.weight":
            parts = torch.chunk(v, ranks, emb_axis)
        else:
            parts = [v] * ranks
        for r in range(ranks):
            out[r][k] = parts[r].clone().contiguous()
    if rope:
        dim, heads = 64, 4
        hd = dim // heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        for r in range(ranks):
            out[r]["rope.freqs"] = freqs.clone()
    return out


def merge_meta(ranks, emb_axis):
    merged = {}
    for k in ranks[0]:
        vs = [r[k] for r in ranks]
        if any(k.endswith(s) for s in ROWS):
            merged[k] = torch.cat(vs, 0)
        elif any(k.endswith(s) for s in COLS):
            merged[k] = torch.cat(vs, 1)
        elif k == "tok_embeddings.weight":
            merged[k] = torch.cat(vs, emb_axis)
        else:
            assert all(torch.equal(vs[0], v) for v in vs)
            merged[k] = vs[0]
    return merged


def meta_cases():
    src = load_file(os.path.join(FIX, "llama-meta", "consolidated.safetensors"))
    params = json.load(open(os.path.join(FIX, "llama-meta", "params.json")))
    for name, emb_axis, rope, vocab in [("meta-llama2-2rank", 1, True, 256), ("meta-llama3-2rank", 0, False, -1)]:
        d = fresh(os.path.join(FIX, name))
        ranks = split_meta(src, 2, emb_axis, rope)
        for r, sd in enumerate(ranks):
            torch.save(sd, os.path.join(d, f"consolidated.{r:02d}.pth"))
        p = dict(params)
        p["vocab_size"] = vocab
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump(p, f, indent=2)
        copy("llama-meta", "expected.safetensors", d)
        back = [load_weights_only(os.path.join(d, f"consolidated.{r:02d}.pth")) for r in range(2)]
        merged = merge_meta(back, emb_axis)
        merged.pop("rope.freqs", None)
        assert set(merged) == set(src), set(merged) ^ set(src)
        for k in src:
            assert torch.equal(merged[k], src[k]), k
        print(f"  {name}: ranks merged == llama-meta consolidated tensors (bit-exact)")


def tied_case():
    """torch-tied/: a tiny tied-embedding LLaMA (vocab 32, width 16, one layer) as transformers 4's
    `save_pretrained(safe_serialization=False)` wrote it: `model.state_dict()` pickled as is, so
    `lm_head.weight` is stored under its own name but shares the embedding's storage (written once).
    `st/` is the same model as transformers writes it in safetensors (no `lm_head.weight`). A few KB."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(11)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in n else 0.2 * torch.randn_like(p))
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    d = fresh(os.path.join(FIX, "torch-tied"))
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    cfg.save_pretrained(d)
    st = fresh(os.path.join(d, "st"))
    save_file({k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"},
              os.path.join(st, "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(st)
    back = load_weights_only(os.path.join(d, "pytorch_model.bin"))
    assert torch.equal(back["lm_head.weight"], back["model.embed_tokens.weight"])
    print("  torch-tied: lm_head.weight shares the embedding's storage")


# ---------------------------------------------------------------------------------------------
# hostile archives
# ---------------------------------------------------------------------------------------------


class Run:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def payload(kind):
    import builtins
    import os as _os
    import subprocess

    cmd = f"touch {MARKER}"
    if kind == "os.system":
        return Run(_os.system, cmd)
    if kind == "builtins.eval":
        return Run(builtins.eval, f"open('{MARKER}', 'w').close()")
    if kind == "subprocess.Popen":
        return Run(subprocess.Popen, ["touch", MARKER])
    raise ValueError(kind)


def tiny_sd():
    return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def rewrite(src, dst, fn, compress=zipfile.ZIP_STORED):
    """Copy a zip, passing each (name, bytes) through fn."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compress) as zout:
        for info in zin.infolist():
            data = fn(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data, compress_type=compress)


def hostile():
    fresh(CORPUS)
    p = lambda n: os.path.join(CORPUS, n)
    import pickle  # noqa: F401  (torch.save pickles the payload objects)

    torch.save(payload("os.system"), p("global-top-os-system.pth"))
    sd = tiny_sd()
    sd["evil"] = payload("builtins.eval")
    torch.save({"state_dict": sd, "epoch": 3}, p("global-nested-builtins-eval.pth"))
    sd = tiny_sd()
    sd["evil"] = payload("subprocess.Popen")
    torch.save(sd, p("global-nested-subprocess-popen.bin"))

    base = p("_base.pth")
    torch.save(tiny_sd(), base)

    # A nesting bomb: 100000 nested lists, then the dict.
    bomb = b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b"."
    rewrite(base, p("nesting-bomb.pth"), lambda n, b: bomb if n.endswith("data.pkl") else b)
    # A mark bomb: 100000 MARKs.
    rewrite(base, p("mark-bomb.pth"), lambda n, b: (b"\x80\x02" + b"(" * 100000) if n.endswith("data.pkl") else b)

    # A tensor whose shape reads past its storage: size (2, 3) -> (4, 3).
    def bigger(n, b):
        if n.endswith("data.pkl"):
            old = b"QK\x00K\x02K\x03\x86"
            assert old in b
            return b.replace(old, b"QK\x00K\x04K\x03\x86")
        return b
    rewrite(base, p("tensor-past-storage.pth"), bigger)
    # A storage entry shorter than the pickle declares.
    rewrite(base, p("storage-short.pth"), lambda n, b: b[:-8] if "/data/" in n else b)
    # Truncated archive: the central directory is gone.
    raw = open(base, "rb").read()
    open(p("truncated.pth"), "wb").write(raw[: len(raw) // 2])
    # Compressed entries.
    rewrite(base, p("compressed.pth"), lambda n, b: b, compress=zipfile.ZIP_DEFLATED)
    # Big-endian byte order.
    rewrite(base, p("big-endian.pth"), lambda n, b: b"big" if n.endswith("/byteorder") else b)
    # A storage referenced by the pickle but missing from the archive.
    rewrite(base, p("storage-missing.pth"), lambda n, b: None if "/data/0" in n else b)
    # Legacy (PyTorch < 1.6) format: a code-running global, and a file cut inside its storages.
    torch.save(payload("os.system"), p("legacy-global-os-system.pth"), _use_new_zipfile_serialization=False)
    torch.save(tiny_sd(), p("_legacy.pth"), _use_new_zipfile_serialization=False)
    raw = open(p("_legacy.pth"), "rb").read()
    open(p("legacy-truncated.pth"), "wb").write(raw[:-10])
    os.remove(p("_legacy.pth"))
    os.remove(base)
    # None of these may load with torch.load(weights_only=True) either (sanity for the code ones).
    for n in ["global-top-os-system.pth", "global-nested-builtins-eval.pth", "global-nested-subprocess-popen.bin",
              "legacy-global-os-system.pth"]:
        try:
            torch.load(p(n), weights_only=True)
            raise SystemExit(f"{n} loaded with weights_only=True")
        except Exception as e:  # noqa: BLE001
            assert "weights_only" in str(e) or "Unsupported" in str(e), e
    assert not os.path.exists(MARKER)
    print(f"  hostile: {len(os.listdir(CORPUS))} files in {os.path.relpath(CORPUS, ROOT)}")


def good():
    """Small valid archives for the unit-level tests: two dicts of tensors (ambiguous without a key),
    a transposed 3x4 matrix, and an int64 tensor with a storage offset."""
    fresh(GOOD)
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save({"model": {"w": a}, "ema": {"w": a * 2}, "epoch": 1}, os.path.join(GOOD, "two-dicts.pth"))
    base = torch.arange(20, dtype=torch.int64)
    torch.save({"t": a.t(), "slice": base[5:11].view(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)},
               os.path.join(GOOD, "views.pth"))
    back = torch.load(os.path.join(GOOD, "views.pth"), weights_only=True)
    assert not back["t"].is_contiguous() and back["slice"].storage_offset() == 5
    torch.save({"t": a.t(), "slice": base[5:11].view(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)},
               os.path.join(GOOD, "views-legacy.pth"), _use_new_zipfile_serialization=False)
    overlap()


def overlap():
    """torch-good/overlap.pth: three names over one 4x8 float32 storage (128 bytes): the matrix, its
    transpose and its first row. The file holds 128 bytes of tensor data, not 3 * 128 - 96."""
    os.makedirs(GOOD, exist_ok=True)
    w = torch.arange(32, dtype=torch.float32).reshape(4, 8)
    torch.save({"w": w, "wt": w.t(), "row": w[0]}, os.path.join(GOOD, "overlap.pth"))
    back = torch.load(os.path.join(GOOD, "overlap.pth"), weights_only=True)
    assert back["wt"].untyped_storage().data_ptr() == back["w"].untyped_storage().data_ptr()
    print("  torch-good/overlap.pth: a matrix, its transpose and a row over one storage")


def bench_ranks(out, dim=2048, ffn=5632, layers=4, vocab=32000, ranks=2):
    """Two bf16 LLaMA-2-layout ranks of a random model (not committed; for measuring memory)."""
    torch.manual_seed(0)
    fresh(out)

    def rnd(*s):
        return (torch.randn(*s) * 0.02).to(torch.bfloat16)

    one = lambda: torch.ones(dim, dtype=torch.bfloat16)  # noqa: E731
    full = {"tok_embeddings.weight": rnd(vocab, dim), "norm.weight": one(), "output.weight": rnd(vocab, dim)}
    for i in range(layers):
        p = f"layers.{i}."
        for n in "qkvo":
            full[p + f"attention.w{n}.weight"] = rnd(dim, dim)
        full[p + "feed_forward.w1.weight"] = rnd(ffn, dim)
        full[p + "feed_forward.w3.weight"] = rnd(ffn, dim)
        full[p + "feed_forward.w2.weight"] = rnd(dim, ffn)
        full[p + "attention_norm.weight"] = one()
        full[p + "ffn_norm.weight"] = one()
    for r, sd in enumerate(split_meta(full, ranks, 1, rope=False)):
        torch.save(sd, os.path.join(out, f"consolidated.{r:02d}.pth"))
    with open(os.path.join(out, "params.json"), "w") as f:
        json.dump({"dim": dim, "n_layers": layers, "n_heads": 16, "vocab_size": -1, "norm_eps": 1e-5,
                   "multiple_of": 256}, f)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--bench-ranks":
        return bench_ranks(sys.argv[2])
    if sys.argv[1:] == ["--tied"]:
        return tied_case()
    if sys.argv[1:] == ["--overlap"]:
        return overlap()
    print("torch fixtures (torch %s)" % torch.__version__)
    hf_cases()
    meta_cases()
    tied_case()
    hostile()
    good()


if __name__ == "__main__":
    sys.exit(main())
