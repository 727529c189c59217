#!/usr/bin/env bash
# Two MPI "hosts" on this machine: two Linux network namespaces, each with its own network stack
# and address (10.77.0.1 and 10.77.0.2, joined by a veth pair), MPI traffic over TCP between them
# only (no shared memory, no loopback). `mpirun` in the first namespace starts the second host's
# daemon through its remote-shell agent, as it would with ssh on a cluster (the agent here is
# `ip netns exec`). Each rank is local rank 0 of its host. Runs the main job on the two hosts
# and, for comparison, on two processes of one host over shared memory, and prints both with
# a digest of their final checkpoints' tensor bytes (the header, with times and the revision,
# left out): equal when the same bits were trained.
#
# Needs root (namespaces) and a build with `--features mpi`.
#
#   sudo bench/two-hosts.sh target/release/byol [seed] [max-steps]
set -euo pipefail
BIN=$(realpath "$1")
SEED=${2:-0}
STEPS=${3:-230}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
NS=(byol-host-a byol-host-b)
ADDR=(10.77.0.1 10.77.0.2)
cleanup() { for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for i in 0 1; do ip netns add "${NS[$i]}"; done
ip link add byol-veth-a netns "${NS[0]}" type veth peer name byol-veth-b netns "${NS[1]}"
for i in 0 1; do
  dev=$([ "$i" = 0 ] && echo byol-veth-a || echo byol-veth-b)
  ip -n "${NS[$i]}" addr add "${ADDR[$i]}/24" dev "$dev"
  ip -n "${NS[$i]}" link set "$dev" up
  ip -n "${NS[$i]}" link set lo up
done
# The remote-shell agent: `agent [options] HOST COMMAND…` runs COMMAND in HOST's namespace.
AGENT="$OUT/netns-agent"
cat >"$AGENT" <<EOF
#!/usr/bin/env bash
while [[ "\$1" == -* ]]; do shift; done
host=\$1; shift
case "\$host" in
  ${ADDR[0]}) ns=${NS[0]} ;;
  ${ADDR[1]}) ns=${NS[1]} ;;
  *) echo "netns-agent: unknown host \$host" >&2; exit 1 ;;
esac
echo "\$host" >>"$OUT/agent.log"
exec ip netns exec "\$ns" /bin/sh -c "\$*"
EOF
chmod +x "$AGENT"
printf '%s slots=1\n%s slots=1\n' "${ADDR[0]}" "${ADDR[1]}" >"$OUT/hosts"
COMMON=(--allow-run-as-root --bind-to none -x RAYON_NUM_THREADS=1 -x PATH)
JOB=(pretrain --seed "$SEED" --no-baseline --max-steps "$STEPS")
start=$(date +%s.%N)
ip netns exec "${NS[0]}" mpirun "${COMMON[@]}" -np 2 --hostfile "$OUT/hosts" \
  --mca plm_rsh_agent "$AGENT" --mca btl self,tcp --mca btl_tcp_if_include 10.77.0.0/24 \
  --mca oob_tcp_if_include 10.77.0.0/24 \
  "$BIN" "${JOB[@]}" --run-dir "$OUT/two-hosts" >"$OUT/two-hosts.log" 2>&1
grep -qx "${ADDR[1]}" "$OUT/agent.log" || { echo "mpirun did not start the second host through the agent" >&2; exit 1; }
two_hosts=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
start=$(date +%s.%N)
mpirun "${COMMON[@]}" --oversubscribe -np 2 --mca btl self,vader \
  "$BIN" "${JOB[@]}" --run-dir "$OUT/one-host" >"$OUT/one-host.log" 2>&1
one_host=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
row() { # name dir wall
  python3 - "$1" "$2" "$3" <<'EOF'
import glob, hashlib, json, statistics, sys
name, d, wall = sys.argv[1:]
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
ips = statistics.median(r["images_per_sec"] for r in m if r["step"] > 5)
last = sorted(glob.glob(f"{d}/checkpoint-*.safetensors"))[-1]
raw = open(last, "rb").read()
header = int.from_bytes(raw[:8], "little")  # safetensors: header length, JSON header, tensor bytes
digest = hashlib.sha256(raw[8 + header:]).hexdigest()[:16]
print(f"| {name} | {m[-1]['step']} | {ips:.1f} | {wall} | {m[-1]['loss']:.6f} | `{digest}` |")
EOF
}
echo "| run | steps | images/s | wall (s) | last loss | final checkpoint tensors, SHA-256 |"
echo "|---|---|---|---|---|---|"
row "2 hosts (network namespaces), TCP between them" "$OUT/two-hosts" "$two_hosts"
row "1 host, 2 processes, shared memory" "$OUT/one-host" "$one_host"
echo "runs and logs: $OUT" >&2
