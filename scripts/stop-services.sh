#!/usr/bin/env bash
# Stops what scripts/services.sh started: RabbitMQ, Redis and dockerd (which
# stops its running containers on the way down). For manual use; CI does not
# need it. Packages, images, the autogen-network network and Docker's data in
# /var/lib/docker are kept, so the next services.sh is quick.
#
# Each service is stopped politely first, then by the pid it recorded; only
# processes whose pid is known are signalled.

set -uo pipefail

STATE_DIR=${AGENT_MANAGER_SERVICES_DIR:-/tmp/agent-manager-services}
status=0

log() { echo "stop-services.sh: $*" >&2; }

# True if process $1 exists and is not a zombie (PID 1 of this sandbox reaps
# orphans only now and then, so `kill -0` alone would wait for zombies).
alive() {
    local stat
    [[ -n $1 ]] && read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid=$1 tries=$(($2 * 5))
    while ((tries-- > 0)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    ! alive "$pid"
}

# stop_pid NAME PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
    local name=$1 pid=$2 secs=$3
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$secs"; then
        log "$name (pid $pid) ignored SIGTERM for ${secs}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || { log "$name (pid $pid) is still there"; status=1; }
    fi
}

# --- RabbitMQ: rabbitmqctl stop waits for the node to shut down.
if command -v rabbitmqctl >/dev/null && timeout 60 rabbitmqctl -q stop >/dev/null 2>&1; then
    echo "rabbitmq:  stopped"
elif pid=$(cat "$STATE_DIR/rabbitmq.pid" 2>/dev/null) && alive "$pid"; then
    # The wrapper shell's process group (setsid in services.sh) holds the VM.
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait_gone "$pid" 30 || kill -KILL -- "-$pid" 2>/dev/null || true
    echo "rabbitmq:  stopped (by signal)"
else
    echo "rabbitmq:  not running"
fi
rm -f "$STATE_DIR/rabbitmq.pid"

# --- Redis
if command -v redis-cli >/dev/null &&
    [[ $(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; then
    timeout 10 redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
    if pid=$(cat "$STATE_DIR/redis.pid" 2>/dev/null); then
        stop_pid redis "$pid" 10
    fi
    echo "redis:     stopped"
else
    echo "redis:     not running"
fi

# --- dockerd (its managed containerd exits with it)
if pid=$(cat /var/run/docker.pid 2>/dev/null) && alive "$pid"; then
    # dockerd gives running containers their stop timeout (10 s by default).
    stop_pid dockerd "$pid" 60
    echo "docker:    stopped"
else
    echo "docker:    not running"
fi
rm -f "$STATE_DIR/dockerd.pid"

exit "$status"
