#!/usr/bin/env bash
# Prints the tag of the test agent image built from this checkout's
# scripts/agent-image (and the host's busybox): autogen-agent:src-<12 hex>.
#
# scripts/services.sh builds autogen-agent:latest and tags the same image with
# this name; the tests run their agents on this name. Several checkouts (other
# branches, other developers) share one dockerd: `latest` is whichever checkout
# built last, while this tag is always this checkout's agent.
#
#   bash scripts/agent-image-tag.sh          # autogen-agent:src-0123456789ab
#   bash scripts/agent-image-tag.sh --hash   # the full hash (the image's label)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/agent-image"
BUSYBOX=${BUSYBOX:-/bin/busybox}

# Every file in scripts/agent-image (but .gitignore and a stray busybox copy) and
# the busybox binary.
hash=$(
    (
        cd "$SRC"
        find . -type f ! -name .gitignore ! -name busybox -print0 | LC_ALL=C sort -z |
            xargs -0 sha256sum
        sha256sum "$BUSYBOX" | sed 's|  .*|  busybox|'
    ) | sha256sum | cut -c1-64
)
if [[ ${1:-} == --hash ]]; then
    echo "$hash"
else
    echo "autogen-agent:src-${hash:0:12}"
fi
