#!/usr/bin/env bash
# A client generated from docs/openapi.json alone (openapi-python-client, the pinned version
# in requirements-test.txt) drives a real `payhook serve`: the proof that a payment core in
# another language can integrate from the document. Needs the .venv scripts/test prepares.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. scripts/lib-serve.sh
start_payhook
gen="$served_dir/generated"
mkdir -p "$gen"
"$root/.venv/bin/openapi-python-client" generate --path docs/openapi.json --meta none \
  --config tests/client/generator.yaml --output-path "$gen/payhook_client" >/dev/null
PYTHONPATH="$gen" PAYHOOK_URL="$base" "$root/.venv/bin/python" tests/client/test_client.py
