#!/usr/bin/env python3
"""Generate the malformed-input corpus of ckpt (docs/RELIABILITY.md, shared catalog A1-A50).

Stdlib only, deterministic: running it twice produces byte-identical files. The generated files are
committed, so CI never runs this script; `tests/corpus.rs` reads `expected.json` and runs every
command that reads inputs over every entry.

    python3 tests/corpus/make_corpus.py          # rewrites tests/corpus/{bad,good,mapping}/ + expected.json

Entry fields in expected.json (one table, a list of objects):
  path      corpus-relative path of the input (file or directory; may not exist in git when `setup`
            creates it: FIFOs and symlinks cannot be committed)
  dir       true when the input is a directory
  class     catalog id (A1..A50, or "good")
  role      "input" (the path is the checkpoint argument) or "mapping" (the path is a mapping file
            given with --mapping, the checkpoint is the valid tiny model)
  commands  commands it applies to; the others are not run on it
  exit      expected exit code for every command (null = any of 0/1/2, only "no panic" is asserted)
  contains  substrings the combined stdout+stderr must contain ({name} = the input's file name)
  expect    per-command overrides {"check": {"exit": 1, "contains": [...]}}
  setup     actions the test performs in its temp copy before running (fifo, symlink_outside,
            repeat, sparse, copy; see tests/corpus.rs `apply_setup`)
  note      what the file is
"""

import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["inspect", "detect", "check", "diff", "convert", "logits", "verify"]
ENTRIES = []


def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)


def add(path, cls, exit=2, contains=None, commands=None, expect=None, setup=None, role="input",
        is_dir=False, note=""):
    e = {"path": path, "class": cls, "role": role, "dir": is_dir,
         "commands": commands if commands is not None else ALL,
         "exit": exit, "contains": contains if contains is not None else ["{name}"],
         "note": note}
    if expect:
        e["expect"] = expect
    if setup:
        e["setup"] = setup
    ENTRIES.append(e)


def raw(header, data_len=0, fill=b"\0"):
    """8-byte LE length + header text/bytes + data_len bytes."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack("<Q", len(header)) + header + fill * data_len


DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
              "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
              "I64": 64, "U64": 64}


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * DTYPE_BITS[dtype] // 8


def valid(tensors, metadata=None, lead="", pad=8, extra=""):
    """A valid file: tensors = [(name, dtype, shape, data_bytes)], laid out in order."""
    parts = []
    if metadata is not None:
        parts.append('"__metadata__":' + json.dumps(metadata, separators=(",", ":")))
    off = 0
    data = b""
    for name, dtype, shape, payload in tensors:
        assert len(payload) == nbytes(dtype, shape), name
        parts.append(json.dumps(name) + ":" + json.dumps(
            {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(payload)]},
            separators=(",", ":"))[:-1] + extra + "}")
        off += len(payload)
        data += payload
    h = lead + "{" + ",".join(parts) + "}"
    if pad:
        h += " " * ((pad - (8 + len(h.encode())) % pad) % pad)
    return raw(h) + data


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def f32(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return ((self.s >> 40) / float(1 << 24)) - 0.5


def f32s(vals):
    return struct.pack("<%df" % len(vals), *vals)


def tiny_llama(nan_in=None, drop=None):
    """A complete, consistent LLaMA checkpoint (hidden 8, 1 layer, vocab 16): 3.7 KB."""
    rng = Lcg(12345)
    h, inter, vocab = 8, 16, 16
    specs = [("model.embed_tokens.weight", [vocab, h]),
             ("model.layers.0.input_layernorm.weight", [h]),
             ("model.layers.0.self_attn.q_proj.weight", [h, h]),
             ("model.layers.0.self_attn.k_proj.weight", [h, h]),
             ("model.layers.0.self_attn.v_proj.weight", [h, h]),
             ("model.layers.0.self_attn.o_proj.weight", [h, h]),
             ("model.layers.0.post_attention_layernorm.weight", [h]),
             ("model.layers.0.mlp.gate_proj.weight", [inter, h]),
             ("model.layers.0.mlp.up_proj.weight", [inter, h]),
             ("model.layers.0.mlp.down_proj.weight", [h, inter]),
             ("model.norm.weight", [h]),
             ("lm_head.weight", [vocab, h])]
    out = []
    for name, shape in specs:
        n = 1
        for d in shape:
            n *= d
        if name.endswith("norm.weight"):
            vals = [1.0 + 0.25 * rng.f32() for _ in range(n)]
        else:
            vals = [0.5 * rng.f32() for _ in range(n)]
        if name == nan_in:
            vals[3] = float("nan")
        if name == drop:
            continue
        out.append((name, "F32", shape, f32s(vals)))
    return out


TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 2, "vocab_size": 16, "max_position_embeddings": 32,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
    "torch_dtype": "float32",
}


def config_text(cfg):
    return json.dumps(cfg, indent=2) + "\n"


def tiny_dir(rel, cfg=None, tensors=None, cfg_text=None):
    write(rel + "/config.json", cfg_text if cfg_text is not None else config_text(cfg or TINY_CONFIG))
    write(rel + "/model.safetensors", valid(tensors or tiny_llama(), metadata={"format": "pt"}))


def sharded(rel, weight_map, shards, total_size=None, index_text=None):
    """shards = {file: [(name, dtype, shape, bytes)]}; weight_map = {tensor: file}."""
    for f, ts in shards.items():
        write(rel + "/" + f, valid(ts, metadata={"format": "pt"}))
    if index_text is None:
        meta = {"total_size": total_size if total_size is not None else
                sum(len(t[3]) for ts in shards.values() for t in ts)}
        index_text = json.dumps({"metadata": meta, "weight_map": weight_map}, indent=2) + "\n"
    write(rel + "/model.safetensors.index.json", index_text)


F = "F32"
A4 = f32s([1.0])          # one F32
A8 = f32s([1.0, 2.0])     # two F32
T = '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


def big_dims():
    # A28: nine contiguous U8 tensors whose ends sum to 2^64 - 1; the whole file is 945 bytes.
    big = (1 << 61) - 1
    parts, b = [], 0
    for i in range(9):
        n = big if i < 8 else (2 ** 64 - 1) - 8 * big
        parts.append('"t%d":{"dtype":"U8","shape":[%d],"data_offsets":[%d,%d]}' % (i, n, b, b + n))
        b += n
    return "{" + ",".join(parts) + "}"


def framing():
    add("bad/A01-empty.safetensors", "A1", contains=["{name}", "empty"], note="0 bytes")
    write("bad/A01-empty.safetensors", b"")
    write("bad/A01-seven-bytes.safetensors", b"\x10\0\0\0\0\0\0")
    add("bad/A01-seven-bytes.safetensors", "A1", contains=["{name}", "8-byte header length"])
    write("bad/A02-len-u64max.safetensors", b"\xff" * 8 + b"{}")
    add("bad/A02-len-u64max.safetensors", "A2", contains=["{name}", "over the limit"])
    write("bad/A02-len-over-cap.safetensors", struct.pack("<Q", 100_000_001) + b"{}")
    add("bad/A02-len-over-cap.safetensors", "A2", contains=["{name}", "100000001", "over the limit"])
    write("bad/A02-git-lfs-pointer.safetensors",
          "version https://git-lfs.github.com/spec/v1\n"
          "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
          "size 4977993784\n")
    add("bad/A02-git-lfs-pointer.safetensors", "A2",
        contains=["{name}", "error[wrong-format]", "git-lfs pointer"], note="not the weights")
    write("bad/A03-header-past-eof.safetensors", struct.pack("<Q", 1000) + b"{}\0\0\0\0\0\0")
    add("bad/A03-header-past-eof.safetensors", "A3", contains=["{name}", "truncated"])
    write("bad/A04-not-utf8.safetensors", raw(b"\xff\xfe" + b" " * 6))
    add("bad/A04-not-utf8.safetensors", "A4", contains=["{name}", "not UTF-8", "offset 8"])
    write("bad/A05-truncated-json.safetensors", raw('{"a":'))
    add("bad/A05-truncated-json.safetensors", "A5", contains=["{name}", "EOF"])
    write("bad/A05-not-json.safetensors", raw("{not json}"))
    add("bad/A05-not-json.safetensors", "A5", contains=["{name}", "header is not valid"])
    write("bad/A06-nul-padding.safetensors", raw("{" + T + "}\0\0\0", 4))
    add("bad/A06-nul-padding.safetensors", "A6", contains=["{name}", "3 NUL bytes"])
    write("bad/A07-bom.safetensors", raw(b"\xef\xbb\xbf{" + T.encode() + b"}", 4))
    add("bad/A07-bom.safetensors", "A7", contains=["{name}", "BOM"])
    for slug, text in [("array", "[]      "), ("number", "7"), ("null", "null")]:
        write("bad/A08-top-%s.safetensors" % slug, raw(text))
        add("bad/A08-top-%s.safetensors" % slug, "A8", contains=["{name}", "JSON object"])
    write("bad/A09-trailing-byte.safetensors", valid([("a", F, [1], A4)]) + b"X")
    add("bad/A09-trailing-byte.safetensors", "A9", contains=["{name}", "1 unexpected bytes after"])
    write("bad/A10-data-short.safetensors", valid([("a", F, [1], A4), ("weight.b", F, [2], A8)])[:-1])
    add("bad/A10-data-short.safetensors", "A10", contains=["{name}", "weight.b", "truncated"])
    # A11 (misaligned data start) is valid: good/A11-*.


def json_structure():
    write("bad/A12-duplicate-same.safetensors", raw("{" + T + "," + T + "}", 4))
    add("bad/A12-duplicate-same.safetensors", "A12", contains=["{name}", 'duplicate tensor name "a"'])
    write("bad/A12-duplicate-retyped.safetensors",
          raw('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
              '"w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}', 4))
    add("bad/A12-duplicate-retyped.safetensors", "A12", contains=["{name}", "duplicate tensor name"],
        note="reference keeps the last (I32) silently")
    write("bad/A13-metadata-twice.safetensors",
          raw('{"__metadata__":{"format":"pt"},"__metadata__":{"format":"np"},' + T + "}", 4))
    add("bad/A13-metadata-twice.safetensors", "A13", contains=["{name}", "`__metadata__` appears twice"])
    write("bad/A14-metadata-number.safetensors", raw('{"__metadata__":{"format":1},' + T + "}", 4))
    add("bad/A14-metadata-number.safetensors", "A14", contains=["{name}", "must be a string"])
    write("bad/A14-metadata-nested.safetensors",
          raw('{"__metadata__":{"format":{"x":"y"}},' + T + "}", 4))
    add("bad/A14-metadata-nested.safetensors", "A14", contains=["{name}", "must be a string"])
    write("bad/A14-metadata-dup-key.safetensors",
          raw('{"__metadata__":{"format":"pt","format":"np"},' + T + "}", 4))
    add("bad/A14-metadata-dup-key.safetensors", "A14", contains=["{name}", "twice"])
    for slug, entry, want in [
        ("no-offsets", '"w.x":{"dtype":"F32","shape":[1]}', "missing field `data_offsets`"),
        ("no-dtype", '"w.x":{"shape":[1],"data_offsets":[0,4]}', "missing field `dtype`"),
        ("shape-string", '"w.x":{"dtype":"F32","shape":"1","data_offsets":[0,4]}', "field `shape` must be"),
        ("dtype-number", '"w.x":{"dtype":5,"shape":[1],"data_offsets":[0,4]}', "field `dtype` must be a string"),
        ("three-offsets", '"w.x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}', "must hold 2 numbers"),
        ("entry-not-object", '"w.x":[1,2]', "w.x"),
        ("field-twice", '"w.x":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}', "appears twice"),
    ]:
        p = "bad/A16-%s.safetensors" % slug
        write(p, raw("{" + entry + "}", 4))
        add(p, "A16", contains=["{name}", "w.x", want])
    write("bad/A17-deep-nesting.safetensors",
          raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + "[" * 10000 + "]" * 10000 + "}}", 4))
    add("bad/A17-deep-nesting.safetensors", "A17", contains=["{name}", "recursion limit"],
        note="10,000 nested arrays in an unknown field")
    add("bad/A17-deep-nesting-1m.safetensors", "A17", contains=["{name}", "recursion limit"],
        note="1,000,000 nested arrays, built at test time",
        setup=[{"op": "repeat", "to": "A17-deep-nesting-1m.safetensors", "header": True,
                "prefix": '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":',
                "unit": "[", "close": "]", "count": 1000000, "suffix": "}}", "data": 4}])
    write("bad/A18-name-too-long.safetensors",
          raw('{"' + "n" * 5000 + '":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4))
    add("bad/A18-name-too-long.safetensors", "A18", contains=["{name}", "over the limit of 4096"])
    write("bad/A19-name-escape-seq.safetensors",
          raw('{"evil\\u001b[2J":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4))
    add("bad/A19-name-escape-seq.safetensors", "A19", contains=["{name}", "control characters", "evil\\u{1b}[2J"],
        note="the message must show the escape sequence escaped, never raw")
    write("bad/A19-name-empty.safetensors", raw('{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4))
    add("bad/A19-name-empty.safetensors", "A19", contains=["{name}", "empty tensor name"])


def tensor_table():
    for slug, dtype in [("q4_0", "Q4_0"), ("lowercase", "f32")]:
        p = "bad/A20-dtype-%s.safetensors" % slug
        write(p, raw('{"w.q":{"dtype":"%s","shape":[1],"data_offsets":[0,4]}}' % dtype, 4))
        add(p, "A20", contains=["{name}", "w.q", 'unsupported dtype "%s"' % dtype])
    for slug, shape in [("negative", "[-2]"), ("fraction", "[2.0]"), ("over-u64", "[18446744073709551616]")]:
        p = "bad/A21-dim-%s.safetensors" % slug
        write(p, raw('{"w.d":{"dtype":"F32","shape":%s,"data_offsets":[0,8]}}' % shape, 8))
        add(p, "A21", contains=["{name}", "w.d", "field `shape` must be"])
    write("bad/A21-offset-negative.safetensors", raw('{"w.d":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}', 4))
    add("bad/A21-offset-negative.safetensors", "A21", contains=["{name}", "w.d", "field `data_offsets` must be"])
    write("bad/A22-numel-overflow.safetensors",
          raw('{"w.o":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}', 4))
    add("bad/A22-numel-overflow.safetensors", "A22", contains=["{name}", "w.o", "overflows"])
    write("bad/A22-bytes-overflow.safetensors",
          raw('{"w.o":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}', 8))
    add("bad/A22-bytes-overflow.safetensors", "A22", contains=["{name}", "w.o", "overflows"])
    write("bad/A23-shape-vs-range.safetensors", raw('{"w.s":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 8))
    add("bad/A23-shape-vs-range.safetensors", "A23", contains=["{name}", "w.s", "12 bytes", "span 8"])
    write("bad/A24-f4-odd.safetensors", raw('{"w.f4":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', 2))
    add("bad/A24-f4-odd.safetensors", "A24", contains=["{name}", "w.f4", "byte boundary"])
    write("bad/A25-overlap.safetensors",
          raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w.b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12))
    add("bad/A25-overlap.safetensors", "A25", contains=["{name}", "w.b", "overlaps"])
    write("bad/A26-gap.safetensors",
          raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w.b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', 12))
    add("bad/A26-gap.safetensors", "A26", contains=["{name}", "w.b", "4 unreferenced bytes"])
    write("bad/A27-begin-after-end.safetensors", raw('{"w.r":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}', 4))
    add("bad/A27-begin-after-end.safetensors", "A27", contains=["{name}", "w.r", "end before they begin"])
    h = big_dims()
    data = raw(h)
    assert len(data) == 945, len(data)
    write("bad/A28-offsets-sum-2e64.safetensors", data)
    add("bad/A28-offsets-sum-2e64.safetensors", "A28", contains=["{name}", "t0", "truncated"],
        note="945 bytes; safetensors 0.8.0 read_metadata panics on it in debug builds")
    write("bad/A30-rank-9.safetensors", raw('{"w.k":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}', 4))
    add("bad/A30-rank-9.safetensors", "A30", contains=["{name}", "w.k", "rank 9"])
    add("bad/A30-rank-1m.safetensors", "A30", contains=["{name}", "w.k", "rank 1000000"],
        note="shape with 1,000,000 entries, built at test time",
        setup=[{"op": "repeat", "to": "A30-rank-1m.safetensors", "header": True,
                "prefix": '{"w.k":{"dtype":"F32","data_offsets":[0,4],"shape":[1', "unit": ",1",
                "count": 999999, "suffix": "]}}", "data": 4}])


def not_safetensors():
    write("bad/A36-pickle.safetensors", b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")
    add("bad/A36-pickle.safetensors", "A36", contains=["{name}", "error[wrong-format]", "pickle", "never unpickles"],
        note="a pickle renamed .safetensors")
    write("bad/A36-zip.safetensors", b"PK\x03\x04\x14\x00\x00\x00\x00\x00" + b"\0" * 22)
    add("bad/A36-zip.safetensors", "A36", contains=["{name}", "error[wrong-format]", "zip archive"])
    write("bad/N-gguf.safetensors", b"GGUF\x03\x00\x00\x00" + b"\0" * 16)
    add("bad/N-gguf.safetensors", "N-gguf", contains=["{name}", "error[wrong-format]", "GGUF"])


def shard_tensors():
    e = ("model.embed_tokens.weight", F, [2], A8)
    n = ("model.norm.weight", F, [1], A4)
    return e, n


S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def check_finding(fid, *want):
    """`ckpt check` turns index/shard problems it sees before opening into findings (exit 1) with
    ids (docs/CHECKS.md) instead of exit 2."""
    return {"check": {"exit": 1, "contains": ["error[%s]" % fid] + list(want)}}


def index_cases():
    e, n = shard_tensors()
    wm = {e[0]: S1, n[0]: S2}
    for slug, value in [("dotdot", "../outside.safetensors"), ("absolute", "/etc/passwd"),
                        ("nested", "sub/../../x.safetensors"), ("backslash", "a\\b.safetensors"),
                        ("drive", "C:\\x.safetensors")]:
        rel = "bad/A31-traversal-%s" % slug
        sharded(rel, {e[0]: S1, n[0]: value}, {S1: [e]})
        add(rel, "A31", is_dir=True, contains=["model.safetensors.index.json", "model.norm.weight",
                                               "not a plain file name"])
    rel = "bad/A32-symlink-outside"
    sharded(rel, wm, {S1: [e]})
    add(rel, "A32", is_dir=True, contains=["model.safetensors.index.json", "leaves the checkpoint directory"],
        expect=check_finding("F009-unopenable", S2, "leaves the checkpoint directory"),
        setup=[{"op": "symlink_outside", "to": S2, "from": "bad/A32-symlink-outside/" + S1}],
        note="shard 2 is a symlink to a file outside the directory (created at test time)")
    rel = "bad/A33-fifo-shard"
    sharded(rel, wm, {S1: [e]})
    add(rel, "A33", is_dir=True, contains=[S2, "error[missing-input]", "not a regular file (a fifo)"],
        setup=[{"op": "fifo", "to": S2}], note="must not block")
    add("bad/A33-fifo.safetensors", "A33", contains=["{name}", "not a regular file (a fifo)"],
        setup=[{"op": "fifo", "to": "A33-fifo.safetensors"}])
    add("bad/A33-fifo-index", "A33", is_dir=True, contains=["model.safetensors.index.json", "not a regular file"],
        setup=[{"op": "fifo", "to": "model.safetensors.index.json"}],
        note="index.json is a FIFO: opening it must not block")
    add("bad/A33-fifo-config", "A33", is_dir=True, contains=["config.json", "not a regular file"],
        setup=[{"op": "fifo", "to": "config.json"},
               {"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}],
        note="config.json is a FIFO: opening it must not block")
    rel = "bad/A34-missing-shards"
    sharded(rel, {e[0]: "model-00001-of-00003.safetensors", n[0]: "model-00003-of-00003.safetensors",
                  "lm_head.weight": "model-00002-of-00003.safetensors"}, {})
    add(rel, "A34", is_dir=True, contains=["model.safetensors.index.json", "error[missing-input]",
                                           "model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"],
        expect=check_finding("F001-missing-shard", "model-00001-of-00003.safetensors",
                             "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"),
        note="all missing shards are listed, not only the first")
    rel = "bad/A35-index-lists-absent-tensor"
    sharded(rel, {e[0]: S1, n[0]: S2, "lm_head.weight": S2}, {S1: [e], S2: [n]})
    add(rel, "A35", is_dir=True, contains=["model.safetensors.index.json", "lm_head.weight", "does not hold it"],
        expect=check_finding("F003-index-wrong-shard", "lm_head.weight", "does not hold it"))
    rel = "bad/A35-shard-has-unlisted-tensor"
    sharded(rel, {e[0]: S1, n[0]: S2}, {S1: [e, ("lm_head.weight", F, [1], A4)], S2: [n]})
    add(rel, "A35", is_dir=True, contains=["model.safetensors.index.json", "lm_head.weight", "does not list it"],
        expect=check_finding("F004-not-in-index", "lm_head.weight", S1))
    rel = "bad/A35-tensor-in-two-shards"
    sharded(rel, {e[0]: S1, n[0]: S2}, {S1: [e, n], S2: [n]})
    add(rel, "A35", is_dir=True, contains=["model.norm.weight", S1, S2],
        expect=check_finding("F005-duplicate-tensor", "model.norm.weight", S1, S2))
    rel = "bad/A35-stray-shard"
    sharded(rel, {e[0]: S1, n[0]: S1}, {S1: [e, n], S2: [("x", F, [1], A4)]})
    add(rel, "A35", is_dir=True, contains=["model.safetensors.index.json", S2, "does not list"],
        expect=check_finding("F002-stray-shard", S2))
    rel = "good/A35-total-size-wrong"
    sharded(rel, wm, {S1: [e], S2: [n]}, total_size=999)
    add(rel, "A35", is_dir=True, exit=None, commands=ALL,
        expect={"inspect": {"exit": 0, "contains": ["warning", "total_size is 999"]},
                "convert": {"exit": 0, "contains": []}},
        note="total_size is informational: a warning, not an error; convert writes the right one")
    rel = "bad/A36-index-to-pickle"
    write(rel + "/pytorch_model-00001-of-00001.bin", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.")
    write(rel + "/model.safetensors.index.json",
          json.dumps({"metadata": {"total_size": 4}, "weight_map": {"a": "pytorch_model-00001-of-00001.bin"}}))
    add(rel, "A36", is_dir=True, contains=["pytorch_model-00001-of-00001.bin", "error[wrong-format]", "pickle"])
    rel = "bad/A37-index-duplicate-key"
    write(rel + "/" + S1, valid([e, n], metadata={"format": "pt"}))
    sharded(rel, None, {S1: [e, n]}, index_text='{"metadata":{"total_size":12},"weight_map":{"%s":"%s","%s":"%s","%s":"%s"}}'
            % (e[0], S1, n[0], S1, e[0], S2))
    add(rel, "A37", is_dir=True, contains=["model.safetensors.index.json", "appears twice", e[0]])
    rel = "bad/A37-index-non-string"
    sharded(rel, None, {S1: [e]}, index_text='{"weight_map":{"%s":1}}' % e[0])
    add(rel, "A37", is_dir=True, contains=["model.safetensors.index.json", e[0], "must be file names"])
    rel = "bad/A37-index-deep"
    sharded(rel, None, {S1: [e]}, index_text='{"weight_map":{},"metadata":{"x":' + "[" * 5000 + "]" * 5000 + "}}")
    add(rel, "A37", is_dir=True, contains=["model.safetensors.index.json", "recursion limit"])
    rel = "bad/A37-index-not-object"
    sharded(rel, None, {S1: [e]}, index_text='{"weight_map":[]}')
    add(rel, "A37", is_dir=True, contains=["model.safetensors.index.json", "`weight_map`"])
    rel = "bad/A37-index-huge"
    write(rel + "/" + S1, valid([e], metadata={"format": "pt"}))
    add(rel, "A37", is_dir=True, contains=["model.safetensors.index.json", "over the limit"],
        setup=[{"op": "sparse", "to": "model.safetensors.index.json", "size": 64 * 1024 * 1024 + 1}],
        note="a 64 MiB + 1 sparse index: rejected from fstat, never read")


def config_cases():
    def cfg(**kw):
        c = dict(TINY_CONFIG)
        for k, v in kw.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    # A43: non-JSON tokens in keys ckpt does not consult are accepted; in a consulted key they are not.
    text = config_text(TINY_CONFIG).replace('"torch_dtype"', '"time_step_limit": [0.0, Infinity],\n  "x_nan": NaN,\n  "torch_dtype"')
    write("good/A43-config-infinity/config.json", text)
    add("good/A43-config-infinity", "A43", is_dir=True, exit=0, commands=["inspect", "detect", "check", "logits"],
        expect={"check": {"exit": 1, "contains": ["C011-unmodelled-key", "time_step_limit"]},
                # keys LLaMA does not model: the computation is not known, so the model is not run
                "logits": {"exit": 2, "contains": ["time_step_limit", "does not model"]}},
        contains=[],
        setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}],
        note="Infinity/NaN in keys ckpt never consults: accepted")
    text = config_text(TINY_CONFIG).replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": Infinity')
    write("bad/A43-config-infinity-consulted/config.json", text)
    add("bad/A43-config-infinity-consulted", "A43", is_dir=True, contains=["config.json", "rms_norm_eps"],
        setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}])
    # A44: inconsistent hyperparameters. Parsing succeeds (inspect shows them); the commands that use
    # them must refuse with the key named.
    # Values that are legal but odd (eps 0, max_position_embeddings 2^40) load in transformers and
    # run in the reference (which allocates nothing per position): accepted, but must not crash.
    accepted = {"check": {"exit": 0}, "logits": {"exit": 0}}
    for slug, c, key, over in [
        ("heads-not-dividing", cfg(hidden_size=8, num_attention_heads=3, num_key_value_heads=3), "num_attention_heads", {}),
        # Detection ranks gemma (free head_dim) above llama when k/v shapes disagree with a llama
        # config, so logits refuses with "family `gemma` is recognised only" (exit 2, file named).
        ("kv-not-dividing", cfg(num_attention_heads=2, num_key_value_heads=3), "num_key_value_heads",
         {"logits": {"exit": 2, "contains": ["{name}"]}}),
        ("layers-1e9", cfg(num_hidden_layers=1000000000), "num_hidden_layers",
         {"logits": {"exit": 2, "contains": ["{name}", "layers=1000000000"]}}),
        ("vocab-vs-embedding", cfg(vocab_size=32000), "vocab_size",
         {"logits": {"exit": 2, "contains": ["{name}", "model.embed_tokens.weight", "32000"]}}),
        ("eps-zero", cfg(rms_norm_eps=0.0), "rms_norm_eps", accepted),
        ("max-pos-2e40", cfg(max_position_embeddings=2 ** 40), "max_position_embeddings", accepted),
    ]:
        rel = "bad/A44-%s" % slug
        write(rel + "/config.json", config_text(c))
        expect = {"inspect": {"exit": 0},
                  "check": {"exit": 1, "contains": [key]},
                  "logits": {"exit": 2, "contains": [key]}}
        expect.update(over)
        add(rel, "A44", is_dir=True, exit=None, commands=ALL, contains=[], expect=expect,
            setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}])
    # A45: type confusion in consulted keys: every command fails at open.
    for slug, c, key in [
        ("string", cfg(hidden_size="8"), "`hidden_size` must be a non-negative integer"),
        ("fraction", cfg(hidden_size=8.5), "`hidden_size` must be a non-negative integer"),
        ("bool", cfg(num_hidden_layers=True), "`num_hidden_layers` must be a non-negative integer"),
        ("negative", cfg(vocab_size=-16), "`vocab_size` must be a non-negative integer"),
        ("tie-string", cfg(tie_word_embeddings="false"), "`tie_word_embeddings` must be true or false"),
        ("arch-string", cfg(architectures="LlamaForCausalLM"), "`architectures` must be an array of strings"),
        ("multibyte-value", cfg(model_type=["\u00e9" * 40]), "`model_type` must be a string"),
    ]:
        rel = "bad/A45-%s" % slug
        write(rel + "/config.json", config_text(c))
        add(rel, "A45", is_dir=True, contains=["config.json", key],
            setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}])
    write("bad/A45-not-object/config.json", "[1, 2]\n")
    add("bad/A45-not-object", "A45", is_dir=True, contains=["config.json", "must be a JSON object"],
        setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}])
    write("bad/A45-not-json/config.json", "{\"hidden_size\": 8,,}\n")
    add("bad/A45-not-json", "A45", is_dir=True, contains=["config.json", "not valid JSON"],
        setup=[{"op": "copy", "from": "good/tiny-llama/model.safetensors", "to": "model.safetensors"}])


def mapping_cases():
    # These need `--mapping FILE` (mapping branch). The syntax follows DESIGN.md section 3; the
    # mapping owner adjusts the files if the final syntax differs.
    head = 'name = "evil"\nsummary = "corpus case"\nbase = "llama"\nexact = true\nsources = ["corpus"]\n\n'
    cases = [
        ("A46-two-to-one", head + '[tensors]\n"model.layers.{i}.ln1.weight" = "model.layers.{i}.input_layernorm.weight"\n'
         '"model.layers.{i}.ln2.weight" = "model.layers.{i}.input_layernorm.weight"\n', "input_layernorm"),
        ("A46-target-metadata", head + '[tensors]\n"model.norm.weight" = "__metadata__"\n', "__metadata__"),
        ("A46-target-empty", head + '[tensors]\n"model.norm.weight" = ""\n', "model.norm.weight"),
        ("A46-target-nul", head + '[tensors]\n"model.norm.weight" = "model.norm\\u0000weight"\n', "model.norm.weight"),
        ("A46-unknown-key", head + 'frobnicate = true\n[tensors]\n"a.{i}" = "b.{i}"\n', "frobnicate"),
        ("A46-placeholder-mismatch", head + '[tensors]\n"model.layers.{i}.ln1.weight" = "model.layers.{j}.input_layernorm.weight"\n', "{j}"),
        ("A46-not-toml", "name = \n[[[\n", "{name}"),
        ("A47-nested-repeat", head + '[tensors]\n"(a{1000}){1000}" = "x"\n', "{name}"),
    ]
    for slug, text, want in cases:
        p = "mapping/%s.toml" % slug
        write(p, text)
        add(p, slug[:3], role="mapping", commands=["detect"], contains=["{name}", want])
    add("mapping/A47-long-pattern.toml", "A47", role="mapping", commands=["detect"], contains=["{name}"],
        setup=[{"op": "repeat", "to": "A47-long-pattern.toml", "prefix": head + '[tensors]\n"',
                "unit": "a", "count": 1 << 20, "suffix": '" = "x"\n'}],
        note="a 1 MiB source pattern, built at test time")


def content_cases():
    tiny_dir("bad/A48-nan-weight", tensors=tiny_llama(nan_in="model.layers.0.self_attn.q_proj.weight"))
    add("bad/A48-nan-weight", "A48", is_dir=True, exit=None, contains=[],
        expect={"inspect": {"exit": 0},
                "check": {"exit": 1, "contains": ["model.layers.0.self_attn.q_proj.weight"]}},
        note="one NaN in q_proj; valid structure")
    # A49 subnormal weights / A50 extreme F16 magnitudes are valid files.
    sub = [(t[0], t[1], t[2], f32s([1e-40] * (len(t[3]) // 4)) if "mlp" in t[0] else t[3]) for t in tiny_llama()]
    tiny_dir("good/A49-subnormal", tensors=sub)
    add("good/A49-subnormal", "A49", is_dir=True, exit=None, expect={"inspect": {"exit": 0}}, contains=[])
    f16 = [(t[0], "F16", t[2], struct.pack("<%de" % (len(t[3]) // 4), *([65504.0 if i % 2 else -65504.0 for i in range(len(t[3]) // 4)])))
           for t in tiny_llama()]
    tiny_dir("good/A50-f16-extremes", cfg=dict(TINY_CONFIG, torch_dtype="float16"), tensors=f16)
    add("good/A50-f16-extremes", "A50", is_dir=True, exit=None, expect={"inspect": {"exit": 0}}, contains=[])


def good_cases():
    tiny_dir("good/tiny-llama")
    add("good/tiny-llama", "good", is_dir=True, exit=0, commands=["inspect", "detect", "check", "diff", "logits", "verify"],
        contains=[], expect={"inspect": {"exit": 0, "contains": ["model.layers.0.self_attn.q_proj.weight"]}},
        note="the valid reference model used by diff/verify")
    g = [
        ("good/A29-rank0.safetensors", [("scalar", F, [], A4)], {}, "scalar"),
        ("good/A29-zero-size.safetensors",
         [("z1", "F16", [2, 0], b""), ("z2", "F32", [0], b""), ("z3", "BF16", [0, 7], b""), ("w", F, [1], A4)], {}, "z1"),
        ("good/A29-only-zero-size.safetensors", [("z", F, [0, 4], b"")], {}, "z"),
        ("good/A07-leading-whitespace.safetensors", [("w", F, [1], A4)], {"lead": "  \n"}, "w"),
        ("good/A11-misaligned-5.safetensors", [("w", F, [2], A8)], {"pad": 0, "lead": "    "}, "w"),
        ("good/A15-unknown-field.safetensors", [("w", F, [1], A4)], {"extra": ',"evil":"x"'}, "w"),
        ("good/A19-traversal-name.safetensors", [("../../x", F, [1], A4)], {}, "../../x"),
        ("good/A19-unicode-name.safetensors", [("\u6743\u91cd.\u03c9", F, [1], A4)], {}, "\u6743\u91cd.\u03c9"),
    ]
    for path, ts, kw, want in g:
        meta = kw.pop("meta", {"format": "pt"})
        write(path, valid(ts, metadata=meta, **kw))
        cls = os.path.basename(path).split("-")[0]
        add(path, cls, exit=None, contains=[], expect={"inspect": {"exit": 0, "contains": [want]}})
    # A11: make sure the misaligned case really is misaligned.
    with open(os.path.join(HERE, "good/A11-misaligned-5.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        assert (8 + n) % 8 != 0 and (8 + n) % 2 == 1, n
    write("good/A14-metadata-null.safetensors", raw('{"__metadata__":null,' + T + "}", 4))
    add("good/A14-metadata-null.safetensors", "A14", exit=None, contains=[], expect={"inspect": {"exit": 0}})
    write("good/metadata-only.safetensors", raw('{"__metadata__":{"format":"pt"}}'))
    add("good/metadata-only.safetensors", "good", exit=None, contains=[], expect={"inspect": {"exit": 0}})
    write("good/empty-object.safetensors", raw("{}"))
    add("good/empty-object.safetensors", "good", exit=None, contains=[], expect={"inspect": {"exit": 0}})
    # Every dtype the format defines, with sizes that end on a byte for the sub-byte ones.
    ts = []
    for dt, bits in DTYPE_BITS.items():
        n = {4: 2, 6: 4}.get(bits, 1)
        ts.append(("t_" + dt.lower(), dt, [n], bytes(range(n * bits // 8))))
    write("good/all-dtypes.safetensors", valid(ts, metadata={"format": "pt"}))
    add("good/all-dtypes.safetensors", "good", exit=None, contains=[],
        expect={"inspect": {"exit": 0, "contains": ["F6_E2M3", "F8_E4M3FNUZ", "C64"]}})


def main():
    for d in ("bad", "good", "mapping"):
        shutil.rmtree(os.path.join(HERE, d), ignore_errors=True)
    good_cases()
    framing()
    json_structure()
    tensor_table()
    not_safetensors()
    index_cases()
    config_cases()
    mapping_cases()
    content_cases()
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump({"comment": "generated by make_corpus.py; see its docstring for the fields",
                   "entries": ENTRIES}, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print("%d entries" % len(ENTRIES))


if __name__ == "__main__":
    main()
