#!/usr/bin/env bash
# A local Docker Swarm of N namespaced dockerd "hosts" on this machine, for tests and
# demos of swarm mode on many nodes (and of GPU placement with fake GPUs).
#
#   bash scripts/cluster.sh up [N]        # N nodes (default 3): node 1 manager, the rest workers
#   bash scripts/cluster.sh down          # removes everything `up` made
#   bash scripts/cluster.sh status        # the nodes as the manager sees them
#   bash scripts/cluster.sh stop-node I   # stops node I's dockerd (SIGTERM: its containers stop)
#   bash scripts/cluster.sh kill-node I   # host loss: SIGKILL every process of node I
#   bash scripts/cluster.sh start-node I  # starts node I's dockerd again (it rejoins)
#   bash scripts/cluster.sh registry      # the cluster's registry (10.213.0.1:5000), if any
#
# `up` prints, as its last line, the manager node's DOCKER_HOST (unix:///run/amc1.sock).
# It is idempotent: nodes already up are kept, missing ones are started and joined,
# images are (re)loaded only where a node lacks them.
#
# Images reach the nodes through a local registry when Debian's `docker-registry` is
# installed (scripts/services.sh installs it): `up` loads CLUSTER_IMAGES into the manager
# node and pushes each as `10.213.0.1:5000/<image>`; the other nodes pull from there
# when Swarm places a task on them, and the agent manager pins services to the digest.
# The registry speaks plain HTTP on the cluster's own network (every node's dockerd
# lists it as an insecure registry); nothing outside the cluster reaches it. Without
# the package (or with CLUSTER_REGISTRY=0) every node loads the images itself instead.
#
# Settings (environment):
#   CLUSTER_PREFIX   node names `<prefix><i>` (default amc): amc1, amc2, …
#   CLUSTER_GPUS     fake GPUs, `I:K,…` (default empty): node I gets K fake GPUs, as the
#                    swarm generic resource NVIDIA-GPU (ids GPU-<node>-<k>) and a stand-in
#                    `nvidia-container-runtime-hook` on its dockerd's PATH (Docker's nvidia
#                    device requests then work there: NVIDIA_VISIBLE_DEVICES is set, no GPU
#                    is touched). Test set-up only: the hook is never in a shipped image.
#   CLUSTER_LABELS   node labels, `I:key=value,…` (default empty), e.g.
#                    `2:autogen.pool=trading`. Every node also gets `autogen.node=<name>`,
#                    and GPU nodes `autogen.gpu=true`.
#   CLUSTER_IMAGES   images for the nodes (default: autogen-agent:latest and this
#                    checkout's test tag, scripts/agent-image-tag.sh), from the host's
#                    dockerd: pushed to the registry, or loaded on every node.
#   CLUSTER_REGISTRY 0: no registry even where docker-registry is installed.
#
# How (docs: ../shared/notes/seen-working.md): each node is a network namespace with a
# veth into a bridge in a "hub" namespace (10.213.0.0/24; a bridge in the host namespace
# would meet the host's FORWARD DROP), its own dockerd (data, exec root, pidfile, socket,
# cgroup parent, bip, hostname) entered with nsenter + unshare --uts (not `ip netns exec`,
# which remounts /sys).
#
# The cluster reaches this machine's services the way remote hosts would reach a
# services host: a veth pair `<prefix>up` (10.213.255.1/30 on the host) into the hub,
# which routes between it and the nodes; the host gets one route to the nodes' subnet,
# and the firewall chain of scripts/services.sh (AGENT-MANAGER-SERVICES) admits what
# comes in through that veth. So agents on every node heartbeat to Redis and reach
# RabbitMQ at the addresses scripts/services.sh gives agents (172.18.0.1), and a
# manager run as a Swarm service reaches them too. `down` removes the veth, the route
# and the rule; nothing else in the host's network namespace is touched. (Rerunning
# scripts/services.sh rebuilds its chain: run `up` again to admit the cluster again.)
set -euo pipefail

PREFIX=${CLUSTER_PREFIX:-amc}
STATE=/run/${PREFIX}-cluster
DATA=/var/lib/${PREFIX}-cluster
HUB=${PREFIX}hub
SUBNET=10.213.0
REGISTRY=$SUBNET.1:5000
UPLINK=${PREFIX}up
UPLINK_NET=10.213.255
SERVICES_CHAIN=AGENT-MANAGER-SERVICES
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOOK_DIR="$HERE/cluster"

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

node() { echo "${PREFIX}$1"; }
sock() { echo "unix:///run/$(node "$1").sock"; }
addr() { echo "$SUBNET.$((10 + $1))"; }
dk() {
    local i=$1
    shift
    timeout 60 docker -H "$(sock "$i")" "$@"
}

need() {
    local missing=()
    for c in ip nsenter unshare dockerd containerd docker iptables timeout flock; do
        command -v "$c" >/dev/null || missing+=("$c")
    done
    ((${#missing[@]} == 0)) || die "missing programs: ${missing[*]} (apt-get install iproute2 util-linux docker.io iptables)"
    [[ $(id -u) == 0 ]] || die "must run as root (network namespaces, dockerd)"
}

# True if process $1 exists and is not a zombie.
alive() {
    local stat
    [[ -n ${1:-} ]] && read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

pid_of() { cat "$STATE/$(node "$1").pid" 2>/dev/null || true; }

# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() {
    local tries=$(($1 * 10))
    shift
    while ((tries-- > 0)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

gpus_of() {
    local i=$1 entry
    IFS=, read -ra entries <<<"${CLUSTER_GPUS:-}"
    for entry in "${entries[@]}"; do
        [[ ${entry%%:*} == "$i" ]] && echo "${entry#*:}" && return
    done
    echo 0
}

hub_up() {
    ip netns list | grep -qw "$HUB" || ip netns add "$HUB"
    nsenter --net="/run/netns/$HUB" ip link set lo up
    if ! nsenter --net="/run/netns/$HUB" ip link show br0 >/dev/null 2>&1; then
        nsenter --net="/run/netns/$HUB" ip link add br0 type bridge
    fi
    nsenter --net="/run/netns/$HUB" ip link set br0 up
    if ! nsenter --net="/run/netns/$HUB" ip -4 addr show br0 | grep -q "$SUBNET.1/"; then
        nsenter --net="/run/netns/$HUB" ip addr add "$SUBNET.1/24" dev br0
    fi
}

# The hub's way to the host (see the header).
uplink_up() {
    if ! ip link show "$UPLINK" >/dev/null 2>&1; then
        ip link add "$UPLINK" type veth peer name uplink netns "$HUB"
        ip addr add "$UPLINK_NET.1/30" dev "$UPLINK"
        ip link set "$UPLINK" up
        nsenter --net="/run/netns/$HUB" ip addr add "$UPLINK_NET.2/30" dev uplink
        nsenter --net="/run/netns/$HUB" ip link set uplink up
    fi
    nsenter --net="/run/netns/$HUB" sysctl -qw net.ipv4.ip_forward=1
    nsenter --net="/run/netns/$HUB" ip route replace default via "$UPLINK_NET.1"
    ip route replace "$SUBNET.0/24" via "$UPLINK_NET.2" dev "$UPLINK"
    if iptables -S "$SERVICES_CHAIN" >/dev/null 2>&1; then
        iptables -C "$SERVICES_CHAIN" -i "$UPLINK" -j RETURN 2>/dev/null ||
            iptables -I "$SERVICES_CHAIN" -i "$UPLINK" -j RETURN
    fi
}

uplink_down() {
    while iptables -D "$SERVICES_CHAIN" -i "$UPLINK" -j RETURN 2>/dev/null; do :; done
    ip link del "$UPLINK" 2>/dev/null || true
}

registry_wanted() { [[ ${CLUSTER_REGISTRY:-1} != 0 ]] && command -v docker-registry >/dev/null; }

# A registry in the hub namespace, where every node reaches it and nothing else does.
registry_up() {
    local dir=$DATA/registry pid
    pid=$(cat "$STATE/registry.pid" 2>/dev/null || true)
    if ! alive "$pid"; then
        mkdir -p "$dir/data"
        cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
        nsenter --net="/run/netns/$HUB" docker-registry serve "$dir/config.yml" \
            >>"$dir/registry.log" 2>&1 </dev/null 9>&- &
        echo $! >"$STATE/registry.pid"
        disown || true
    fi
    wait_for 30 nsenter --net="/run/netns/$HUB" curl -sf "http://$REGISTRY/v2/" ||
        die "the registry did not answer within 30 s; see $dir/registry.log"
    echo "$REGISTRY" >"$STATE/registry"
}

net_up() {
    local i=$1 n
    n=$(node "$i")
    ip netns list | grep -qw "$n" || ip netns add "$n"
    nsenter --net="/run/netns/$n" ip link set lo up
    if ! nsenter --net="/run/netns/$n" ip link show eth0 >/dev/null 2>&1; then
        # Made in the hub namespace, one end moved into the node: no name in the host's.
        nsenter --net="/run/netns/$HUB" ip link del "$n" 2>/dev/null || true
        nsenter --net="/run/netns/$HUB" ip link add "$n" type veth peer name eth0 netns "$n"
        nsenter --net="/run/netns/$HUB" ip link set "$n" master br0 up
        nsenter --net="/run/netns/$n" ip addr add "$(addr "$i")/24" dev eth0
        nsenter --net="/run/netns/$n" ip link set eth0 up
    fi
    nsenter --net="/run/netns/$n" ip route replace default via "$SUBNET.1"
}

dockerd_up() {
    local i=$1 n gpus k args=()
    n=$(node "$i")
    if alive "$(pid_of "$i")" && dk "$i" version >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$STATE" "$DATA/$n/data" "$DATA/$n/exec"
    # A pidfile left by a daemon that is gone blocks the next start ("pid file found").
    if [[ -f $STATE/$n.pid ]] && ! alive "$(pid_of "$i")"; then rm -f "$STATE/$n.pid"; fi
    if [[ -f $STATE/$n.pid ]]; then
        wait_for 30 sh -c "! test -e $STATE/$n.pid" || die "$n: dockerd (pid $(pid_of "$i")) does not answer and does not exit"
    fi
    gpus=$(gpus_of "$i")
    local path=$PATH
    for ((k = 0; k < gpus; k++)); do
        args+=(--node-generic-resource "NVIDIA-GPU=GPU-$n-$k")
    done
    ((gpus > 0)) && path="$HOOK_DIR:$PATH"
    registry_wanted && args+=(--insecure-registry "$REGISTRY")
    nsenter --net="/run/netns/$n" unshare --uts env PATH="$path" sh -c '
        hostname "$1"; shift; exec "$@"' _ "$n" \
        dockerd --data-root "$DATA/$n/data" --exec-root "/run/$n" \
        --pidfile "$STATE/$n.pid" -H "$(sock "$i")" --cgroup-parent "/$n" \
        --bip "172.30.$i.1/24" --default-address-pool base=172.29.0.0/16,size=24 \
        --log-level warn "${args[@]}" \
        >>"$DATA/$n/dockerd.log" 2>&1 </dev/null 9>&- &
    disown || true
    wait_for 60 dk "$i" version || die "$n: dockerd did not answer within 60 s; see $DATA/$n/dockerd.log"
}

swarm_state() { dk "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

swarm_up() {
    local n=$1 i token
    if [[ $(swarm_state 1) != active ]]; then
        dk 1 swarm init --advertise-addr "$(addr 1)" --listen-addr "$(addr 1):2377" >/dev/null
    fi
    token=$(dk 1 swarm join-token -q worker)
    for ((i = 2; i <= n; i++)); do
        if [[ $(swarm_state "$i") != active ]]; then
            # A node that left or lost its state joins anew; a stale entry is removed.
            dk "$i" swarm leave --force >/dev/null 2>&1 || true
            dk "$i" swarm join --token "$token" --advertise-addr "$(addr "$i")" "$(addr 1):2377" >/dev/null
        fi
    done
    # Stale entries of nodes that rejoined under a new id (down, same hostname).
    for id in $(dk 1 node ls --filter role=worker -q); do
        if [[ $(dk 1 node inspect -f '{{.Status.State}}' "$id") == down ]]; then
            local host
            host=$(dk 1 node inspect -f '{{.Description.Hostname}}' "$id")
            if (($(dk 1 node ls --filter "name=$host" -q | wc -l) > 1)); then
                dk 1 node rm --force "$id" >/dev/null || true
            fi
        fi
    done
}

labels_up() {
    local n=$1 i entry
    for ((i = 1; i <= n; i++)); do
        local args=(--label-add "autogen.node=$(node "$i")")
        (($(gpus_of "$i") > 0)) && args+=(--label-add autogen.gpu=true)
        IFS=, read -ra entries <<<"${CLUSTER_LABELS:-}"
        for entry in "${entries[@]}"; do
            [[ ${entry%%:*} == "$i" ]] && args+=(--label-add "${entry#*:}")
        done
        dk 1 node update "${args[@]}" "$(node "$i")" >/dev/null
    done
}

images() {
    if [[ -n ${CLUSTER_IMAGES:-} ]]; then
        echo "$CLUSTER_IMAGES" | tr ',' ' '
    else
        echo "autogen-agent:latest $(bash "$HERE/agent-image-tag.sh")"
    fi
}

up() {
    local n=${1:-3}
    [[ $n =~ ^[1-9]$ ]] || die "N must be 1..9, not '$n'"
    need
    exec 9>"/run/${PREFIX}-cluster.lock"
    flock 9
    local t0=$SECONDS i
    hub_up
    uplink_up
    mkdir -p "$STATE"
    if registry_wanted; then registry_up; else rm -f "$STATE/registry"; fi
    for ((i = 1; i <= n; i++)); do net_up "$i"; done
    local pids=()
    for ((i = 1; i <= n; i++)); do
        dockerd_up "$i" &
        pids+=($!)
    done
    wait_all "${pids[@]}"
    echo "$n" >"$STATE/size"
    swarm_up "$n"
    labels_up "$n"
    if [[ -f $STATE/registry ]]; then
        images_pushed
    else
        pids=()
        for ((i = 1; i <= n; i++)); do
            images_up "$i" &
            pids+=($!)
        done
        wait_all "${pids[@]}"
    fi
    log "$n nodes up in $((SECONDS - t0)) s ($(dk 1 node ls --format '{{.Hostname}}:{{.Status}}' | tr '\n' ' '))"
    sock 1
}

# The images on node I, loaded from the host's dockerd where the node lacks them.
images_up() {
    local i=$1 img id
    for img in $(images); do
        id=$(timeout 30 docker image inspect -f '{{.Id}}' "$img" 2>/dev/null) || continue
        [[ $(dk "$i" image inspect -f '{{.Id}}' "$img" 2>/dev/null) == "$id" ]] && continue
        timeout 120 docker save "$img" | dk "$i" load -q >/dev/null
    done
}

# The images in the registry, pushed from the manager node (which loads them once).
images_pushed() {
    local img
    images_up 1
    for img in $(images); do
        timeout 30 docker image inspect "$img" >/dev/null 2>&1 || continue
        dk 1 tag "$img" "$REGISTRY/$img"
        timeout 300 docker -H "$(sock 1)" push "$REGISTRY/$img" >/dev/null ||
            die "could not push $img to the registry $REGISTRY"
    done
    log "images in the registry $REGISTRY: $(images)"
}

wait_all() {
    local failed=0 pid
    for pid in "$@"; do wait "$pid" || failed=1; done
    ((failed == 0)) || die "a node failed to come up"
}

size() { cat "$STATE/size" 2>/dev/null || ip netns list | grep -oE "^${PREFIX}[0-9]+" | wc -l; }

# Every pid of node I: its namespace's processes (dockerd, containerd, shims) and its
# containers' (cgroup parent /<node>).
node_pids() {
    local n
    n=$(node "$1")
    ip netns pids "$n" 2>/dev/null || true
    find /sys/fs/cgroup/pids/"$n" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

stop_node() {
    local i=$1 pid n
    n=$(node "$i")
    pid=$(pid_of "$i")
    if alive "$pid"; then
        kill -TERM "$pid"
        wait_for 60 sh -c "! test -e $STATE/$n.pid" || log "$n: dockerd still running after 60 s"
    fi
}

kill_node() {
    local i=$1 n pid
    n=$(node "$i")
    for _ in 1 2 3; do
        for pid in $(node_pids "$i"); do kill -KILL "$pid" 2>/dev/null || true; done
        [[ -z $(node_pids "$i") ]] && break
        sleep 0.2
    done
    rm -f "$STATE/$n.pid"
    unmount_under "$DATA/$n" "/run/$n"
}

unmount_under() {
    local dir
    for dir in "$@"; do
        # Deepest first.
        awk -v d="$dir" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    done
}

start_node() {
    local i=$1
    need
    dockerd_up "$i"
    wait_for 30 sh -c "[ \"\$(docker -H $(sock "$i") info --format '{{.Swarm.LocalNodeState}}')\" = active ]" ||
        log "$(node "$i"): not active in the swarm yet"
    sock "$i"
}

down() {
    need
    exec 9>"/run/${PREFIX}-cluster.lock"
    flock 9
    local t0=$SECONDS n i nodes
    nodes=$(ip netns list | grep -oE "^${PREFIX}[0-9]+" || true)
    # Everything is thrown away: no polite stops (a swarm manager's dockerd takes a
    # minute to shut down), every process of each node is killed at once.
    for n in $nodes; do
        i=${n#"$PREFIX"}
        kill_node "$i"
        ip netns del "$n" 2>/dev/null || true
        local c
        for c in /sys/fs/cgroup/*/"$n"; do
            [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        done
        rm -rf "/run/$n" "/run/$n.sock"
    done
    local pid
    for pid in $(ip netns pids "$HUB" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    uplink_down
    ip netns del "$HUB" 2>/dev/null || true
    unmount_under "$DATA"
    rm -rf "$DATA" "$STATE" "/run/${PREFIX}-cluster.lock"
    log "down in $((SECONDS - t0)) s"
}

status() {
    local n
    n=$(size)
    ((n > 0)) || {
        echo "no cluster"
        return 0
    }
    dk 1 node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}'
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
down) down ;;
status) status ;;
stop-node) stop_node "${1:?node index}" ;;
kill-node) kill_node "${1:?node index}" ;;
start-node) start_node "${1:?node index}" ;;
registry) cat "$STATE/registry" 2>/dev/null || die "no registry (docker-registry not installed, CLUSTER_REGISTRY=0, or no cluster)" ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
