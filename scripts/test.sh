#!/usr/bin/env bash
# The test command: brings the services up (scripts/services.sh), then runs every
# test (unit, integration against real RabbitMQ/Redis/Docker, and the benches in
# their quick test mode). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh
cargo test --all-targets "$@"
