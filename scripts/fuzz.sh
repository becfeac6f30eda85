#!/usr/bin/env bash
# Fuzz smoke run for ckpt's parsers: installs cargo-fuzz if missing, builds every target on the
# stable toolchain without a sanitizer (`-s none`: safe Rust keeps its bounds checks, and cargo-fuzz
# builds with debug assertions and overflow checks on, which is what catches A28-style overflows),
# replays every committed regression input, then runs each target for SECONDS (default 60).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#
# Seeds: tests/corpus/ (bad + good files, index and config files) are copied into fuzz/corpus/<target>/
# on every run; the working corpus itself is not committed (fuzz/.gitignore). A crash is saved by
# libFuzzer under fuzz/artifacts/<target>/: minimise it (`cargo fuzz tmin -s none <target> FILE`)
# and commit it to fuzz/regressions/<target>/ so every later run replays it.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/fuzz"

TARGETS=(
  parse_header
  parse_header_structured
  index_json
  config_json
  mapping_rules      # mapping files + --rename rules: Ok => targets non-empty, not reserved; renames injective
  roundtrip_write    # write-then-read round trip: open(write_view(identity(open(x)))) == x, byte for byte
  forward_tiny       # reference forward on tiny arbitrary dims/weights: no panic; scalar == SIMD (finite)
  parse_gguf         # GGUF parser + metadata config: no panic; accepted tensors aligned, inside, disjoint
  journal            # --in-place rollback journal (plantable): only shard/config/index names, exact re-serialisation
  torch_pickle       # restricted pickle interpreter / torch.save archive reader: no panic, bounded, ranges in file
  tokenizer_json     # tokenizer.json, only the parts read built: no panic; valid JSON accepted; reformatting changes nothing
)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "building ${#TARGETS[@]} targets"
cargo fuzz build -s none

seed() {
  local t="$1" dir="corpus/$1"
  mkdir -p "$dir"
  case "$t" in
    parse_header|parse_header_structured)
      find "$ROOT/tests/corpus/bad" "$ROOT/tests/corpus/good" -maxdepth 1 -name '*.safetensors' -type f \
        -size -64k -exec cp {} "$dir/" \; ;;
    index_json)
      find "$ROOT/tests/corpus" "$ROOT/fixtures" -name '*.index.json' -type f -size -64k \
        -exec sh -c 'cp "$1" "$2/$(echo "$1" | cksum | cut -d" " -f1).json"' _ {} "$dir" \; ;;
    config_json)
      find "$ROOT/tests/corpus" "$ROOT/fixtures" \( -name config.json -o -name params.json \) -type f \
        -exec sh -c 'cp "$1" "$2/$(echo "$1" | cksum | cut -d" " -f1).json"' _ {} "$dir" \; ;;
    tokenizer_json)
      find "$ROOT/fixtures" "$ROOT/tests/corpus" -name 'tokenizer*.json' -type f -size -64k \
        -exec sh -c 'cp "$1" "$2/$(echo "$1" | cksum | cut -d" " -f1).json"' _ {} "$dir" \; ;;
    parse_gguf)
      find "$ROOT/fixtures/gguf" -name '*.gguf' -type f -size -512k -exec cp {} "$dir/" \; ;;
    torch_pickle)
      # First byte (mod 3): 0 a data.pkl stream, 1 a zip archive, 2 a legacy file.
      for f in "$ROOT"/tests/corpus/torch/*.pth "$ROOT"/tests/corpus/torch/*.bin "$ROOT"/tests/corpus/torch-good/*.pth; do
        [ -f "$f" ] || continue
        [ "$(stat -c %s "$f")" -lt 65000 ] || continue
        case "$(basename "$f")" in
          *legacy*) { printf '\x02'; cat "$f"; } >"$dir/legacy-$(basename "$f")"; continue ;;
        esac
        { printf '\x01'; cat "$f"; } >"$dir/zip-$(basename "$f")"
        if command -v unzip >/dev/null; then
          unzip -p "$f" '*/data.pkl' 2>/dev/null | { printf '\x00'; cat; } >"$dir/pkl-$(basename "$f")" || true
        fi
      done ;;
    mapping_rules)
      # Mapping files; the rename rules go after a NUL byte (see fuzz_targets/mapping_rules.rs).
      cp "$ROOT"/mappings/*.toml "$dir/"
      printf 'x\0base_model\\.model\\.(.*)=$1\nmodel\\.layers\\.(\\d+)\\.(.*)=h.$1.$2\n' >"$dir/rename-seed" ;;
    journal)
      # Mode byte 1: a description framed with a valid checksum; blobs after the NUL.
      printf '\001{"version":2,"run":"0123456789ab","dir":[1,2],"stamp":[0,0],"entries":[{"kind":"header","file":"model.safetensors","id":{"dev":1,"ino":2,"size":3,"mtime":[0,0]},"len":2},{"kind":"file","file":"config.json","old":null,"new":{"dev":1,"ino":3,"size":2,"mtime":[0,0]},"old_len":0,"new_len":2}]}\000abcd{}' >"$dir/seed-v2" ;;
  esac
}

dict_for() {
  case "$1" in
    parse_header) echo "-dict=dict/header.dict" ;;
    # Structured targets: let inputs grow at once (more tensors, longer weight streams) instead of
    # libFuzzer's slow length ramp, which kept them under 40 bytes in a 60 s run.
    roundtrip_write|forward_tiny) echo "-len_control=0" ;;
    *) echo "" ;;
  esac
}

status=0
for t in "${TARGETS[@]}"; do
  if compgen -G "regressions/$t/*" >/dev/null; then
    echo "== $t: replaying $(ls "regressions/$t" | wc -l) regression inputs"
    cargo fuzz run -s none "$t" regressions/"$t"/* -- -runs=1 || status=1
  fi
done
for t in "${TARGETS[@]}"; do
  seed "$t"
  echo "== $t: fuzzing for ${SECONDS_PER_TARGET}s"
  log="$(mktemp)"
  # shellcheck disable=SC2046
  if ! cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" \
      -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 $(dict_for "$t") 2>"$log"; then
    status=1
    tail -40 "$log"
  fi
  grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb' "$log" | sed "s/^/  $t /" || true
  grep -E '^#[0-9]+ *DONE' "$log" | sed "s/^/  $t /" || true
  rm -f "$log"
done
exit "$status"
