# shellcheck shell=sh
# Stand-in agent for agent-manager, run by busybox sh as PID 1 of the container
# (see Dockerfile). It does no work: it heartbeats the way the contract's agents
# do (../shared/PROTOCOL.md section 8) and otherwise idles until it is told to
# stop. Between heartbeats it sleeps in the shell itself (a `read -t` on a
# FIFO nobody writes): no process is started and nothing wakes it up but the
# next heartbeat, its CONFIG deadlines, or a signal.
#
# Environment:
#   AGENT_ID              printed in the log lines, part of the heartbeat key
#   REDIS_URL             redis://[user[:password]@]host[:port][/db]: where the
#                         heartbeat goes (busybox nc speaking Redis' protocol:
#                         AUTH when the URL has a password, SELECT, then
#                         SET <REDIS_PREFIX>agent:<AGENT_ID>:data:heartbeat
#                         <json> PX <3 x interval in ms>). Unset, or another
#                         scheme (rediss://, unix sockets): no heartbeat.
#   REDIS_PREFIX          in front of the heartbeat key (default empty)
#   HEARTBEAT_INTERVAL_S  seconds between heartbeats (default 10)
#   CONFIG                JSON object (a string); these keys change the
#                         behaviour and are read with sed/grep, so only flat
#                         literal values are recognised:
#     "heartbeat": false      never write a heartbeat (an agent that does not
#                             follow section 8: judged by its container)
#     "heartbeat_stop_after_ms": N
#                             stop heartbeating after N ms and keep running:
#                             a hung agent
#     "heartbeat_unhealthy_after_ms": N
#                             from N ms on, heartbeat with status "unhealthy"
#     "ignore_sigterm": true  ignore SIGTERM, so `docker stop` has to SIGKILL
#                             the container after its timeout (exit 137)
#     "exit_after_ms": N      exit by itself after N milliseconds ...
#     "exit_code": N          ... with exit code N (default 0; only used
#                             together with exit_after_ms)
#     "oom": true             allocate memory until the kernel's OOM killer
#                             ends it (exit 137, OOMKilled in docker inspect)
#     "unhealthy_after_ms": N create /tmp/unhealthy after N milliseconds; a
#                             HEALTHCHECK `test ! -e /tmp/unhealthy` (set with
#                             CONTAINER_HEALTHCHECK) then fails
#     "log_secret": "text"    print a log line carrying "password=<text>", to
#                             check that the manager redacts secrets from logs
#
# Without ignore_sigterm, SIGTERM (and SIGINT) make the agent exit 0 at once:
# every wait (the idle read, a heartbeat's nc) is one a trapped signal
# interrupts.

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

# True when JSON key $1 in $CONFIG is the literal true (false: literal false).
config_true() {
    printf '%s\n' "$CONFIG" | tr -d '\n' |
        grep -Eq '"'"$1"'"[[:space:]]*:[[:space:]]*true'
}
config_false() {
    printf '%s\n' "$CONFIG" | tr -d '\n' |
        grep -Eq '"'"$1"'"[[:space:]]*:[[:space:]]*false'
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

# Sets $now to the Unix time in ms (the shell's own clock: no process).
now_ms() {
    t=${EPOCHREALTIME:-}
    if [ -z "$t" ]; then
        now=$(($(date +%s) * 1000))
        return
    fi
    ms=${t#*.}
    ms=${ms%???}
    ms=${ms#0}
    ms=${ms#0}
    now=$((${t%.*} * 1000 + ${ms:-0}))
}

# Percent-decodes $1 (user and password of a URL) onto stdout.
urldecode() {
    case $1 in
    *%*) printf '%b' "$(printf '%s' "$1" | sed 's/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')" ;;
    *) printf '%s' "$1" ;;
    esac
}

CR=$(printf '\r')
NL='
'
# Appends one RESP bulk string, $<length>CRLF<text>CRLF, to $req (no process:
# a command substitution would start one per call).
add() {
    req="$req\$${#1}$CR$NL$1$CR$NL"
}

exit_after_ms=$(config_int exit_after_ms)
exit_code=$(config_int exit_code)
unhealthy_after_ms=$(config_int unhealthy_after_ms)
hb_stop_after_ms=$(config_int heartbeat_stop_after_ms)
hb_unhealthy_after_ms=$(config_int heartbeat_unhealthy_after_ms)
log_secret=$(printf '%s\n' "$CONFIG" | tr -d '\n' |
    sed -n 's/.*"log_secret"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')

interval_s=${HEARTBEAT_INTERVAL_S:-10}
case $interval_s in
'' | *[!0-9]* | 0) interval_s=10 ;;
esac
interval_ms=$((interval_s * 1000))
ttl_ms=$((interval_ms * 3))

# Where the heartbeat goes: REDIS_URL read once, the AUTH and SELECT that
# precede every SET prepared once.
heartbeat=""
url=${REDIS_URL:-}
if config_false heartbeat; then
    log "not heartbeating (CONFIG heartbeat: false)"
elif [ -z "$url" ]; then
    log "not heartbeating: no REDIS_URL"
else
    case $url in
    redis://*)
        rest=${url#redis://}
        authority=${rest%%/*}
        path=${rest#"$authority"}
        path=${path#/}
        db=${path%%\?*}
        case $authority in
        *@*)
            userinfo=${authority%@*}
            hostport=${authority##*@}
            ;;
        *)
            userinfo=""
            hostport=$authority
            ;;
        esac
        case $userinfo in
        *:*)
            user=$(urldecode "${userinfo%%:*}")
            pass=$(urldecode "${userinfo#*:}")
            ;;
        *)
            user=$(urldecode "$userinfo")
            pass=""
            ;;
        esac
        case $hostport in
        \[*\]:*)
            host=${hostport%%]*}
            host=${host#[}
            port=${hostport##*]:}
            ;;
        \[*\])
            host=${hostport#[}
            host=${host%]}
            port=6379
            ;;
        *:*)
            host=${hostport%:*}
            port=${hostport##*:}
            ;;
        *)
            host=$hostport
            port=6379
            ;;
        esac
        req=""
        replies=1
        if [ -n "$pass" ]; then
            if [ -n "$user" ]; then
                req="*3$CR$NL"
                add AUTH
                add "$user"
            else
                req="*2$CR$NL"
                add AUTH
            fi
            add "$pass"
            replies=$((replies + 1))
        fi
        case $db in
        '' | 0) ;;
        *)
            req="$req*2$CR$NL"
            add SELECT
            add "$db"
            replies=$((replies + 1))
            ;;
        esac
        preamble=$req
        hb_key="${REDIS_PREFIX:-}agent:$AGENT_ID:data:heartbeat"
        heartbeat=yes
        log "heartbeating to $host:$port every ${interval_s} s"
        ;;
    *)
        log "not heartbeating: REDIS_URL is not a redis:// URL"
        ;;
    esac
fi

# Writes one heartbeat: status $1, detail $2 (plain text, no quotes).
hb_failing=""
beat() {
    now_ms
    json="{\"ts\": $now, \"status\": \"$1\", \"detail\": \"$2\"}"
    req="$preamble*5$CR$NL"
    add SET
    add "$hb_key"
    add "$json"
    add PX
    add "$ttl_ms"
    printf '%s' "$req" >/tmp/heartbeat.req
    nc -w 5 "$host" "$port" </tmp/heartbeat.req >/tmp/heartbeat.reply 2>&1 &
    child=$!
    wait "$child"
    child=""
    ok=0
    problem=""
    while IFS= read -r line; do
        line=${line%"$CR"}
        case $line in
        +OK) ok=$((ok + 1)) ;;
        *) [ -z "$problem" ] && problem=$line ;;
        esac
    done </tmp/heartbeat.reply
    if [ "$ok" -ge "$replies" ]; then
        [ -n "$hb_failing" ] && log "heartbeat written again"
        hb_failing=""
    elif [ -z "$hb_failing" ]; then
        hb_failing=yes
        log "heartbeat not written: ${problem:-no answer from $host:$port}"
    fi
}

log "started$ignoring"

if [ -n "$log_secret" ]; then
    log "connecting with password=$log_secret"
fi

if config_true oom; then
    log "allocating memory until the OOM killer stops me"
    # awk doubles a string forever; exec so the killed process is the main one.
    exec awk 'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) { s = s s } }'
fi

# Sets $wake to $1 (ms from the start) when that is sooner; true if it did.
soonest() {
    [ -n "$1" ] && { [ -z "$wake" ] || [ "$1" -lt "$wake" ]; } && wake=$1
}

# The idle wait: `read -t` on a FIFO that nobody writes (opened read-write, so
# it never sees an end of file) returns at its timeout or on a signal.
idle=/tmp/agent.idle
[ -p "$idle" ] || mkfifo "$idle"

now_ms
start=$now
next_beat=$start
unhealthy_file_due=$unhealthy_after_ms
stopped_logged=""
while :; do
    now_ms
    elapsed=$((now - start))
    if [ -n "$exit_after_ms" ] && [ "$elapsed" -ge "$exit_after_ms" ]; then
        log "exiting with code ${exit_code:-0} after ${exit_after_ms} ms"
        exit "${exit_code:-0}"
    fi
    if [ -n "$unhealthy_file_due" ] && [ "$elapsed" -ge "$unhealthy_file_due" ]; then
        : >/tmp/unhealthy
        log "now unhealthy"
        unhealthy_file_due=""
    fi
    if [ -n "$heartbeat" ] && [ -n "$hb_stop_after_ms" ] && [ "$elapsed" -ge "$hb_stop_after_ms" ]; then
        [ -z "$stopped_logged" ] && log "no more heartbeats after ${hb_stop_after_ms} ms (playing a hung agent)"
        stopped_logged=yes
        heartbeat=""
    fi
    if [ -n "$heartbeat" ] && [ "$now" -ge "$next_beat" ]; then
        if [ -n "$hb_unhealthy_after_ms" ] && [ "$elapsed" -ge "$hb_unhealthy_after_ms" ]; then
            beat unhealthy "told to report unhealthy (heartbeat_unhealthy_after_ms)"
        else
            beat ok ""
        fi
        next_beat=$((next_beat + interval_ms))
        now_ms
        [ "$next_beat" -le "$now" ] && next_beat=$((now + interval_ms))
        elapsed=$((now - start))
    fi
    # The next thing to do, in ms from the start.
    wake=""
    [ -n "$heartbeat" ] && soonest $((next_beat - start))
    [ -n "$exit_after_ms" ] && soonest "$exit_after_ms"
    soonest "$unhealthy_file_due"
    if [ -n "$heartbeat" ]; then
        [ -n "$hb_stop_after_ms" ] && soonest "$hb_stop_after_ms"
        # The first unhealthy heartbeat goes out when due, not at the next beat.
        if [ -n "$hb_unhealthy_after_ms" ] && [ "$elapsed" -lt "$hb_unhealthy_after_ms" ]; then
            soonest "$hb_unhealthy_after_ms" && next_beat=$((start + hb_unhealthy_after_ms))
        fi
    fi
    if [ -z "$wake" ]; then
        read -r _ <>"$idle"
        continue
    fi
    left=$((wake - elapsed))
    [ "$left" -lt 0 ] && left=0
    frac=$((left % 1000))
    case ${#frac} in
    1) frac=00$frac ;;
    2) frac=0$frac ;;
    esac
    read -r -t "$((left / 1000)).$frac" _ <>"$idle"
done
