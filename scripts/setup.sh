#!/usr/bin/env bash
# Installs the Debian packages husai needs to build, test and benchmark, only those that are missing.
# Called by `make deps` (and so by `make demo` / `make test`); safe to run repeatedly.
set -euo pipefail

BUILD_PKGS=(cmake make g++ pkg-config git
  libeigen3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libsqlite3-dev libsqlitecpp-dev liblbfgspp-dev libboost-math-dev libomp-dev
  libgtest-dev libbenchmark-dev gnuplot-nox libopenmpi-dev openmpi-bin)
TEST_PKGS=(clang clang-format clang-tidy libclang-rt-14-dev python3 python3-torch python3-scipy
  python3-numpy libopenblas0-pthread)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
echo "husai setup: installing missing Debian packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
