#!/usr/bin/env bash
# Runs the daemon against the local services: brings them up (scripts/services.sh),
# then `agent-manager run` with the defaults of config/default.toml (environment
# variables override them, see README). Agents get the URLs services.sh wrote for them
# (AGENT_REDIS_URL, AGENT_RABBITMQ_URL: the agents' network gateway, which their
# containers can reach, unlike 127.0.0.1) unless those are set already. Extra arguments
# go to `agent-manager`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh
agents_env=${AGENT_MANAGER_SERVICES_DIR:-/tmp/agent-manager-services}/agents.env
if [[ -r $agents_env ]]; then
    while IFS='=' read -r name value; do
        [[ $name == AGENT_*_URL && -z ${!name:-} ]] && export "$name=$value"
    done <"$agents_env"
fi
exec cargo run --release --bin agent-manager -- "${@:-run}"
