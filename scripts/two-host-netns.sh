#!/usr/bin/env bash
# A two-host MPI run on one machine: two network namespaces (ha-host1, ha-host2), each its own
# "host" with its own hostname (UTS namespace) and address, joined by a veth pair on a private
# /30 (10.77.0.1 and 10.77.0.2, addresses that exist only inside these namespaces). OpenMPI is
# launched without ssh: mpirun runs inside ha-host1, and its rsh agent (a small script written
# here) starts the remote daemon with `ip netns exec ha-host2`. Traffic goes over TCP on the veth
# (btl self,tcp; oob and btl restricted to the /30), so nothing is shared-memory between hosts.
#
# Runs DistributedChecks on 2 ranks, one per namespace, and checks that its output equals the
# same run on one host (2 ranks, shared memory); then a tiny `hyperattn bench` on the two hosts.
#
#   sudo scripts/two-host-netns.sh            # needs root (ip netns, unshare)
#   HYPERATTN_BIN_DIR=.build/release scripts/two-host-netns.sh
#
# Exit status: 0 passed, 1 failed, 77 skipped (no root, or network namespaces not permitted).
# The namespaces, veth pair and /etc/netns/ha-host{1,2} files are removed on exit.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin_dir=${HYPERATTN_BIN_DIR:-$(swift build -c release -Xswiftc -target-cpu -Xswiftc haswell --show-bin-path 2>/dev/null)}
bin_dir=$(cd "$bin_dir" && pwd)
for program in DistributedChecks hyperattn; do
    [ -x "$bin_dir/$program" ] || { echo "two-host-netns.sh: $bin_dir/$program not built" >&2; exit 1; }
done
skip() { echo "two-host-netns.sh: skipped: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for ip netns"
command -v ip >/dev/null && command -v unshare >/dev/null || skip "ip or unshare not installed"

ns1=ha-host1 ns2=ha-host2 addr1=10.77.0.1 addr2=10.77.0.2 subnet=10.77.0.0/30
work=$(mktemp -d)
cleanup() {
    ip netns del $ns1 2>/dev/null
    ip netns del $ns2 2>/dev/null
    rm -rf /etc/netns/$ns1 /etc/netns/$ns2 "$work"
}
trap cleanup EXIT
cleanup_stale() { ip netns del $ns1 2>/dev/null; ip netns del $ns2 2>/dev/null; }
cleanup_stale
ip netns add $ns1 2>/dev/null || skip "ip netns add not permitted here"
ip netns add $ns2 || skip "ip netns add not permitted here"
ip netns exec $ns1 true 2>/dev/null || skip "ip netns exec not permitted here"
set -e
ip link add ha-veth1 netns $ns1 type veth peer name ha-veth2 netns $ns2
ip -n $ns1 addr add $addr1/30 dev ha-veth1
ip -n $ns2 addr add $addr2/30 dev ha-veth2
for ns in $ns1 $ns2; do
    ip -n $ns link set lo up
    # Per-namespace /etc/hosts (ip netns exec bind-mounts /etc/netns/NAME/hosts over /etc/hosts).
    mkdir -p /etc/netns/$ns
    printf '127.0.0.1 localhost\n%s %s\n%s %s\n' $addr1 $ns1 $addr2 $ns2 >/etc/netns/$ns/hosts
done
ip -n $ns1 link set ha-veth1 up
ip -n $ns2 link set ha-veth2 up
set +e

# The rsh agent: `agent HOST COMMAND...` runs COMMAND in HOST's namespace with HOST as hostname.
cat >"$work/agent" <<AGENT
#!/bin/sh
host=\$1
shift
exec ip netns exec "\$host" unshare --uts /bin/sh -c "hostname \$host; \$*"
AGENT
chmod +x "$work/agent"
printf '%s slots=1\n%s slots=1\n' $ns1 $ns2 >"$work/hostfile"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMPI_MCA_btl OMPI_MCA_btl_vader_single_copy_mechanism
two_hosts() { # two_hosts PROGRAM ARGS... — 2 ranks, one per namespace, mpirun inside ha-host1
    ip netns exec $ns1 unshare --uts /bin/sh -c 'hostname "$0"; exec "$@"' $ns1 \
        timeout -k 5 120 mpirun --hostfile "$work/hostfile" -np 2 --map-by node --bind-to none \
        --mca plm_rsh_agent "$work/agent" --mca pml ob1 --mca btl self,tcp \
        --mca btl_tcp_if_include $subnet --mca oob_tcp_if_include $subnet \
        -x PATH ${LD_LIBRARY_PATH:+-x LD_LIBRARY_PATH} "$@"
}
one_host() {
    OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none \
        timeout -k 5 120 mpirun --oversubscribe --bind-to none -np 2 "$@"
}

status=0
echo "== DistributedChecks, 2 ranks on 2 hosts ($ns1, $ns2) over TCP"
two_hosts /bin/sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname): $(ip -4 -o addr show dev ha-veth${OMPI_COMM_WORLD_RANK#0} 2>/dev/null | grep -o "10.77.0.[0-9]*" || ip -4 -o addr | grep -o "10.77.0.[0-9]*")"' || status=1
two_hosts "$bin_dir/DistributedChecks" >"$work/two.txt" 2>&1
rc=$?
cat "$work/two.txt"
one_host "$bin_dir/DistributedChecks" >"$work/one.txt" 2>&1
if [ $rc -ne 0 ]; then
    echo "-- two hosts: DistributedChecks exited $rc"; status=1
elif ! diff <(grep -E '^(ok|FAIL)|passed' "$work/one.txt") <(grep -E '^(ok|FAIL)|passed' "$work/two.txt"); then
    echo "-- two hosts: output differs from the same run on one host"; status=1
else
    echo "-- two hosts: DistributedChecks output equals the one-host run ($(tail -1 "$work/two.txt"))"
fi

echo "== hyperattn bench (tiny), 2 ranks on 2 hosts"
two_hosts "$bin_dir/hyperattn" bench --n 4096 --modes hyper --causal both --repeats 1 --error-rows 16 --peak-ms 20 \
    --threads 1 --json "$work/bench.json" >"$work/bench.txt" 2>&1
rc=$?
cat "$work/bench.txt"
if [ $rc -ne 0 ] || ! grep -q '"ranks" : 2' "$work/bench.json"; then
    echo "-- two hosts: bench failed (exit $rc)"; status=1
fi
exit $status
