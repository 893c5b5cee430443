#!/usr/bin/env bash
# A 3-node Shoal cluster on this machine (loopback ports), meshed over QUIC
# with mutual TLS: creates a cluster CA and one certificate per node, starts
# the nodes seeded with node-0, creates the sample dataset on node-0,
# prewarms it to every node (each byte leaves the origin once; the nodes
# feed each other), shows its locality, and reads it through node-2. Stops
# the nodes on exit (KEEP=1 leaves them up). Then a deployment: a second
# dataset is prewarmed on node-1 only, the scheduler and one agent per host
# start, and a ReplicaSet reading that dataset lands on node-1's host, with
# `scheduler explain` saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
shoal_build

dir="${SHOAL_CLUSTER_DIR:-/var/tmp/shoal-cluster}"
sample="${SHOAL_DEMO_DIR:-/var/tmp/shoal-demo}/sample"
rm -rf "$dir"; mkdir -p "$dir" "$sample"
[ -n "$(ls -A "$sample")" ] || head -c $((64 << 20)) /dev/urandom > "$sample/weights.bin"
"$SHOAL_BIN/cache-node" ca init --out "$dir/ca"
pids=()
cleanup() {
  [ "${KEEP:-0}" = 1 ] && return
  # Agents first (they stop their replicas), then the scheduler and nodes,
  # whatever the exit statuses (errexit would end the cleanup early).
  set +e
  [ "${#agents[@]}" -gt 0 ] && kill "${agents[@]}" 2>/dev/null && wait "${agents[@]}" 2>/dev/null
  kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
  return 0
}
agents=()
trap cleanup EXIT
for i in 0 1 2; do
  "$SHOAL_BIN/cache-node" ca issue --ca "$dir/ca" --name "node-$i" --out "$dir/tls-$i"
  seed=(); [ $i -gt 0 ] && seed=(--seed 127.0.0.1:27100)
  "$SHOAL_BIN/cache-node" --name "node-$i" --data-dir "$dir/node-$i" --memory-dir "/dev/shm/shoal-cluster-$i" \
    --memory-quota 512MiB --disk-quota 2GiB \
    --listen "127.0.0.1:2707$i" --admin "127.0.0.1:2746$i" \
    --peer-listen "127.0.0.1:2710$i" --tls-dir "$dir/tls-$i" "${seed[@]}" \
    --label "zone=z$i" > "$dir/node-$i.log" 2>&1 &
  pids+=($!)
done
ctl() { "$SHOAL_BIN/dataset-ctl" "$@"; }
for i in 0 1 2; do
  for _ in $(seq 200); do curl -sf "127.0.0.1:2746$i/readyz" >/dev/null && break; sleep 0.05; done
done
for _ in $(seq 100); do [ "$(ctl --endpoint 127.0.0.1:27072 nodes -o json | grep -c '"Ready"')" = 3 ] && break; sleep 0.1; done
ctl --endpoint 127.0.0.1:27072 nodes
ctl --endpoint 127.0.0.1:27070 create sample --source "file://$sample"
for _ in $(seq 100); do ctl --endpoint 127.0.0.1:27072 get sample >/dev/null 2>&1 && break; sleep 0.1; done
ctl --endpoint 127.0.0.1:27070 prewarm sample --all-nodes --wait
for _ in $(seq 20); do [ "$(ctl --endpoint 127.0.0.1:27071 locality sample -o json | grep -c '"resident_bytes": 0')" = 0 ] && break; sleep 0.25; done
ctl --endpoint 127.0.0.1:27071 locality sample
f=$(cd "$sample" && find . -type f -size +1M | head -1 | sed 's|^\./||')
ctl --endpoint 127.0.0.1:27072 cat sample "$f" | cmp - "$sample/$f" && echo "cluster: node-2 served $f identical to the origin"
ctl --endpoint 127.0.0.1:27071 cat sample "$f" | cmp - "$sample/$f" && echo "cluster: node-1 served $f identical to the origin"
for i in 0 1 2; do
  echo "node-$i: origin bytes $(curl -s 127.0.0.1:2746$i/metrics | awk '/^shoal_origin_bytes_total/ {print $2}'), peer bytes $(curl -s 127.0.0.1:2746$i/metrics | awk '/^shoal_peer_bytes_total/ {print $2}')"
done
ctl --endpoint 127.0.0.1:27071 list

# A deployment placed by locality.
weights="$dir/weights"; mkdir -p "$weights"
head -c $((32 << 20)) /dev/urandom > "$weights/model.safetensors"
ctl --endpoint 127.0.0.1:27070 create weights --source "file://$weights"
for _ in $(seq 100); do ctl --endpoint 127.0.0.1:27071 get weights >/dev/null 2>&1 && break; sleep 0.1; done
ctl --endpoint 127.0.0.1:27071 prewarm weights --nodes node-1 --wait >/dev/null && echo "cluster: weights prewarmed on node-1 only"
"$SHOAL_BIN/scheduler" serve --listen 127.0.0.1:27400 --data-dir "$dir/scheduler" > "$dir/scheduler.log" 2>&1 &
pids+=($!)
export SHOAL_SCHEDULER=http://127.0.0.1:27400
for _ in $(seq 200); do "$SHOAL_BIN/scheduler" get nodes >/dev/null 2>&1 && break; sleep 0.05; done
for i in 0 1 2; do
  "$SHOAL_BIN/scheduler" agent --name "gpu-$i" --listen "127.0.0.1:2741$i" --work-dir "$dir/agent-$i" \
    --gpu-model h100 --gpus 8 --cpu-millis 32000 --memory 64GiB --label "zone=z$i" \
    --cache-node "node-$i" --cache-api "127.0.0.1:2707$i" --cache-admin "127.0.0.1:2746$i" \
    --cache-socket "unix://$dir/node-$i/node.sock" > "$dir/agent-$i.log" 2>&1 &
  agents+=($!)
done
for _ in $(seq 200); do [ "$("$SHOAL_BIN/scheduler" get nodes -o json | grep -c '"cache_node"')" = 3 ] && break; sleep 0.05; done
"$SHOAL_BIN/scheduler" get nodes
cat > "$dir/llm.yaml" <<'YAML'
kind: ReplicaSet
metadata: {name: llm}
spec:
  replicas: 1
  image: serve:1
  command: [sh, -c, 'sha256sum /data/model.safetensors; exec sleep 3600']
  gpu: {model: h100, count: 1}
  datasets: [{name: weights}]
  locality: {policy: preferred, minWarmFraction: 1.0}
YAML
"$SHOAL_BIN/scheduler" apply -f "$dir/llm.yaml"
for _ in $(seq 400); do "$SHOAL_BIN/scheduler" get replicas -o json | grep -q '"Ready"' && break; sleep 0.05; done
"$SHOAL_BIN/scheduler" get replicas
replica=$("$SHOAL_BIN/scheduler" get replicas -o json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["state"] == "Ready"][0])')
"$SHOAL_BIN/scheduler" explain "$replica"
for _ in $(seq 200); do "$SHOAL_BIN/scheduler" logs "$replica" | grep -q model && break; sleep 0.05; done
[ "$("$SHOAL_BIN/scheduler" logs "$replica" | awk '{print $1}')" = "$(sha256sum "$weights/model.safetensors" | awk '{print $1}')" ] &&
  echo "cluster: replica $replica read /data/model.safetensors identical to the origin"
