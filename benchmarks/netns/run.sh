#!/usr/bin/env bash
# Runs poseidon_bench_transport across two network namespaces joined by a veth pair, with the
# link shaped by tc tbf to 1 Gbit/s and then 100 Mbit/s; deletes everything it made on exit.
# Usage: benchmarks/netns/run.sh [path/to/poseidon_bench_transport] [extra benchmark args...]
# Needs root (CAP_NET_ADMIN). The addresses live only inside the two namespaces.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "netns bench: needs root (it creates network namespaces and tc qdiscs); run with sudo" >&2
  exit 77
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "netns bench: '$tool' not found (install iproute2)" >&2; exit 77; }
done

BENCH=${1:-build/benchmarks/poseidon_bench_transport}
shift || true
[[ -x $BENCH ]] || { echo "netns bench: benchmark binary '$BENCH' not found; build poseidon_bench_transport" >&2; exit 2; }

NS0=poseidon-bench-a NS1=poseidon-bench-b
IP0=10.231.0.1 IP1=10.231.0.2 PORT=29611
cleanup() {
  ip netns del "$NS0" 2>/dev/null || true
  ip netns del "$NS1" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
cleanup

if ! ip netns add "$NS0" 2>/tmp/netns.err; then
  echo "netns bench: 'ip netns add' is not permitted here: $(cat /tmp/netns.err)" >&2
  exit 77
fi
ip netns add "$NS1"
ip link add veth-pa netns "$NS0" type veth peer name veth-pb netns "$NS1"
ip -n "$NS0" addr add "$IP0/24" dev veth-pa
ip -n "$NS1" addr add "$IP1/24" dev veth-pb
for ns in "$NS0" "$NS1"; do ip -n "$ns" link set lo up; done
ip -n "$NS0" link set veth-pa up
ip -n "$NS1" link set veth-pb up

run_at() {  # rate
  local rate=$1
  for pair in "$NS0 veth-pa" "$NS1 veth-pb"; do
    set -- $pair
    tc -n "$1" qdisc replace dev "$2" root tbf rate "$rate" burst 256kb latency 50ms
  done
  echo "=== link shaped to $rate (tbf on both ends) ==="
  ip netns exec "$NS1" env POSEIDON_BENCH_ROLE=peer POSEIDON_RANK=1 POSEIDON_WORLD_SIZE=2 \
    POSEIDON_MASTER="$IP0:$PORT" POSEIDON_RENDEZVOUS_TIMEOUT=60 "$BENCH" &
  local peer=$!
  ip netns exec "$NS0" env POSEIDON_BENCH_ROLE=host POSEIDON_RANK=0 POSEIDON_WORLD_SIZE=2 \
    POSEIDON_MASTER="$IP0:$PORT" POSEIDON_RENDEZVOUS_TIMEOUT=60 "$BENCH" \
    --benchmark_filter='throughput/.*(1048576|4194304|16777216)' "$@"
  wait "$peer"
  PORT=$((PORT + 2))
}

run_at 1gbit
run_at 100mbit
