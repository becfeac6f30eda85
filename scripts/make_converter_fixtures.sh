#!/usr/bin/env bash
# GGUF fixtures written by llama.cpp's own converter, `convert_hf_to_gguf.py` (from the llama.cpp
# vendored in the pinned llama-cpp-python sdist, with its own gguf-py), from the Hugging Face
# fixtures: fixtures/gguf/converter/<fixture>-<outtype>.gguf; and by its own quantizer,
# `llama-quantize` (built here from the same source), from the converter's F16 of
# fixtures/gguf/k-src (hidden 256, so the K-quant types apply): k-src-<type>.gguf. `tests/gguf.rs`
# verifies each against its source (what a user who ran the converter would ask ckpt). Not run in
# CI; CI reads the files.
#
#   PY=/path/to/fixtures-venv/bin/python scripts/make_converter_fixtures.sh
#
# PY: a Python with scripts/requirements-fixtures.txt, sentencepiece, cmake and ninja installed
#     (cmake and ninja from PyPI, found beside PY) [python3].
# CKPT_CONVERTER_DIR: where the sdist is downloaded and unpacked [~/.cache/ckpt-converter].
# The converter needs a tokenizer; every fixture gets the 256-piece SentencePiece model of
# fixtures/tokenizers/yi-remote (the fixtures' vocabulary size), copied beside it in a temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-python3}
CACHE=${CKPT_CONVERTER_DIR:-$HOME/.cache/ckpt-converter}
# Pinned for repeatability, as in scripts/bench_peers.sh.
LLAMA_CPP_PYTHON=0.3.36
OUT=$ROOT/fixtures/gguf/converter

SRC=$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON
if [[ ! -d $SRC/vendor/llama.cpp ]]; then
    mkdir -p "$CACHE"
    "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$CACHE"
    tar xzf "$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$CACHE"
fi
LLAMA=$SRC/vendor/llama.cpp

# fixture:outtype. What each is for (the verdicts are asserted by tests/gguf.rs):
#   llama3-scaling f32   llama3 rope scaling as the converter writes it (`rope_freqs`), exact
#   llama-tied q8_0      the converter's Q8_0 of a tied model (no output.weight), within the bands
#   qwen2 f16            the default outtype: every matrix rounded to F16, `qwen2` architecture
#   qwen3 bf16           BF16 rounding, `qwen3` architecture (per-head q/k norms)
#   mistral-window q8_0  a 5-token sliding window llama.cpp's `llama` graph does not apply: not
#                        the source's model
#   phi3 q8_0            `phi3` architecture: fused attn_qkv and gate/up ffn_up
#   phi3-partial f32     `phi3` with half of each head rotated (rope.dimension_count 8 of 16)
#   gemma f16            an architecture ckpt does not compute: refused
CASES="llama3-scaling:f32 llama-tied:q8_0 qwen2:f16 qwen3:bf16 mistral-window:q8_0 phi3:q8_0 phi3-partial:f32 gemma:f16"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$OUT"
mkdir -p "$OUT"
for spec in $CASES; do
    name=${spec%%:*}
    outtype=${spec##*:}
    cp -r "$ROOT/fixtures/$name" "$TMP/$name"
    rm -f "$TMP/$name/expected.safetensors"
    cp "$ROOT/fixtures/tokenizers/yi-remote/tokenizer.model" "$TMP/$name/"
    PYTHONPATH=$LLAMA/gguf-py "$PY" "$LLAMA/convert_hf_to_gguf.py" "$TMP/$name" \
        --outtype "$outtype" --outfile "$OUT/$name-$outtype.gguf" >"$TMP/$name.log" 2>&1 ||
        { cat "$TMP/$name.log" >&2; exit 1; }
    printf '  %s-%s.gguf: %s bytes\n' "$name" "$outtype" "$(stat -c %s "$OUT/$name-$outtype.gguf")"
done

# llama.cpp's quantizer (importance-free, as `llama-quantize IN OUT TYPE` runs by default): the
# mixes users download, Q4_K_M (Q4_K with Q6_K for some tensors) and Q2_K (Q2_K, Q3_K, Q6_K).
BIN=$(dirname "$PY")
QUANTIZE=$CACHE/build/bin/llama-quantize
if [[ ! -x $QUANTIZE ]]; then
    "$BIN/cmake" -S "$LLAMA" -B "$CACHE/build" -G Ninja -DCMAKE_MAKE_PROGRAM="$BIN/ninja" \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$TMP/cmake.log" 2>&1 ||
        { cat "$TMP/cmake.log" >&2; exit 1; }
    "$BIN/cmake" --build "$CACHE/build" --target llama-quantize -j "$(nproc)" >>"$TMP/cmake.log" 2>&1 ||
        { cat "$TMP/cmake.log" >&2; exit 1; }
fi
cp -r "$ROOT/fixtures/gguf/k-src" "$TMP/k-src"
rm -f "$TMP/k-src/expected.safetensors"
cp "$ROOT/fixtures/tokenizers/yi-remote/tokenizer.model" "$TMP/k-src/"
PYTHONPATH=$LLAMA/gguf-py "$PY" "$LLAMA/convert_hf_to_gguf.py" "$TMP/k-src" --outtype f16 \
    --outfile "$TMP/k-src-f16.gguf" >"$TMP/k-src.log" 2>&1 || { cat "$TMP/k-src.log" >&2; exit 1; }
for q in Q4_K_M Q2_K; do
    lower=$(printf '%s' "$q" | tr 'A-Z' 'a-z')
    "$QUANTIZE" "$TMP/k-src-f16.gguf" "$OUT/k-src-$lower.gguf" "$q" >"$TMP/q.log" 2>&1 ||
        { cat "$TMP/q.log" >&2; exit 1; }
    printf '  k-src-%s.gguf: %s bytes\n' "$lower" "$(stat -c %s "$OUT/k-src-$lower.gguf")"
done
