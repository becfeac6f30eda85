#!/usr/bin/env bash
# Peer benchmark: ckpt's reference forward pass against llama.cpp (llama-bench) and candle
# (candle-transformers' LLaMA) on one random TinyLlama-1.1B-shaped model in f32 and bf16
# (safetensors for ckpt and candle, GGUF for llama.cpp). Prints one Markdown table. Not run in CI;
# docs/PERFORMANCE.md explains the columns and records the last output.
#
#   scripts/bench_peers.sh
#
# Environment (defaults in brackets):
#   CKPT_PEERS_DIR  cache for the venv, llama.cpp source and build, candle build, models
#                   [~/.cache/ckpt-peers]; about 13 GB. Everything is reused when present.
#   CKPT_REPO       the ckpt checkout whose `ckpt` binary and `peers` bench are built [this repo]
#   CKPT_BIN        time this `ckpt` binary for whole-process runs instead of CKPT_REPO's release build
#   PAIRS           rounds; each round runs every tool once, back to back (A B C A B C ...) [5]
#   REPS            timed forwards per forward-only measurement, after one warm-up; median [3]
#   TOKENS          token counts ["1 32 128"]
#   DTYPES          ["bf16 f32"]
#   THREADS         threads for every tool [nproc]
#   SKIP            tools to leave out, e.g. "candle" or "llama.cpp" [""]
#
# Needs: cargo, python3 (with venv), a C/C++ compiler; downloads from PyPI and crates.io only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CKPT_PEERS_DIR:-$HOME/.cache/ckpt-peers}
CKPT_REPO=${CKPT_REPO:-$ROOT}
PAIRS=${PAIRS:-5}
REPS=${REPS:-3}
TOKENS=${TOKENS:-"1 32 128"}
DTYPES=${DTYPES:-"bf16 f32"}
THREADS=${THREADS:-$(nproc)}
SKIP=${SKIP:-}
# Pinned for repeatability: llama.cpp comes vendored in this llama-cpp-python sdist.
LLAMA_CPP_PYTHON=0.3.36
CANDLE_DIR=$ROOT/benches/peers/candle-llama

export RAYON_NUM_THREADS=$THREADS
log() { printf '[bench_peers] %s\n' "$*" >&2; }
skipped() { [[ " $SKIP " == *" $1 "* ]]; }
mkdir -p "$CACHE/models"

# --- tools ------------------------------------------------------------------------------------
PY=$CACHE/venv/bin/python
# Built in place (a venv's scripts name its path in their `#!` line, so it cannot be moved) and
# marked complete by a stamp file, so an interrupted install is redone.
if [[ ! -f $CACHE/venv/.complete ]]; then
    log "python venv -> $CACHE/venv"
    rm -rf "$CACHE/venv"
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install -q --upgrade pip
    "$CACHE/venv/bin/pip" install -q cmake==4.4.5 gguf==0.19.0 numpy scikit-build-core
    touch "$CACHE/venv/.complete"
fi

LLAMA_BENCH=$CACHE/llama-build/bin/llama-bench
if ! skipped llama.cpp && [[ ! -x $LLAMA_BENCH ]]; then
    src=$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON
    if [[ ! -d $src/vendor/llama.cpp ]]; then
        log "llama-cpp-python $LLAMA_CPP_PYTHON sdist (vendored llama.cpp) -> $CACHE/src"
        # --no-build-isolation: pip prepares the sdist's metadata with the venv's scikit-build-core
        # instead of building cmake from source in an isolated environment.
        "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$CACHE/src"
        tar xzf "$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$CACHE/src"
    fi
    log "building llama-bench (GGML_NATIVE=ON); log in $CACHE/llama-build.log"
    "$CACHE/venv/bin/cmake" -S "$src/vendor/llama.cpp" -B "$CACHE/llama-build" \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$CACHE/llama-build.log" 2>&1
    "$CACHE/venv/bin/cmake" --build "$CACHE/llama-build" --target llama-bench -j "$THREADS" \
        >>"$CACHE/llama-build.log" 2>&1
fi

CANDLE=$CACHE/candle-target/release/candle-llama
if ! skipped candle; then
    log "building the candle runner (cargo, crates.io); log in $CACHE/candle-build.log"
    CARGO_TARGET_DIR=$CACHE/candle-target cargo build -q --release \
        --manifest-path "$CANDLE_DIR/Cargo.toml" >"$CACHE/candle-build.log" 2>&1
fi

log "building ckpt and its peers bench in $CKPT_REPO"
(cd "$CKPT_REPO" && cargo build -q --release --bin ckpt)
CKPT_BIN=${CKPT_BIN:-$CKPT_REPO/target/release/ckpt}
PEERS=$(cd "$CKPT_REPO" && cargo bench -q --no-run --bench peers --message-format=json 2>/dev/null |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "peers" and m.get("executable"):
        print(m["executable"])')
[[ -x $PEERS ]] || { log "could not build the peers bench in $CKPT_REPO"; exit 2; }

# --- models -----------------------------------------------------------------------------------
for dt in $DTYPES; do
    st=$CACHE/models/st-$dt
    if [[ ! -f $st/.done ]]; then
        log "writing the random TinyLlama-shaped $dt safetensors -> $st"
        rm -rf "$st"
        "$PEERS" write "$st" "$dt"
        touch "$st/.done"
    fi
    if ! skipped llama.cpp && [[ ! -f $CACHE/models/$dt.gguf ]]; then
        log "writing its GGUF -> $CACHE/models/$dt.gguf"
        "$PY" "$ROOT/scripts/bench_peers_gguf.py" "$st" "$CACHE/models/$dt.gguf.tmp"
        mv "$CACHE/models/$dt.gguf.tmp" "$CACHE/models/$dt.gguf"
    fi
done

# --- measurements -----------------------------------------------------------------------------
RESULTS=$CACHE/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; } # tool kind dtype tokens pair s

# Whole-process seconds of a command (its output discarded; a failure stops the script).
wall() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>"$CACHE/last.err" || { log "failed: $*"; cat "$CACHE/last.err" >&2; exit 2; }
    local t1=$EPOCHREALTIME
    "$PY" -c "print(f'{$t1 - $t0:.6f}')"
}

# llama-bench's median prompt-processing seconds from its JSON.
llama_fwd() {
    "$LLAMA_BENCH" -m "$1" -p "$2" -n 0 -t "$THREADS" -r "$REPS" -o json 2>/dev/null |
        "$PY" -c 'import json,statistics,sys
m = statistics.median(json.load(sys.stdin)[0]["samples_ns"])
print(f"{m / 1e9:.6f}")'
}

ids() { "$PY" -c "print(','.join(str((i * 7919 + 1) % 32000) for i in range($1)))"; }

log "machine: FMA peak"
PEAK=$("$PEERS" peak)

for dt in $DTYPES; do
    st=$CACHE/models/st-$dt
    gg=$CACHE/models/$dt.gguf
    # Each dtype's model files start from the state of a first load from disk: written back,
    # dropped from the page cache and read once in order, right before that dtype's runs. The
    # pages a write leaves in the cache can be small, and mapping those costs every tool about
    # twice the page-fault time; and a file left idle may be partly paged out meanwhile (this
    # VM's DAMON pages out memory idle for a minute). docs/PERFORMANCE.md has the figures.
    log "$dt: page cache: dropping and reading once each model file; memory/page-cache bandwidth"
    files=("$st/model.safetensors")
    skipped llama.cpp || files+=("$gg")
    "$PEERS" settle "${files[@]}" >&2
    out=$("$PEERS" stream "$st/model.safetensors")
    read -r read_s mmap_s mem_gbs <<<"$out"
    record stream read "$dt" 0 0 "$read_s"
    record stream mmap "$dt" 0 0 "$mmap_s"
    record stream mem "$dt" 0 0 "$mem_gbs"
    for n in $TOKENS; do
        tok=$(ids "$n")
        for ((p = 1; p <= PAIRS; p++)); do
            log "$dt, $n tokens, round $p/$PAIRS"
            # Assignments, not arguments, so that a failed measurement stops the script.
            s=$("$PEERS" forward "$st" "$n" "$REPS")
            record ckpt fwd "$dt" "$n" "$p" "$s"
            s=$(wall "$CKPT_BIN" logits "$st" --ids "$tok" -q)
            record ckpt proc "$dt" "$n" "$p" "$s"
            if ! skipped llama.cpp; then
                s=$(llama_fwd "$gg" "$n")
                record llama.cpp fwd "$dt" "$n" "$p" "$s"
                s=$(wall "$LLAMA_BENCH" -m "$gg" -p "$n" -n 0 -t "$THREADS" -r 1 --no-warmup)
                record llama.cpp proc "$dt" "$n" "$p" "$s"
            fi
            if ! skipped candle; then
                s=$("$CANDLE" "$st" "$n" "$REPS")
                record candle fwd "$dt" "$n" "$p" "$s"
                s=$(wall "$CANDLE" "$st" "$n" 0)
                record candle proc "$dt" "$n" "$p" "$s"
            fi
        done
    done
done

# bf16 against f32, paired in one process round by round (the rows above are minutes apart).
if [[ " $DTYPES " == *" bf16 "* && " $DTYPES " == *" f32 "* ]]; then
    for n in $TOKENS; do
        ((n > 1)) || continue
        log "bf16 against f32, $n tokens, $PAIRS rounds in one process"
        out=$("$PEERS" pair "$CACHE/models/st-bf16" "$CACHE/models/st-f32" "$n" "$REPS" "$PAIRS")
        p=0
        while read -r b f; do
            p=$((p + 1))
            record ckpt pair-bf16 pair "$n" "$p" "$b"
            record ckpt pair-f32 pair "$n" "$p" "$f"
        done <<<"$out"
    done
fi

# The peak again, after the runs, keeping the larger: one probe can land while a core is still
# busy (a sample of 102 GFLOP/s against 202 was once recorded this way).
log "machine: FMA peak again"
PEAK2=$("$PEERS" peak)
PEAK=$("$PY" -c "print(max($PEAK, $PEAK2))")
ISA=$("$PEERS" isa)
BF16_DOT=$("$PEERS" bf16-dot-peak)

# --- table ------------------------------------------------------------------------------------
CPU="$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(grep -owE 'avx2|fma|f16c|avx512f|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
st_any=$CACHE/models/st-${DTYPES%% *}/model.safetensors
"$PY" - "$RESULTS" "$st_any" "$PEAK" "$THREADS" "$PAIRS" "$REPS" "$LLAMA_CPP_PYTHON" "$CPU" "$ISA" "$BF16_DOT" <<'EOF'
import collections, json, statistics, struct, sys

results, st, peak, threads, pairs, reps, lcp, cpu, isa, bf16_dot = sys.argv[1:]
with open(st, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
params = sum(
    __import__("math").prod(v["shape"]) for k, v in header.items() if k != "__metadata__"
)
data = collections.defaultdict(dict)  # (tool, kind, dtype, tokens) -> {pair: s}
for line in open(results):
    tool, kind, dt, tok, pair, s = line.split("\t")
    data[(tool, kind, dt, int(tok))][int(pair)] = float(s)

tools = [t for t in ("ckpt", "llama.cpp", "candle") if any(k[0] == t for k in data)]
peers = [t for t in tools if t != "ckpt"]
rows = sorted({(k[2], k[3]) for k in data if k[0] != "stream" and k[2] != "pair"},
              key=lambda r: (r[0], r[1]))
med = lambda d: statistics.median(d.values())


def cell(tool, kind, dt, tok):
    d = data.get((tool, kind, dt, tok))
    if not d:
        return "n/a"
    s = med(d)
    g = 2 * params * tok / s / 1e9
    return f"{s:.3f} ({g:.0f})" if g >= 10 else f"{s:.3f} ({g:.1f})"


def ratio(peer, kind, dt, tok):
    a, b = data.get(("ckpt", kind, dt, tok)), data.get((peer, kind, dt, tok))
    if not a or not b:
        return "n/a"
    return f"{statistics.median(a[p] / b[p] for p in a if p in b):.2f}"


print(f"cpu: {cpu.strip()}")
print(f"{params / 1e9:.3f} B parameters; {threads} threads; {pairs} rounds, forward-only = median of "
      f"{reps} after a warm-up; llama.cpp from llama-cpp-python {lcp}")
isa_name = {"avx512": "AVX-512", "avx2": "AVX2", "amx": "AVX-512; ckpt's bf16 matmuls of 16+ tokens on AMX tiles"}.get(isa, isa)
print(f"f32 FMA peak ({isa_name}, {threads} threads): {float(peak):.0f} GFLOP/s; memory read bandwidth: "
      f"{data[('stream', 'mem', rows[0][0], 0)][0]:.1f} GB/s")
if bf16_dot != "n/a":
    print(f"bf16 dot-product peak (vdpbf16ps, AVX512_BF16, {threads} threads): {float(bf16_dot):.0f} "
          f"GFLOP/s = {float(bf16_dot) / float(peak):.2f} x the f32 FMA peak")
print("page cache: each dtype's model files dropped and read once in order right before its runs (as "
      "after a first load from disk)")
print()
head = ["dtype", "tokens", "weights once s (read / mmap)"]
head += [f"{t} fwd s (GFLOP/s)" for t in tools] + [f"ckpt / {p} fwd" for p in peers]
head += [f"{t} process s (GFLOP/s)" for t in tools] + [f"ckpt / {p} process" for p in peers]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for dt, tok in rows:
    once = f"{data[('stream', 'read', dt, 0)][0]:.3f} / {data[('stream', 'mmap', dt, 0)][0]:.3f}"
    c = [dt, str(tok), once]
    c += [cell(t, "fwd", dt, tok) for t in tools] + [ratio(p, "fwd", dt, tok) for p in peers]
    c += [cell(t, "proc", dt, tok) for t in tools] + [ratio(p, "proc", dt, tok) for p in peers]
    print("| " + " | ".join(c) + " |")
pairs_tok = sorted({k[3] for k in data if k[2] == "pair"})
if pairs_tok:
    print()
    print("bf16 / f32 forward-only, paired in one process (each round: both models, alternating which goes "
          "first, median of REPS forwards each):")
    print()
    print("| tokens | bf16 s | f32 s | bf16 / f32 per round | median | rounds bf16 not slower |")
    print("|---|---|---|---|---|---|")
    for tok in pairs_tok:
        b, f = data[("ckpt", "pair-bf16", "pair", tok)], data[("ckpt", "pair-f32", "pair", tok)]
        r = [b[p] / f[p] for p in sorted(b) if p in f]
        print(f"| {tok} | {med(b):.3f} | {med(f):.3f} | {' '.join(f'{x:.2f}' for x in r)} | "
              f"{statistics.median(r):.2f} | {sum(x <= 1.0 for x in r)} of {len(r)} |")
EOF
