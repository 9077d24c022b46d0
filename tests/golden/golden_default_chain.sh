#!/usr/bin/env bash
# Golden test (ctest golden_default_chain): a short run of the default chain -- train-transformer with the
# default config for a few epochs, extract with the default site, train-sae with the default (TopK) settings
# for a few steps -- must give exactly the bytes whose sha256 are committed in tests/golden/default_chain.sha256,
# with 1 and with 2 threads. It guards CONTRACTS.md "Same bytes" across machines: any x86-64 CPU with AVX2,
# with or without AVX-512, running the default (x86-64-v3) build must agree.
#
#   bash tests/golden/golden_default_chain.sh HUSAI WORKDIR            check (what ctest runs)
#   bash tests/golden/golden_default_chain.sh HUSAI WORKDIR --update   rewrite the committed hashes (`make golden-update`)
#
# Update only on purpose: after a change to a default, a kernel or the training arithmetic that is meant to
# change the numbers, never to make a machine that disagrees pass.
set -euo pipefail
HUSAI=$(realpath "$1"); WORK=$2; MODE=${3:-check}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GOLDEN="$HERE/default_chain.sha256"
FILES=(model/model.safetensors acts.safetensors sae/seed1/sae_weights.safetensors)

# The chain runs inside its folder with relative paths: the activation file records the model path it was
# given, so the bytes must not depend on where the test runs.
run_chain() {  # $1 = thread count, $2 = folder
  rm -rf "$2"; mkdir -p "$2"
  (cd "$2"
   "$HUSAI" train-transformer --quiet --threads "$1" --out model --epochs 3
   "$HUSAI" extract --quiet --threads "$1" --model model --out acts.safetensors
   "$HUSAI" train-sae --quiet --threads "$1" --activations acts.safetensors --steps 40 --seeds 1 --out sae)
}

hashes() {  # $1 = folder; prints "NAME SHA256" per file
  for f in "${FILES[@]}"; do echo "$f $(sha256sum "$1/$f" | cut -d' ' -f1)"; done
}

rm -rf "$WORK"; mkdir -p "$WORK"
run_chain 1 "$WORK/threads1"
run_chain 2 "$WORK/threads2"
hashes "$WORK/threads1" > "$WORK/threads1.sha256"
hashes "$WORK/threads2" > "$WORK/threads2.sha256"
if ! cmp -s "$WORK/threads1.sha256" "$WORK/threads2.sha256"; then
  echo "FAIL: the default chain gives different bytes with 1 and 2 threads:" >&2
  diff "$WORK/threads1.sha256" "$WORK/threads2.sha256" >&2 || true
  exit 1
fi

if [[ "$MODE" == "--update" ]]; then
  {
    echo "# sha256 of the default chain's outputs (tests/golden/golden_default_chain.sh); regenerate on purpose"
    echo "# with \`make golden-update\`. Written by $("$HUSAI" --version | head -1) on $(uname -m)."
    cat "$WORK/threads1.sha256"
  } > "$GOLDEN"
  echo "golden_default_chain: wrote $GOLDEN:"
  cat "$WORK/threads1.sha256"
  exit 0
fi

[[ -f "$GOLDEN" ]] || { echo "FAIL: $GOLDEN is missing; create it with \`make golden-update\`" >&2; exit 1; }
grep -v '^#' "$GOLDEN" > "$WORK/golden.sha256"
if ! cmp -s "$WORK/golden.sha256" "$WORK/threads1.sha256"; then
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
  avx512=$(grep -q -m1 -w avx512f /proc/cpuinfo && echo yes || echo no)
  cat >&2 <<MSG
FAIL: golden_default_chain: this machine computes different bits from the committed golden hashes.
  CPU: ${cpu:-unknown} (AVX-512F: $avx512)
  expected ($GOLDEN):
$(sed 's/^/    /' "$WORK/golden.sha256")
  got (identical with 1 and 2 threads):
$(sed 's/^/    /' "$WORK/threads1.sha256")
Results are meant to be the same bits on every x86-64 CPU with AVX2 for the default build (-march=x86-64-v3,
fixed Eigen blocking; see README "Determinism"). Check that this build is not -DHUSAI_NATIVE=ON and uses the
same compiler, Eigen and glibc. If a change to defaults or arithmetic is meant to change the numbers, regenerate
the hashes deliberately with \`make golden-update\` (or: bash tests/golden/golden_default_chain.sh build/bin/husai
/tmp/golden --update) and commit tests/golden/default_chain.sha256 with that change.
MSG
  exit 1
fi
echo "golden_default_chain: ok (1 and 2 threads match the committed hashes)"
