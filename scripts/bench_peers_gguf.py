"""Write a safetensors LLaMA checkpoint directory as a GGUF llama.cpp loads (scripts/bench_peers.sh).

    python bench_peers_gguf.py SRC_DIR OUT.gguf

SRC_DIR holds `config.json` and one `model.safetensors` in F32 or BF16 (as `benches/peers.rs`
writes them). The GGUF keeps the dtype (F32 or BF16 matrices; norms in F32, as llama.cpp's
`convert_hf_to_gguf.py` keeps them), permutes q/k rows into GGUF's rotary layout as that script
does, and carries a stand-in SentencePiece vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then
`▁tN`): llama-bench never tokenizes text, it only needs a loadable vocabulary of the right size.

Needs only numpy and gguf-py; the safetensors header is parsed here so BF16 needs no torch.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf

NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(name: str) -> str:
    if name in NAMES:
        return NAMES[name]
    parts = name.split(".")  # model.layers.N.<module...>.weight
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:-1])]}.weight"


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> GGUF's interleaved pairs (convert_hf_to_gguf's LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_safetensors(path: Path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dt = {"F32": np.float32, "BF16": np.uint16}[info["dtype"]]
        yield name, info["dtype"], data[start:end].view(dt).reshape(info["shape"])


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((src / "config.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    tensors = list(read_safetensors(src / "model.safetensors"))
    bf16 = any(dt == "BF16" for _, dt, _ in tensors)

    w = gguf.GGUFWriter(out, "llama")
    w.add_name("random TinyLlama-1.1B shape (ckpt bench_peers)")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(hidden // heads)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if bf16 else gguf.LlamaFileType.ALL_F32)

    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    toks += [f"\u2581t{i}" for i in range(len(toks), vocab)]
    types += [gguf.TokenType.NORMAL] * (vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([-float(i) for i in range(vocab)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    for name, dt, t in tensors:
        if name.endswith("q_proj.weight"):
            t = permute(t, heads)
        elif name.endswith("k_proj.weight"):
            t = permute(t, kv_heads)
        if dt == "BF16" and t.ndim == 1:
            t = bf16_to_f32(t)  # norms stay F32, as convert_hf_to_gguf.py keeps them
        elif dt == "BF16":
            w.add_tensor(gguf_name(name), np.ascontiguousarray(t), raw_dtype=gguf.GGMLQuantizationType.BF16)
            continue
        w.add_tensor(gguf_name(name), np.ascontiguousarray(t))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
