#!/usr/bin/env bash
# Installs the Debian 12 packages llmthreads needs to build and test (only the missing ones).
set -euo pipefail
pkgs=(g++ cmake ninja-build pkg-config libpcre2-dev nlohmann-json3-dev libcli11-dev
      libopenmpi-dev openmpi-bin  # `mpirun -n K llmthreads run` (tools/cli/mpi-run.h) and its tests
      libgtest-dev libgmock-dev liblz4-dev libcpp-httplib-dev clang-format
      clang libclang-rt-14-dev  # clang + its runtimes: the libFuzzer targets (scripts/fuzz.sh)
      python3-jinja2)           # the chat-template oracle in tests/test-jinja.cpp
# The AArch64 cross build of the kernel tests in .ci/run (x86-64 hosts): Debian's cross compiler,
# qemu-user, and the arm64 multiarch -dev packages of the libraries the test binaries link.
cross_pkgs=(g++-aarch64-linux-gnu qemu-user libpcre2-dev:arm64 liblz4-dev:arm64 libgtest-dev:arm64
            libcpp-httplib-dev:arm64)
[ "$(uname -m)" = x86_64 ] && pkgs+=("${cross_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
if [[ " ${missing[*]} " == *":arm64 "* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo_cmd[@]}" dpkg --add-architecture arm64
fi
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
