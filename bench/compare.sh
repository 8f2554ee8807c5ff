#!/usr/bin/env bash
# Benchmark vstamp beside a 3-member etcd cluster and a single Redis, in one run on this machine,
# with the same loads (1 and 64 concurrent clients, 64-byte values, SET/put only), and print a
# Markdown table with the ratios. vstamp runs with and without fsync; etcd with its data on disk
# and on tmpfs, so that each vstamp mode is compared with an etcd of the same durability. Installs etcd, Go, etcd's Go client and Redis from Debian's
# packages when they are missing (needs root for apt-get).
#
# These shared machines drift by 10-25% between runs, so `--rounds R` runs every system R times,
# interleaved (vstamp, etcd, Redis, then again), and the table shows medians: ops/s, latencies,
# and the ratio of each round's vstamp to the same round's etcd, with the range of those ratios.
#
# The `resp` system (issue 15) measures vstamp's RESP gateway (`cluster up --resp-port`) and a Redis
# server with the same tool and the same flags in the same run: redis-benchmark -t set,get -c 50,
# with and without -P 16, interleaved, with the ratios; redis-benchmark stops at the first error
# reply, so a completed row had none.
#
# Usage: bench/compare.sh [--seconds S] [--clients "1 64"] [--rounds R]
#                         [--systems "vstamp etcd redis resp"] [--resp-requests N] [--resp-sync none]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
seconds=5
clients="1 64"
rounds=1
systems="vstamp etcd redis resp"
resp_requests=100000
resp_sync=none
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift ;;
    --clients) clients=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --systems) systems=$2; shift ;;
    --resp-requests) resp_requests=$2; shift ;;
    --resp-sync) resp_sync=$2; shift ;;
    *) echo "unknown option $1 (use --seconds S, --clients \"1 64\", --rounds R, --systems \"vstamp etcd redis resp\", --resp-requests N, --resp-sync fsync|none)" >&2; exit 2 ;;
  esac
  shift
done

has() { [[ " $systems " == *" $1 "* ]]; }
need=()
if has etcd; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v go >/dev/null || need+=(golang-go)
  [ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || need+=(golang-etcd-server-dev)
fi
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >&2
fi
deno=${DENO:-deno}
command -v "$deno" >/dev/null || deno="npx -y deno@2.9.6"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Free ports, chosen by the kernel (a benchmark may take the small risk of a race).
free_ports() { python3 -c "
import socket
socks=[socket.socket() for _ in range($1)]
for s in socks: s.bind(('127.0.0.1',0))
print(' '.join(str(s.getsockname()[1]) for s in socks))"; }

results=$work/results.jsonl
resp_results=$work/resp.jsonl
touch "$results" "$resp_results"
round=0
# Appends stdin's JSON lines to the results, tagged with the round and, when given, a system name.
record() { # [system]
  local name=${1:-}
  python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        r = json.loads(line); r["round"] = int(sys.argv[1])
        if sys.argv[2]: r["system"] = sys.argv[2]
        print(json.dumps(r))' "$round" "$name" >>"$results"
}

# --- vstamp: 3 replicas, durable (fsync) and written-not-fsynced.
run_vstamp() {
  for sync in fsync none; do
    for c in $clients; do
      (cd "$repo" && $deno run --allow-read --allow-write --allow-net --allow-env --allow-run --allow-sys --deny-ffi \
        main.ts bench --cluster 3 --clients "$c" --duration "$seconds" --sync "$sync" --json) \
        | record "vstamp (sync $sync)"
    done
  done
}

# --- etcd: 3 members loaded through its Go client, once with data on disk (fsync, like
# vstamp's default) and once on tmpfs (no real fsync, like vstamp --sync none).
bin=$work/etcd_load
if has etcd; then
  mkdir -p "$work/go" && cp "$here/etcd_load.go" "$work/go/main.go"
  (cd "$work/go" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= go build -o "$bin" .) >&2
fi
shm=$(mktemp -d /dev/shm/vstamp-compare.XXXX)
trap 'cleanup; rm -rf "$shm"' EXIT
run_etcd() { # label data-root
  local label=$1 root=$2 i=0 c1 c2 c3 p1 p2 p3
  read -r c1 c2 c3 p1 p2 p3 <<<"$(free_ports 6)"
  local cluster="m1=http://127.0.0.1:$p1,m2=http://127.0.0.1:$p2,m3=http://127.0.0.1:$p3"
  for pair in "$c1 $p1" "$c2 $p2" "$c3 $p3"; do
    i=$((i + 1)); set -- $pair
    etcd --name "m$i" --data-dir "$root/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$1" --advertise-client-urls "http://127.0.0.1:$1" \
      --listen-peer-urls "http://127.0.0.1:$2" --initial-advertise-peer-urls "http://127.0.0.1:$2" \
      --initial-cluster "$cluster" --initial-cluster-token vstamp-compare --initial-cluster-state new \
      --log-level error >"$work/etcd-$label-$i.log" 2>&1 &
    pids+=($!)
  done
  local endpoints=127.0.0.1:$c1,127.0.0.1:$c2,127.0.0.1:$c3
  for _ in $(seq 1 100); do etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
  local leader
  leader=$(etcdctl --endpoints="$endpoints" endpoint status -w json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print([e["Endpoint"] for e in s if e["Status"]["leader"] == e["Status"]["header"]["member_id"]][0])')
  for c in $clients; do
    "$bin" --endpoints "$leader" --clients "$c" --seconds "$seconds" --value-size 64 \
      | record "etcd ($label)"
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# --- Redis: one server, no persistence, no replication: the ceiling.
run_redis() {
  local port
  read -r port <<<"$(free_ports 1)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for c in $clients; do
    redis-benchmark -h 127.0.0.1 -p "$port" -t set -n $((c == 1 ? 20000 : 200000)) -c "$c" -d 64 --csv 2>/dev/null \
      | python3 -c '
import csv, json, sys
rows = list(csv.reader(sys.stdin))
r = dict(zip(rows[0], rows[1]))
print(json.dumps({"system": "redis", "clients": '"$c"', "ops_s": float(r["rps"]),
                  "p50_ms": float(r["p50_latency_ms"]), "p99_ms": float(r["p99_latency_ms"])}))' | record
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# --- RESP: redis-benchmark against vstamp's gateway (3 replicas, `cluster up --resp-port`) and
# against a Redis server, same flags, interleaved: without and with -P 16, vstamp then Redis.
run_resp() {
  local dir=$work/resp-$round vport rport p target port
  mkdir -p "$dir"
  (cd "$repo" && exec $deno run --allow-read --allow-write --allow-net --allow-env --allow-run --allow-sys --deny-ffi \
    main.ts cluster up -n 3 --sync "$resp_sync" --resp-port 0 --config-out "$dir/cluster.yaml" \
    --data-dir "$dir/data") >"$dir/cluster.out" 2>"$dir/cluster.err" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q 'configuration written' "$dir/cluster.out" && break; sleep 0.1; done
  vport=$(sed -nE 's/^resp gateway listening on .*:([0-9]+)$/\1/p' "$dir/cluster.out")
  [ -n "$vport" ] || { echo "vstamp's gateway did not start:" >&2; cat "$dir/cluster.err" >&2; exit 1; }
  read -r rport <<<"$(free_ports 1)"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for p in 1 16; do
    for target in vstamp redis; do
      port=$([ "$target" = vstamp ] && echo "$vport" || echo "$rport")
      # Exits non-zero at the first error reply (redis-benchmark 7), failing this script.
      redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -c 50 -n "$resp_requests" -d 64 -r 1000 -P "$p" --csv \
        2>>"$dir/benchmark.err" | python3 -c '
import csv, json, sys
rows = list(csv.reader(sys.stdin))
for row in rows[1:]:
    r = dict(zip(rows[0], row))
    print(json.dumps({"system": sys.argv[1], "test": r["test"], "pipeline": int(sys.argv[2]),
                      "ops_s": float(r["rps"]), "p50_ms": float(r["p50_latency_ms"]),
                      "p99_ms": float(r["p99_latency_ms"]), "round": int(sys.argv[3])}))' \
        "$target" "$p" "$round" >>"$resp_results"
    done
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

for round in $(seq 1 "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "round $round of $rounds" >&2
  if has vstamp; then run_vstamp; fi
  mkdir -p "$work/r$round" "$shm/r$round"
  if has etcd; then
    run_etcd disk "$work/r$round"
    run_etcd tmpfs "$shm/r$round"
  fi
  if has redis; then run_redis; fi
  if has resp; then run_resp; fi
done

# --- What the machine was.
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $(df -T "$work" | awk 'NR==2 {print $2}') disk; $($deno --version | head -1); etcd $(if has etcd; then etcd --version | head -1 | awk '{print $3}'; else echo -; fi); redis $(redis-server --version | awk '{print $3}' | cut -d= -f2)"

# --- The table. Each vstamp row is compared with the etcd run of the same durability: fsync to
# disk with etcd on disk, no fsync with etcd on tmpfs.
python3 - "$results" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rounds = int(sys.argv[2])
if not rows:
    sys.exit(0)
runs = {}
systems = []
for r in rows:
    runs.setdefault((r["system"], r["clients"]), {})[r["round"]] = r
    if r["system"] not in systems:
        systems.append(r["system"])
clients = sorted({r["clients"] for r in rows})
peer = {"vstamp (sync fsync)": "etcd (disk)", "vstamp (sync none)": "etcd (tmpfs)"}
median = lambda values: statistics.median(values) if values else None

def ratio(mine, base):
    """The median over rounds of mine/base in the same round, and the range when several."""
    if not base:
        return "-"
    if base is mine:
        return "1.00x"
    ratios = [mine[k]["ops_s"] / base[k]["ops_s"] for k in mine if k in base and base[k]["ops_s"]]
    if not ratios:
        return "-"
    text = f"{median(ratios):.2f}x"
    return text + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")

label = "median of " + str(rounds) + " rounds" if rounds > 1 else "one round"
print(f"({label})")
print("| system | clients | ops/s | p50 ms | p99 ms | ops/s vs etcd | ops/s vs redis |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s in systems:
    for c in clients:
        mine = runs.get((s, c))
        if not mine:
            continue
        ops = median([r["ops_s"] for r in mine.values()])
        p50 = median([r["p50_ms"] for r in mine.values()])
        p99 = median([r["p99_ms"] for r in mine.values()])
        etcd = runs.get((peer.get(s, s), c)); redis = runs.get(("redis", c))
        print(f"| {s} | {c} | {ops:.0f} | {p50:.3f} | {p99:.3f} | {ratio(mine, etcd)} | {ratio(mine, redis)} |")
print()
print("ops/s vs etcd: vstamp with fsync against etcd on disk, vstamp without fsync against etcd on tmpfs.")
PY

# --- The RESP table: the same redis-benchmark flags against vstamp's gateway and against Redis.
python3 - "$resp_results" "$rounds" "$resp_requests" "$resp_sync" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
if not rows:
    sys.exit(0)
rounds, requests, sync = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs = {}
for r in rows:
    runs.setdefault((r["system"], r["test"], r["pipeline"]), {})[r["round"]] = r
median = statistics.median
label = f"median of {rounds} rounds" if rounds > 1 else "one round"
print()
print(f"redis-benchmark -t set,get -c 50 -n {requests} -d 64 -r 1000 [-P 16] ({label}; vstamp: "
      f"3 replicas, --sync {sync}, through `cluster up --resp-port`; Redis: one server, no persistence)")
print("| test | -P | vstamp ops/s | vstamp p50 ms | vstamp p99 ms | redis ops/s | redis p50 ms | redis p99 ms | vstamp / redis |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for test in ("SET", "GET"):
    for p in (1, 16):
        mine, base = runs.get(("vstamp", test, p)), runs.get(("redis", test, p))
        if not mine or not base:
            continue
        cell = lambda rs, key: median([r[key] for r in rs.values()])
        ratios = [mine[k]["ops_s"] / base[k]["ops_s"] for k in mine if k in base]
        ratio = f"{median(ratios):.2f}x" + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")
        print(f"| {test} | {p} | {cell(mine, 'ops_s'):.0f} | {cell(mine, 'p50_ms'):.3f} | {cell(mine, 'p99_ms'):.3f} "
              f"| {cell(base, 'ops_s'):.0f} | {cell(base, 'p50_ms'):.3f} | {cell(base, 'p99_ms'):.3f} | {ratio} |")
PY
