#!/usr/bin/env bash
# Runs the daemon against the local services: brings them up (scripts/services.sh),
# then `agent-manager run` with the defaults of config/default.toml (environment
# variables override them, see README). Extra arguments go to `agent-manager`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh
exec cargo run --release --bin agent-manager -- "${@:-run}"
