# Sourced by scripts that need a real payhook: `start_payhook` runs `payhook serve` (debug
# build) on a free loopback port with a temporary SQLite file and a fresh admin token, sets
# `base`, `PAYHOOK_ADMIN`, `served_dir`, and stops it (and removes the files) on exit.
start_payhook() {
  cargo build -q -p payhook
  served_dir=$(mktemp -d)
  export PAYHOOK_ADMIN="admin-$(date +%s%N)"
  PAYHOOK_ADMIN_TOKEN="$PAYHOOK_ADMIN" PAYHOOK_LOG=warn \
    target/debug/payhook serve --listen 127.0.0.1:0 --database "$served_dir/payhook.db" "$@" \
    >"$served_dir/out" 2>"$served_dir/err" &
  served_pid=$!
  trap 'kill "$served_pid" 2>/dev/null; wait "$served_pid" 2>/dev/null; rm -rf "$served_dir"' EXIT
  base=""
  for _ in $(seq 1 100); do
    base=$(sed -n 's/^payhook listening on //p' "$served_dir/out" | head -n1)
    [ -n "$base" ] && return 0
    kill -0 "$served_pid" 2>/dev/null || { cat "$served_dir/err" >&2; return 1; }
    sleep 0.1
  done
  echo "payhook did not start" >&2
  return 1
}
