#!/usr/bin/env bash
# Runs scripts/openai-client-check.mjs (the official `openai` npm client) against a
# `llmthreads serve` of stories260K, when node and the client are present; says so and exits 0
# when they are not (the client is not a project dependency: it comes from npm's cache or,
# when the registry is reachable, from the registry; CI may be offline).
# Usage: scripts/openai-client-ci.sh BUILD_DIR MODEL.gguf   (NODE_PATH: where `openai` is)
set -euo pipefail
build="${1:-build}"
model="${2:-${LLMT_DATA:-../shared}/models/stories260K.gguf}"
node_path="${NODE_PATH:-/tmp/oai/node_modules}"
if ! command -v node >/dev/null; then
  echo "skipped: node is not installed"
  exit 0
fi
have_client() {
  NODE_PATH="$node_path" node -e \
    "require.resolve('openai', {paths: process.env.NODE_PATH.split(':')})" >/dev/null 2>&1
}
if ! have_client && command -v npm >/dev/null; then
  # From npm's local cache only (no network): works where it was installed once before.
  mkdir -p "$build/oai"
  if npm install --offline --no-audit --no-fund --prefix "$build/oai" openai >/dev/null 2>&1; then
    node_path="$build/oai/node_modules"
  # Else from the registry, when this machine reaches it (bounded: an offline CI must not hang).
  elif timeout 120 npm install --no-audit --no-fund --fetch-retries=0 --prefix "$build/oai" \
    openai >/dev/null 2>&1; then
    node_path="$build/oai/node_modules"
  fi
fi
if ! have_client; then
  echo "skipped: the openai npm package is not installed (NODE_PATH $node_path) nor in npm's cache"
  exit 0
fi
port=$((20000 + RANDOM % 20000))
"$build/llmthreads" serve -m "$model" --port "$port" --api-key ci-key --chat-template chatml \
  --threads 2 >"$build/openai-client-serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
NODE_PATH="$node_path" timeout 300 node scripts/openai-client-check.mjs "http://127.0.0.1:$port/v1" ci-key
