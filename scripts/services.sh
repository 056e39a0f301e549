#!/usr/bin/env bash
# Brings up everything agent-manager's tests and local runs need, on a Debian
# 12 machine without systemd (developer machines and CI):
#
#   1. installs what is missing (apt): docker.io, rabbitmq-server,
#      redis-server, busybox-static, openssl (the TLS tests make certificates),
#      prometheus (promtool), chromium (the status page's browser test)
#   2. a Docker engine (dockerd in the background, if `docker info` fails)
#   3. Redis on 127.0.0.1:6379 (no persistence)
#   4. RabbitMQ on 127.0.0.1:5672 (amqp://guest:guest@127.0.0.1:5672/%2f), with
#      its management HTTP API on 127.0.0.1:15672 (the agents' own users)
#   5. the Docker bridge network `autogen-network`, and the host's per-CPU
#      packet backlog (net.core.netdev_max_backlog) raised to at least
#      $BACKLOG_MIN: a broadcast on a bridge is queued once per port, and with
#      the kernel's default of 1000 the ports beyond the ~1,000th container
#      lose every flood (their ARP for the gateway fails: "No route to host")
#   6. the busybox test agent `autogen-agent:busybox`, built from
#      scripts/agent-image/ (and rebuilt when its sources or busybox change: see
#      `autogen.image-hash`), also tagged `autogen-agent:src-<hash>`
#      (scripts/agent-image-tag.sh),
#      the tag this checkout's tests use
#   7. prints one line per service, and exits non-zero naming what failed
#
#   6b. the reference AutoGen agent `autogen-agent:latest` (the default AGENT_IMAGE),
#      built by images/autogen-agent/build.sh, also tagged
#      `autogen-agent:ref-<hash of its sources>` (tests/autogen.rs runs that tag);
#      needs debootstrap, Debian's mirror and PyPI the first time: ~7 min cold,
#      0.1 s when up to date. AGENT_MANAGER_REFERENCE_IMAGE=0 skips it (a quicker
#      first run for work that needs only the busybox agent; tests/autogen.rs and
#      the default AGENT_IMAGE then find no image).
#
# Agents reach Redis (their heartbeats) and RabbitMQ at the gateway address of
# `autogen-network` (the host's side of the bridge, e.g. 172.18.0.1): both also
# listen there, never on 0.0.0.0, and where iptables works, connections to
# that address and those ports are accepted only from the bridge and from the
# host itself (chain AGENT-MANAGER-SERVICES), so other containers and other
# hosts cannot use them. The agents' URLs go to $STATE_DIR/agents.env
# (AGENT_REDIS_URL, AGENT_RABBITMQ_URL; scripts/run.sh reads it). RabbitMQ's
# `guest` user only logs in from loopback: AGENT_RABBITMQ_URL names the
# reachable address, and agents need a user of their own to log in (per-agent
# users, or one made for them). Redis' default user has no password: any
# agent on the network can use it, as it can any key (ACL users for agents
# close that).
#
# Idempotent: what is already up is left alone, and a run with everything up
# takes well under 3 s. Must run as root (it installs packages and starts
# dockerd). Logs and pid files go to $AGENT_MANAGER_SERVICES_DIR
# (default /tmp/agent-manager-services). scripts/stop-services.sh stops it all.
#
# Environment knobs (all optional):
#   AGENT_MANAGER_SERVICES_DIR           logs/state dir
#   AGENT_MANAGER_DOCKER_STORAGE_DRIVER  force a dockerd storage driver
#                                        (default: dockerd's choice, then vfs)
#   AGENT_MANAGER_REFERENCE_IMAGE        0: do not build the reference AutoGen agent

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGE_SRC="$SCRIPT_DIR/agent-image"
STATE_DIR=${AGENT_MANAGER_SERVICES_DIR:-/tmp/agent-manager-services}

# prometheus: its promtool checks /metrics (tests/admin.rs); the server itself is not
# started here (policy-rc.d keeps the package's service down; tests start their own).
# chromium (and a font for its screenshots): tests/status_page.rs loads the admin
# endpoint's status page in headless Chromium. debootstrap and python3-pip: the
# reference agent's base image and wheels (images/autogen-agent/build.sh).
# docker-registry: the local swarm's image registry (scripts/cluster.sh runs its own,
# inside the cluster's network; the package's service stays down).
PACKAGES=(docker.io rabbitmq-server redis-server busybox-static openssl prometheus
          chromium fonts-dejavu-core debootstrap python3-pip docker-registry)
NETWORK=autogen-network
BACKLOG_MIN=${AGENT_MANAGER_NETDEV_BACKLOG:-16384}
IMAGE=autogen-agent:busybox
REFERENCE_IMAGE=autogen-agent:latest
IMAGE_HASH_LABEL=autogen.image-hash
BUSYBOX=/bin/busybox
REDIS_PORT=6379
AMQP_PORT=5672
MANAGEMENT_PORT=15672

# Seconds for dockerd to answer, per storage driver. A fresh dockerd answers in ~2 s; one
# restarted after it died with hundreds of containers first removes their stale sandboxes
# (862 took over a minute here), and stopping it then to try vfs only made it worse.
DOCKERD_DEADLINE=240
REDIS_DEADLINE=15
RABBITMQ_DEADLINE=120  # Erlang boot is slow on 2 cores (typically 5-15 s)

# The Docker CLI (28.x, /usr/local/bin) talks to Debian's dockerd 20.10, which
# has no BuildKit for this client: use the classic builder, quietly.
export DOCKER_BUILDKIT=0

log() { echo "services.sh: $*" >&2; }

# Summary lines (step 7) and failures, filled in as the steps run.
SUMMARY=()
FAILED=()
summary() { SUMMARY+=("$(printf '%-10s %s' "$1:" "$2")"); }
fail() {
    # fail SERVICE MESSAGE [LOGFILE]: record a failure, show the log's tail.
    local service=$1 message=$2 logfile=${3:-}
    FAILED+=("$service")
    summary "$service" "FAILED: $message"
    log "FAILED: $service: $message"
    if [[ -n $logfile && -s $logfile ]]; then
        log "last lines of $logfile:"
        tail -n 25 "$logfile" | sed 's/^/    /' >&2
    fi
}

# Seconds since the epoch, for deadlines.
now() { date +%s; }

# True if process $1 exists and is not a zombie. (`kill -0` is not enough:
# PID 1 of this sandbox reaps orphans only now and then, so a crashed daemon
# can linger as a zombie for seconds.)
alive() {
    local stat
    [[ -n $1 ]] && read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ---------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------
installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing ${missing[*]} (apt-get; a minute or so)"

    # No systemd here: keep the packages' postinst scripts from trying to
    # start their services (invoke-rc.d honours policy-rc.d's exit 101); this
    # script starts them itself, on loopback. An existing policy-rc.d (Docker
    # base images ship one that denies everything) is left as it is.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi

    local rc=0 aptlog="$STATE_DIR/apt.log"
    {
        export DEBIAN_FRONTEND=noninteractive
        local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300
                   -o Dpkg::Options::=--force-confdef
                   -o Dpkg::Options::=--force-confold)
        "${apt[@]}" update &&
            "${apt[@]}" install --no-install-recommends "${missing[@]}"
    } >"$aptlog" 2>&1 || rc=$?
    [[ -n $made_policy ]] && rm -f "$policy"
    if ((rc != 0)); then
        fail packages "apt-get install ${missing[*]} exited $rc" "$aptlog"
        return 1
    fi
    log "installed ${missing[*]}"
}

# ---------------------------------------------------------------------------
# 2. Docker engine
# ---------------------------------------------------------------------------
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

# Pid of the running dockerd, if any (from its own pid file).
dockerd_pid() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] && echo "$pid"
}

# dockerd (and the containerd it runs) refuse to start while their pid file
# names a process that `kill -0` finds, which a zombie passes: after a crash
# (or kill -9) remove pid files whose process is dead or a zombie.
remove_stale_docker_pidfiles() {
    local f pid
    for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
        pid=$(cat "$f" 2>/dev/null) || continue
        if ! alive "$pid"; then
            log "removing stale $f (pid $pid is gone)"
            rm -f "$f"
        fi
    done
}

# Starts dockerd with storage driver $1 ("" = dockerd's own choice) and waits
# until `docker info` answers. Returns 1 if dockerd exits or the deadline
# passes (in which case it is stopped again).
try_dockerd() {
    local driver=$1 dlog="$STATE_DIR/dockerd.log" args=()
    [[ -n $driver ]] && args+=(--storage-driver="$driver")
    echo "=== $(date -u +%FT%TZ) services.sh starting dockerd ${args[*]}" >>"$dlog"
    # setsid: its own session, so it outlives this script and its terminal.
    # 9>&-: it must not inherit (and hold forever) the lock of this script.
    setsid dockerd "${args[@]}" </dev/null >>"$dlog" 2>&1 9>&- &
    local pid=$! deadline=$(($(now) + DOCKERD_DEADLINE))
    echo "$pid" >"$STATE_DIR/dockerd.pid"
    while (($(now) < deadline)); do
        if docker_ok; then
            return 0
        fi
        if ! alive "$pid"; then
            log "dockerd${driver:+ --storage-driver=$driver} exited during startup"
            return 1
        fi
        sleep 0.5
    done
    log "dockerd${driver:+ --storage-driver=$driver} did not answer within ${DOCKERD_DEADLINE}s; stopping it"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    return 1
}

start_docker() {
    local dlog="$STATE_DIR/dockerd.log" pid driver
    if ! docker_ok; then
        if ! command -v dockerd >/dev/null; then
            fail docker "dockerd not found (package docker.io)"
            return 1
        fi
        if pid=$(dockerd_pid); then
            # A dockerd is there but not answering yet (still starting, or
            # stuck): give it the deadline rather than start a second one.
            log "dockerd (pid $pid) is running but not answering; waiting"
            local deadline=$(($(now) + DOCKERD_DEADLINE))
            while (($(now) < deadline)) && ! docker_ok; do sleep 0.5; done
            if ! docker_ok; then
                fail docker "dockerd (pid $pid) does not answer \`docker info\`" "$dlog"
                return 1
            fi
        else
            remove_stale_docker_pidfiles
            log "starting dockerd (log: $dlog)"
            local drivers=("") started=""
            if [[ -n ${AGENT_MANAGER_DOCKER_STORAGE_DRIVER:-} ]]; then
                drivers=("$AGENT_MANAGER_DOCKER_STORAGE_DRIVER")
            else
                # dockerd's own pick (overlay2 where the kernel and backing
                # filesystem allow it); vfs always works, but copies layers.
                drivers=("" vfs)
            fi
            for driver in "${drivers[@]}"; do
                if try_dockerd "$driver"; then started=1; break; fi
            done
            if [[ -z $started ]]; then
                local tried=() d
                for d in "${drivers[@]}"; do tried+=("${d:-(dockerd default)}"); done
                fail docker "dockerd did not start with storage driver ${tried[*]}" "$dlog"
                return 1
            fi
        fi
    fi

    # Report the engine and warn about missing resource-limit support, which
    # agent-manager relies on (memory, cpu, pids limits).
    local info
    info=$(timeout 10 docker info --format \
        '{{.ServerVersion}}|{{.Driver}}|{{.CgroupVersion}}|{{.MemoryLimit}}|{{.SwapLimit}}|{{.CPUCfsQuota}}|{{.PidsLimit}}|{{range .Warnings}}{{.}}; {{end}}' \
        2>/dev/null) || info="?|?|?|?|?|?|?|"
    local version sdriver cgroup mem swap cfs pids warnings
    IFS='|' read -r version sdriver cgroup mem swap cfs pids warnings <<<"$info"
    [[ -z $warnings ]] || log "docker info warnings: $warnings"
    local limits=()
    [[ $mem == true ]] || limits+=("no memory limit")
    [[ $swap == true ]] || limits+=("no swap limit")
    [[ $cfs == true ]] || limits+=("no cpu quota")
    [[ $pids == true ]] || limits+=("no pids limit")
    if ((${#limits[@]})); then
        log "WARNING: docker lacks: ${limits[*]} (cgroups?)"
    fi
    summary docker "running (engine $version, storage $sdriver, cgroup v$cgroup${limits:+, WARNING: ${limits[*]}})"
}

# ---------------------------------------------------------------------------
# 3. Redis
# ---------------------------------------------------------------------------
redis_ok() {
    [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# The address agents reach the services at: autogen-network's gateway (set by
# agent_gateway after the network step; empty without Docker).
GATEWAY=""
agent_gateway() {
    GATEWAY=$(timeout 10 docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' \
        "$NETWORK" 2>/dev/null | awk '{print $1}') || GATEWAY=""
}

# True if something accepts TCP connections on $1:$2.
addr_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# A running Redis bound to loopback only (an older services.sh) also binds
# the gateway; protected mode (which refuses every non-loopback client of a
# password-less default user) goes, the bind addresses keep everyone else out.
redis_listen_on_gateway() {
    [[ -n $GATEWAY ]] || return 0
    addr_open "$GATEWAY" "$REDIS_PORT" && return 0
    log "redis: listening on $GATEWAY too, for agents"
    timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set protected-mode no >/dev/null &&
        timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set bind "127.0.0.1 $GATEWAY" >/dev/null
}

start_redis() {
    local rlog="$STATE_DIR/redis.log"
    if ! redis_ok; then
        if port_open "$REDIS_PORT"; then
            fail redis "127.0.0.1:$REDIS_PORT is taken by something that does not answer PING"
            return 1
        fi
        log "starting redis-server (log: $rlog)"
        # (Early errors go to stdout, later ones to --logfile: same file.)
        # shellcheck disable=SC2094
        local protected=yes
        [[ -n $GATEWAY ]] && protected=no
        if ! redis-server --daemonize yes --bind 127.0.0.1 ${GATEWAY:+"$GATEWAY"} \
                --protected-mode "$protected" --port "$REDIS_PORT" \
                --save "" --appendonly no --dir "$STATE_DIR" \
                --logfile "$rlog" --pidfile "$STATE_DIR/redis.pid" >>"$rlog" 2>&1 9>&-; then
            fail redis "redis-server did not start" "$rlog"
            return 1
        fi
        local deadline=$(($(now) + REDIS_DEADLINE))
        while ! redis_ok; do
            if (($(now) >= deadline)); then
                fail redis "no PONG on 127.0.0.1:$REDIS_PORT within ${REDIS_DEADLINE}s" "$rlog"
                return 1
            fi
            sleep 0.2
        done
    fi
    if ! redis_listen_on_gateway; then
        fail redis "could not make Redis listen on $GATEWAY for agents" "$rlog"
        return 1
    fi
    summary redis "running (redis://127.0.0.1:$REDIS_PORT${GATEWAY:+; agents: redis://$GATEWAY:$REDIS_PORT})"
}

# ---------------------------------------------------------------------------
# 4. RabbitMQ
# ---------------------------------------------------------------------------
# True if an AMQP 0-9-1 broker answers on 127.0.0.1:$AMQP_PORT: send the
# protocol header and expect a frame back (Connection.Start is a method
# frame, type 1). Cheap, unlike rabbitmqctl (an Erlang VM start, ~1-2 s).
amqp_ok() {
    # shellcheck disable=SC2016 # $(...) is for the inner bash
    timeout 3 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/'"$AMQP_PORT"' || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        [[ $(head -c 1 <&3 | od -An -tu1 | tr -d " ") == 1 ]]
    ' 2>/dev/null
}

# Node name and distribution on loopback. RABBITMQ_* variables would do for
# the server but not for a later manual `rabbitmqctl`, so this goes in
# rabbitmq-env.conf, which both read. The AMQP listeners are in conf.d (below).
RABBITMQ_ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
configure_rabbitmq() {
    local want
    want=$(cat <<'EOF'
# Written by agent-manager's scripts/services.sh: a broker for loopback (and,
# see conf.d/10-agent-manager-listeners.conf, the agents' network).
NODENAME=rabbit@localhost
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
# RabbitMQ takes its connection limit from the open-file limit, which the Debian
# wrapper's `su rabbitmq` resets to a soft 1024 (832 sockets): raised to the hard
# limit here, where the broker's own shell reads it (benches/e2e/halt.rs holds a
# thousand agents' own connections).
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
EOF
)
    if [[ $(cat "$RABBITMQ_ENV_CONF" 2>/dev/null) != "$want" ]]; then
        mkdir -p "$(dirname "$RABBITMQ_ENV_CONF")"
        printf '%s\n' "$want" >"$RABBITMQ_ENV_CONF"
    fi
    configure_management
    configure_rabbitmq_listeners
}

# The management plugin (the manager makes each agent's own RabbitMQ user
# through its HTTP API), started with the broker and listening on loopback only.
RABBITMQ_ENABLED_PLUGINS=/etc/rabbitmq/enabled_plugins
RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf
configure_management() {
    mkdir -p "$(dirname "$RABBITMQ_CONF")"
    if ! grep -q rabbitmq_management "$RABBITMQ_ENABLED_PLUGINS" 2>/dev/null; then
        echo '[rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS"
    fi
    if ! grep -q '^management.tcp.ip' "$RABBITMQ_CONF" 2>/dev/null; then
        printf '%s\n' "# agent-manager's scripts/services.sh: the management API on loopback." \
            "management.tcp.ip = 127.0.0.1" "management.tcp.port = $MANAGEMENT_PORT" \
            >>"$RABBITMQ_CONF"
    fi
    # The automatic halt reads every channel's publish counter (HALT_WATCH_INTERVAL_MS):
    # counters refreshed every second, not every five (RabbitMQ's default).
    if ! grep -q '^collect_statistics_interval' "$RABBITMQ_CONF" 2>/dev/null; then
        printf '%s\n' "# agent-manager's scripts/services.sh: channel counters every second (halts)." \
            "collect_statistics_interval = $STATS_INTERVAL_MS" >>"$RABBITMQ_CONF"
    fi
}

# A running broker started before the setting gets it live (channels opened from now
# on report at that interval).
STATS_INTERVAL_MS=1000
ensure_stats_interval() {
    local current
    current=$(timeout 30 rabbitmqctl -q eval 'application:get_env(rabbit, collect_statistics_interval).' 2>/dev/null) || return 0
    [[ $current == *"$STATS_INTERVAL_MS"* ]] && return 0
    configure_management
    log "rabbitmq: channel statistics every ${STATS_INTERVAL_MS} ms (was $current)"
    timeout 30 rabbitmqctl -q eval \
        "application:set_env(rabbit, collect_statistics_interval, $STATS_INTERVAL_MS)." >/dev/null 2>&1 || true
}

# A broker started before the plugin was configured gets it now, on loopback.
ensure_management() {
    port_open "$MANAGEMENT_PORT" && return 0
    configure_management
    log "enabling the rabbitmq_management plugin (the agents' own users need it)"
    local mlog="$STATE_DIR/rabbitmq-plugins.log"
    # shellcheck disable=SC2016 # Erlang, not shell
    timeout 60 rabbitmqctl -q eval \
        'application:set_env(rabbitmq_management, tcp_config, [{ip, "127.0.0.1"}, {port, '"$MANAGEMENT_PORT"'}]).' \
        >"$mlog" 2>&1 || true
    if ! timeout 120 rabbitmq-plugins -q enable rabbitmq_management >>"$mlog" 2>&1; then
        fail rabbitmq "rabbitmq-plugins enable rabbitmq_management failed" "$mlog"
        return 1
    fi
    local deadline=$(($(now) + RABBITMQ_DEADLINE))
    until port_open "$MANAGEMENT_PORT"; do
        if (($(now) >= deadline)); then
            fail rabbitmq "management API not on 127.0.0.1:$MANAGEMENT_PORT within ${RABBITMQ_DEADLINE}s" "$mlog"
            return 1
        fi
        sleep 0.5
    done
}

# AMQP on loopback and on the agents' gateway, never on 0.0.0.0.
RABBITMQ_LISTENERS_CONF=/etc/rabbitmq/conf.d/10-agent-manager-listeners.conf
configure_rabbitmq_listeners() {
    local want
    want="# Written by agent-manager's scripts/services.sh: AMQP on loopback and for agents.
listeners.tcp.loopback = 127.0.0.1:$AMQP_PORT"
    [[ -n $GATEWAY ]] && want+=$'\n'"listeners.tcp.agents = $GATEWAY:$AMQP_PORT"
    if [[ $(cat "$RABBITMQ_LISTENERS_CONF" 2>/dev/null) != "$want" ]]; then
        mkdir -p "$(dirname "$RABBITMQ_LISTENERS_CONF")"
        printf '%s\n' "$want" >"$RABBITMQ_LISTENERS_CONF"
    fi
}

# A running broker without the agents' listener (started before it was
# configured) gets it added live, rather than restarted under its clients.
rabbitmq_listen_on_gateway() {
    [[ -n $GATEWAY ]] || return 0
    addr_open "$GATEWAY" "$AMQP_PORT" && return 0
    configure_rabbitmq
    log "rabbitmq: adding a listener on $GATEWAY:$AMQP_PORT for agents"
    timeout 60 rabbitmqctl -q eval \
        "rabbit_networking:start_tcp_listener({\"$GATEWAY\", $AMQP_PORT}, 10)." >/dev/null 2>&1 || true
    addr_open "$GATEWAY" "$AMQP_PORT"
}

# True while a node named "rabbit" is registered with epmd, i.e. a broker is
# up or still booting (its listeners open last).
rabbit_node_registered() {
    timeout 3 epmd -names 2>/dev/null | grep -q '^name rabbit at port'
}

# The open-file limit RabbitMQ is started with: the hard limit, at most 65536.
rabbitmq_nofile() {
    local hard
    hard=$(ulimit -Hn)
    if [[ $hard == unlimited ]] || ((hard > 65536)); then
        echo 65536
    else
        echo "$hard"
    fi
}

start_rabbitmq() {
    local qlog="$STATE_DIR/rabbitmq.log" pid=""
    if ! amqp_ok; then
        if port_open "$AMQP_PORT"; then
            fail rabbitmq "127.0.0.1:$AMQP_PORT accepts connections but does not speak AMQP"
            return 1
        fi
        if rabbit_node_registered; then
            # Booting (or stuck): wait for it rather than start a second node.
            log "a rabbit node is registered with epmd but AMQP is not up yet; waiting"
        else
            configure_rabbitmq
            log "starting rabbitmq-server (log: $qlog, and /var/log/rabbitmq/)"
            echo "=== $(date -u +%FT%TZ) services.sh starting rabbitmq-server" >>"$qlog"
            # In the foreground of its own session, in the background of ours
            # (rather than -detached, which loses its early output). The
            # Debian wrapper drops to the rabbitmq user. RabbitMQ takes its
            # connection limit from the open-file limit (a soft 1024 gives 832
            # sockets): raised to the hard limit (at most 65536) for the
            # thousand agents' own connections (benches/e2e/halt.rs).
            (
                ulimit -n "$(rabbitmq_nofile)" 2>/dev/null || true
                exec setsid rabbitmq-server </dev/null >>"$qlog" 2>&1 9>&-
            ) &
            pid=$!
            echo "$pid" >"$STATE_DIR/rabbitmq.pid"
        fi
        local deadline=$(($(now) + RABBITMQ_DEADLINE))
        while ! amqp_ok; do
            if [[ -n $pid ]] && ! alive "$pid"; then
                fail rabbitmq "rabbitmq-server exited during startup" "$qlog"
                return 1
            fi
            if (($(now) >= deadline)); then
                fail rabbitmq "no AMQP on 127.0.0.1:$AMQP_PORT within ${RABBITMQ_DEADLINE}s" "$qlog"
                return 1
            fi
            sleep 0.5
        done
    fi
    if ! rabbitmq_listen_on_gateway; then
        fail rabbitmq "could not make RabbitMQ listen on $GATEWAY:$AMQP_PORT for agents" "$qlog"
        return 1
    fi
    ensure_management || return 1
    ensure_stats_interval
    summary rabbitmq "running (amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f${GATEWAY:+; agents: $GATEWAY:$AMQP_PORT}, management http://127.0.0.1:$MANAGEMENT_PORT)"
}

# ---------------------------------------------------------------------------
# 5. Docker network
# ---------------------------------------------------------------------------
ensure_network() {
    local driver
    raise_backlog
    if driver=$(timeout 10 docker network inspect -f '{{.Driver}}' "$NETWORK" 2>/dev/null); then
        if [[ $driver != bridge ]]; then
            fail network "$NETWORK exists with driver '$driver', not bridge; remove it: docker network rm $NETWORK"
            return 1
        fi
    else
        log "creating docker network $NETWORK"
        local out
        if ! out=$(timeout 30 docker network create --driver bridge "$NETWORK" 2>&1); then
            fail network "docker network create $NETWORK: $out"
            return 1
        fi
    fi
    summary network "$NETWORK present (bridge)${BACKLOG_NOTE:+, $BACKLOG_NOTE}"
}

# A frame flooded on a bridge (broadcast, or unicast to a MAC not yet learned)
# is handed to every port's veth, each copy queued on this CPU's backlog; past
# netdev_max_backlog copies are dropped, always those of the last ports. At
# 1,000 agents on one bridge (found by the whole-machine benchmark) the 1,001st
# never got the gateway's ARP answer. One global setting of the host.
BACKLOG_NOTE=""
raise_backlog() {
    local now
    now=$(sysctl -n net.core.netdev_max_backlog 2>/dev/null) || return 0
    if ((now >= BACKLOG_MIN)); then
        BACKLOG_NOTE="netdev_max_backlog $now"
    elif sysctl -qw net.core.netdev_max_backlog="$BACKLOG_MIN" 2>/dev/null; then
        BACKLOG_NOTE="netdev_max_backlog $now -> $BACKLOG_MIN"
    else
        BACKLOG_NOTE="netdev_max_backlog $now (could not raise it: agents beyond ~$now on one bridge lose broadcasts)"
    fi
}

# ---------------------------------------------------------------------------
# 6. Agent image
# ---------------------------------------------------------------------------
# The busybox test agent (hundreds of them start in seconds) is built from
# scripts/agent-image and busybox; scripts/agent-image-tag.sh hashes what goes into
# it. The same image is also tagged autogen-agent:src-<hash> (the tests' agents run
# on that tag): other checkouts sharing this dockerd may rebuild `busybox` from
# their own sources, never this checkout's tag.
ensure_image() {
    local hash tag current blog="$STATE_DIR/image-build.log"
    if [[ ! -x $BUSYBOX ]]; then
        fail image "$BUSYBOX missing (package busybox-static)"
        return 1
    fi
    hash=$(BUSYBOX=$BUSYBOX bash "$SCRIPT_DIR/agent-image-tag.sh" --hash)
    tag=$(BUSYBOX=$BUSYBOX bash "$SCRIPT_DIR/agent-image-tag.sh")
    current=$(timeout 10 docker image inspect -f "{{ index .Config.Labels \"$IMAGE_HASH_LABEL\" }}" \
        "$IMAGE" 2>/dev/null) || current=""
    if [[ $current != "$hash" ]]; then
        if timeout 10 docker image inspect "$tag" >/dev/null 2>&1; then
            # Built before from these sources: `latest` is that image again.
            timeout 10 docker tag "$tag" "$IMAGE"
        else
            log "building $IMAGE (${current:+sources changed; }log: $blog)"
            local ctx
            ctx=$(mktemp -d)
            cp -a "$IMAGE_SRC"/. "$ctx"/
            cp "$BUSYBOX" "$ctx/busybox"
            if ! timeout 300 docker build --label "$IMAGE_HASH_LABEL=$hash" -t "$IMAGE" "$ctx" \
                    >"$blog" 2>&1; then
                rm -rf "$ctx"
                fail image "docker build of $IMAGE failed" "$blog"
                return 1
            fi
            rm -rf "$ctx"
        fi
        # Drop untagged images this one replaced, if nothing uses them.
        timeout 30 docker image prune -f --filter "label=$IMAGE_HASH_LABEL" >/dev/null 2>&1 || true
    fi
    if ! timeout 10 docker tag "$IMAGE" "$tag"; then
        fail image "docker tag $IMAGE $tag failed"
        return 1
    fi
    summary image "$IMAGE up to date, also $tag ($IMAGE_HASH_LABEL=${hash:0:12})"
}

# The reference AutoGen agent (images/autogen-agent): `autogen-agent:latest`, the
# image an agent runs when its command names none. build.sh keeps its own caches
# (base image, wheels) and tags autogen-agent:ref-<hash>; `latest` follows it.
ensure_reference_image() {
    local rlog="$STATE_DIR/reference-image-build.log" tag
    if ! tag=$(bash "$SCRIPT_DIR/../images/autogen-agent/build.sh" 2>"$rlog"); then
        fail reference "images/autogen-agent/build.sh failed" "$rlog"
        return 1
    fi
    if ! timeout 10 docker tag "$tag" "$REFERENCE_IMAGE"; then
        fail reference "docker tag $tag $REFERENCE_IMAGE failed"
        return 1
    fi
    summary reference "$REFERENCE_IMAGE up to date, also $tag (the reference AutoGen agent)"
}

# ---------------------------------------------------------------------------
# 7. The agents' way to the services
# ---------------------------------------------------------------------------
# Connections to the gateway's Redis and AMQP ports are accepted from the
# agents' bridge and from the host itself, and dropped from anywhere else
# (containers of other networks, other hosts routing to this address).
FIREWALL_CHAIN=AGENT-MANAGER-SERVICES
firewall_services() {
    local bridge id port
    if ! command -v iptables >/dev/null || ! iptables -S INPUT >/dev/null 2>&1; then
        log "iptables not usable: the services listen on $GATEWAY, reachable by anything that can route there"
        return 0
    fi
    bridge=$(timeout 10 docker network inspect -f '{{index .Options "com.docker.network.bridge.name"}}' "$NETWORK" 2>/dev/null) || bridge=""
    if [[ -z $bridge || $bridge == "<no value>" ]]; then
        id=$(timeout 10 docker network inspect -f '{{.Id}}' "$NETWORK" 2>/dev/null) || return 1
        bridge=br-${id:0:12}
    fi
    iptables -N "$FIREWALL_CHAIN" 2>/dev/null || iptables -F "$FIREWALL_CHAIN" || return 1
    iptables -A "$FIREWALL_CHAIN" -i "$bridge" -j RETURN &&
        iptables -A "$FIREWALL_CHAIN" -i lo -j RETURN &&
        iptables -A "$FIREWALL_CHAIN" -j DROP || return 1
    for port in "$REDIS_PORT" "$AMQP_PORT"; do
        iptables -C INPUT -d "$GATEWAY" -p tcp --dport "$port" -j "$FIREWALL_CHAIN" 2>/dev/null ||
            iptables -I INPUT -d "$GATEWAY" -p tcp --dport "$port" -j "$FIREWALL_CHAIN" || return 1
    done
}

# The URLs agents get (tests and scripts/run.sh read them from here).
AGENTS_ENV=$STATE_DIR/agents.env
write_agent_urls() {
    if [[ -z $GATEWAY ]]; then
        rm -f "$AGENTS_ENV"
        summary agents "no gateway address of $NETWORK: agents cannot reach the services"
        return 0
    fi
    firewall_services || log "could not add the iptables rules for $GATEWAY (chain $FIREWALL_CHAIN)"
    cat >"$AGENTS_ENV" <<EOF
# Written by agent-manager's scripts/services.sh: what agents on $NETWORK reach.
AGENT_REDIS_URL=redis://$GATEWAY:$REDIS_PORT/0
AGENT_RABBITMQ_URL=amqp://guest:guest@$GATEWAY:$AMQP_PORT/%2f
EOF
    summary agents "reach the services at $GATEWAY ($AGENTS_ENV)"
}

# ---------------------------------------------------------------------------
main() {
    if ((EUID != 0)); then
        echo "services.sh: FAILED: must run as root (installs packages, starts dockerd)" >&2
        exit 1
    fi
    mkdir -p "$STATE_DIR"
    # One run at a time (a second waits for the first). The services started
    # below are started with fd 9 closed, so they do not keep the lock.
    exec 9>"$STATE_DIR/lock"
    if ! flock -w 600 9; then
        echo "services.sh: FAILED: another services.sh held $STATE_DIR/lock for 10 minutes" >&2
        exit 1
    fi

    if install_packages; then
        if start_docker; then
            if ensure_network; then agent_gateway; fi
            ensure_image || true
            if [[ ${AGENT_MANAGER_REFERENCE_IMAGE:-1} != 0 ]]; then
                ensure_reference_image || true
            else
                summary reference "skipped (AGENT_MANAGER_REFERENCE_IMAGE=0)"
            fi
        else
            summary network "skipped (no docker)"
            summary image "skipped (no docker)"
        fi
        start_redis || true
        start_rabbitmq || true
        write_agent_urls
    fi

    local line
    for line in "${SUMMARY[@]}"; do echo "$line"; done
    if ((${#FAILED[@]})); then
        echo "services.sh: FAILED: ${FAILED[*]} (logs in $STATE_DIR)" >&2
        exit 1
    fi
}

main "$@"
