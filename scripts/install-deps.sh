#!/usr/bin/env bash
# Installs the Debian 12 packages llmthreads needs to build and test (only the missing ones).
set -euo pipefail
pkgs=(g++ cmake ninja-build pkg-config libpcre2-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev liblz4-dev libcpp-httplib-dev
      python3-jinja2)  # python3-jinja2: the chat-template oracle in tests/test-jinja.cpp
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
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
