#!/usr/bin/env bash
# The main job on a fresh machine: install, build, generate a sample dataset
# in a local directory, start a cache node, create the dataset, prewarm its
# models into the memory tier (a job with live progress), show where the
# bytes are (locality), read them through the cache and a FUSE mount, and
# run a deployment whose replica reads the dataset at /data (scheduler +
# agent: placement explained, logs, bytes checked against the origin).
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
mnt="$demo/mnt"
fuse_pid=
sched_pid=
agent_pid=
cleanup() {
  # Every process is stopped whatever the others' exit statuses (errexit
  # would end the cleanup at the first non-zero one, leaving the rest up).
  set +e
  for pid in "$agent_pid" "$sched_pid" "$fuse_pid" "$node_pid"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  return 0
}
trap cleanup EXIT
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
t0=$(date +%s.%N)
ctl prewarm sample --path models --tier memory --wait
t1=$(date +%s.%N)
ctl locality sample
read_all() { local t0 t1; t0=$(date +%s.%N); for f in models/shard-{0..3}.safetensors; do ctl cat sample "$f" > /dev/null; done; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"; }
warm=$(read_all)
python3 - "$t0" "$t1" "$warm" <<'PY'
import sys
t0, t1, warm = map(float, sys.argv[1:])
mb = 4 * 64 * 1048576 / 1e6
print(f"prewarm of 256 MiB of models into the memory tier: {t1 - t0:6.2f} s  ({mb/(t1 - t0):7.0f} MB/s, from the origin)")
print(f"warm read of 256 MiB through the cache:            {warm:6.2f} s  ({mb/warm:7.0f} MB/s, from the memory tier)")
PY
cmp <(ctl cat sample models/shard-0.safetensors) "$sample/models/shard-0.safetensors" && echo "demo: bytes identical to the origin"

# The same dataset through a real FUSE mount (what a container sees at /data).
mkdir -p "$mnt" 2>/dev/null || true
"$SHOAL_BIN/fuse-client" --endpoint "unix://$demo/node/node.sock" --dataset sample \
  --ready-file "$demo/mnt.ready" "$mnt" > "$demo/fuse.log" 2>&1 &
fuse_pid=$!
for _ in $(seq 200); do [ -f "$demo/mnt.ready" ] && break; kill -0 $fuse_pid 2>/dev/null || { cat "$demo/fuse.log" >&2; exit 1; }; sleep 0.05; done
echo "demo: mounted at $mnt (version $(cat "$demo/mnt.ready"))"
ls -l "$mnt/models"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
python3 - "$mnt" <<'PY'
import os, sys, time
mnt = sys.argv[1]
files = [os.path.join(mnt, "models", f"shard-{i}.safetensors") for i in range(4)]
t0 = time.time(); n = 0
for f in files:
    with open(f, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += len(chunk)
t = time.time() - t0
print(f"FUSE read of {n / 1048576:.0f} MiB from the warm node cache: {t:5.2f} s ({n / 1e6 / t:7.0f} MB/s)")
imgs = sorted(os.listdir(os.path.join(mnt, "images")))
t0 = time.time(); m = sum(len(open(os.path.join(mnt, "images", i), "rb").read()) for i in imgs)
t = time.time() - t0
print(f"FUSE read of {len(imgs)} small files (cold): {t:5.2f} s ({len(imgs) / t:7.0f} files/s)")
PY
grep -q "passthrough: first file opened" "$demo/fuse.log" && echo "demo: FUSE passthrough in use (kernel reads the tier files directly)"
cmp "$mnt/models/shard-1.safetensors" "$sample/models/shard-1.safetensors" && echo "demo: FUSE bytes identical to the origin"
ctl list
ctl nodes

# A deployment: the scheduler places a replica on this host (its data is
# warm here), the agent runs it in its own mount namespace with the dataset
# mounted read-only at /data.
rm -rf "$demo/scheduler" "$demo/agent"
"$SHOAL_BIN/scheduler" serve --listen 127.0.0.1:17400 --data-dir "$demo/scheduler" > "$demo/scheduler.log" 2>&1 &
sched_pid=$!
export SHOAL_SCHEDULER=http://127.0.0.1:17400
for _ in $(seq 200); do "$SHOAL_BIN/scheduler" get nodes >/dev/null 2>&1 && break; sleep 0.05; done
cache_name=$(ctl nodes -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')
"$SHOAL_BIN/scheduler" agent --name gpu-0 --listen 127.0.0.1:17401 --work-dir "$demo/agent" \
  --gpu-model demo-gpu --gpus 1 --cpu-millis 2000 --memory 4GiB --label zone=a \
  --cache-node "$cache_name" --cache-api 127.0.0.1:$port_api --cache-admin 127.0.0.1:$port_admin \
  --cache-socket "unix://$demo/node/node.sock" > "$demo/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 200); do [ "$("$SHOAL_BIN/scheduler" get nodes -o json | grep -c '"name"')" -ge 1 ] && break; sleep 0.05; done
cat > "$demo/reader.yaml" <<'YAML'
kind: ReplicaSet
metadata: {name: reader}
spec:
  replicas: 1
  image: demo:1
  command: [sh, -c, 'sha256sum /data/models/shard-0.safetensors; exec sleep 3600']
  gpu: {model: demo-gpu, count: 1}
  datasets: [{name: sample, mountPath: /data}]
  locality: {policy: required, minWarmFraction: 0.9}
YAML
"$SHOAL_BIN/scheduler" apply -f "$demo/reader.yaml"
for _ in $(seq 400); do "$SHOAL_BIN/scheduler" get replicas -o json | grep -q '"Ready"' && break; sleep 0.05; done
"$SHOAL_BIN/scheduler" get replicas
replica=$("$SHOAL_BIN/scheduler" get replicas -o json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["state"] == "Ready"][0])')
"$SHOAL_BIN/scheduler" explain "$replica"
for _ in $(seq 200); do "$SHOAL_BIN/scheduler" logs "$replica" | grep -q shard-0 && break; sleep 0.05; done
got=$("$SHOAL_BIN/scheduler" logs "$replica" | awk '{print $1}')
want=$(sha256sum "$sample/models/shard-0.safetensors" | awk '{print $1}')
[ "$got" = "$want" ] && echo "demo: replica $replica read /data identical to the origin"
"$SHOAL_BIN/scheduler" events
