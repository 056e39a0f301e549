# shellcheck shell=sh
# Stand-in agent for agent-manager, run by busybox sh as PID 1 of the container
# (see Dockerfile). It does no work: it idles until it is told to stop.
#
# Environment:
#   AGENT_ID  printed in the log lines (default "unknown")
#   CONFIG    JSON object (a string); these keys change the behaviour and are
#             read with sed/grep, so only flat literal values are recognised:
#     "ignore_sigterm": true  ignore SIGTERM, so `docker stop` has to SIGKILL
#                             the container after its timeout (exit 137)
#     "exit_after_ms": N      exit by itself after N milliseconds ...
#     "exit_code": N          ... with exit code N (default 0; only used
#                             together with exit_after_ms)
#     "oom": true             allocate memory until the kernel's OOM killer
#                             ends it (exit 137, OOMKilled in docker inspect)
#     "unhealthy_after_ms": N create /tmp/unhealthy after N milliseconds; the
#                             manager's default HEALTHCHECK
#                             (test ! -e /tmp/unhealthy) then fails
#     "log_secret": "text"    print a log line carrying "password=<text>", to
#                             check that the manager redacts secrets from logs
#
# Without ignore_sigterm, SIGTERM (and SIGINT) make the agent exit 0 at once:
# every wait is a `sleep ... & wait $!`, which a trapped signal interrupts.

AGENT_ID=${AGENT_ID:-unknown}
CONFIG=${CONFIG:-}

log() {
    echo "agent $AGENT_ID: $*"
}

# Prints the unsigned integer value of JSON key $1 in $CONFIG, or nothing.
config_int() {
    printf '%s\n' "$CONFIG" | tr -d '\n' |
        sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p'
}

# True when JSON key $1 in $CONFIG is the literal true.
config_true() {
    printf '%s\n' "$CONFIG" | tr -d '\n' |
        grep -Eq '"'"$1"'"[[:space:]]*:[[:space:]]*true'
}

child=""
on_term() {
    log "received $1, exiting"
    [ -n "$child" ] && kill "$child" 2>/dev/null
    exit 0
}

if config_true ignore_sigterm; then
    # PID 1 gets no signal it has no handler for; an explicit ignore makes
    # the intent clear either way. SIGKILL still ends it.
    trap '' TERM
    trap 'on_term SIGINT' INT
    ignoring=" (ignoring SIGTERM)"
else
    trap 'on_term SIGTERM' TERM
    trap 'on_term SIGINT' INT
    ignoring=""
fi

exit_after_ms=$(config_int exit_after_ms)
exit_code=$(config_int exit_code)
unhealthy_after_ms=$(config_int unhealthy_after_ms)
log_secret=$(printf '%s\n' "$CONFIG" | tr -d '\n' |
    sed -n 's/.*"log_secret"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')

log "started$ignoring"

if [ -n "$log_secret" ]; then
    log "connecting with password=$log_secret"
fi

if config_true oom; then
    log "allocating memory until the OOM killer stops me"
    # awk doubles a string forever; exec so the killed process is the main one.
    exec awk 'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) { s = s s } }'
fi

if [ -n "$unhealthy_after_ms" ]; then
    (
        secs=$(printf '%d.%03d' $((unhealthy_after_ms / 1000)) $((unhealthy_after_ms % 1000)))
        sleep "$secs"
        : > /tmp/unhealthy
        log "now unhealthy"
    ) &
fi

if [ -n "$exit_after_ms" ]; then
    # busybox sleep takes fractional seconds.
    secs=$(printf '%d.%03d' $((exit_after_ms / 1000)) $((exit_after_ms % 1000)))
    sleep "$secs" &
    child=$!
    wait "$child"
    child=""
    log "exiting with code ${exit_code:-0} after ${exit_after_ms} ms"
    exit "${exit_code:-0}"
fi

while :; do
    sleep 1 &
    child=$!
    wait "$child"
    child=""
done
