#!/usr/bin/env bash
# The main job on a fresh machine: install, build, generate a sample dataset
# in a local directory, start a cache node, create the dataset and read it
# through the cache — cold (from the origin) and warm (from the tiers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
shoal_build

demo="${SHOAL_DEMO_DIR:-/var/tmp/shoal-demo}"
sample="$demo/sample"
if [ ! -f "$sample/.complete" ]; then
  echo "demo: generating sample dataset in $sample" >&2
  rm -rf "$sample"; mkdir -p "$sample/models" "$sample/images"
  for i in 0 1 2 3; do head -c $((64 << 20)) /dev/urandom > "$sample/models/shard-$i.safetensors"; done
  for i in $(seq -w 0 499); do head -c $((4096 + 10#$i * 97)) /dev/urandom > "$sample/images/img-$i.jpg"; done
  echo '{"model": "demo", "shards": 4}' > "$sample/models/config.json"
  touch "$sample/.complete"
fi

rm -rf "$demo/node" /dev/shm/shoal-demo
port_api=17070; port_admin=19464
"$SHOAL_BIN/cache-node" --data-dir "$demo/node" --memory-dir /dev/shm/shoal-demo \
  --memory-quota 512MiB --disk-quota 4GiB --listen 127.0.0.1:$port_api --admin 127.0.0.1:$port_admin \
  > "$demo/node.log" 2>&1 &
node_pid=$!
trap 'kill $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true' EXIT
ready=0
for _ in $(seq 400); do
  kill -0 $node_pid 2>/dev/null || { echo "demo: cache-node exited; its log:" >&2; cat "$demo/node.log" >&2; exit 1; }
  curl -sf "127.0.0.1:$port_admin/readyz" >/dev/null && { ready=1; break; }
  sleep 0.05
done
[ $ready = 1 ] || { echo "demo: cache-node not ready after 20 s; log in $demo/node.log" >&2; exit 1; }
export SHOAL_ENDPOINT=127.0.0.1:$port_api
ctl() { "$SHOAL_BIN/dataset-ctl" "$@"; }

ctl create sample --source "file://$sample"
ctl list
read_all() { local t0 t1; t0=$(date +%s.%N); for f in models/shard-{0..3}.safetensors; do ctl cat sample "$f" > /dev/null; done; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l 2>/dev/null || python3 -c "print($t1 - $t0)"; }
cold=$(read_all); warm=$(read_all)
python3 - "$cold" "$warm" <<'PY'
import sys
cold, warm = float(sys.argv[1]), float(sys.argv[2])
mb = 4 * 64 * 1048576 / 1e6
print(f"cold read of 256 MiB through the cache: {cold:6.2f} s  ({mb/cold:7.0f} MB/s, from the origin)")
print(f"warm read of 256 MiB through the cache: {warm:6.2f} s  ({mb/warm:7.0f} MB/s, from the memory tier)")
PY
cmp <(ctl cat sample models/shard-0.safetensors) "$sample/models/shard-0.safetensors" && echo "demo: bytes identical to the origin"
ctl list
ctl nodes
