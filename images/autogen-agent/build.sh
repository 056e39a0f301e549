#!/usr/bin/env bash
# Builds the reference agent image (Dockerfile next to this script) without a
# registry, and prints its tag:
#
#   bash images/autogen-agent/build.sh [TAG]  # default autogen-agent:ref-<hash>
#   bash images/autogen-agent/build.sh --tag  # that default tag (tests/autogen.rs)
#   bash images/autogen-agent/build.sh --hash # the sources' hash (the label)
#
# Three steps, each cached:
#   1. the base image autogen-agent-base:bookworm: `debootstrap --variant=minbase`
#      of Debian 12 with python3, python3-venv and ca-certificates (Debian's
#      default mirror), then `docker import`. Cached by the label
#      autogen.base-hash (the recipe's version below). Cold: ~2-5 min.
#   2. the wheels of requirements.txt, downloaded from PyPI into
#      $AGENT_IMAGE_CACHE/wheels (default /var/cache/agent-manager/wheels) when
#      one is missing. Cold: ~1 min, 18 MB.
#   3. `docker build` from a temporary context (Dockerfile, requirements.txt,
#      src/, the wheels): the venv is installed offline. The image carries the
#      label autogen.image-hash (a hash of Dockerfile, requirements.txt, src/ and
#      the base recipe); a TAG already carrying the same hash is not rebuilt.
#
# Needs root (debootstrap, chroot), a Docker engine, and for a cold build
# Debian's mirror and PyPI (pip). Messages go to stderr; stdout is the tag alone.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${AGENT_IMAGE_CACHE:-/var/cache/agent-manager}
WHEELS=$CACHE/wheels
BASE=autogen-agent-base:bookworm
BASE_LABEL=autogen.base-hash
BASE_RECIPE=debootstrap-bookworm-minbase-python3-venv-ca-v1 # change with the recipe
IMAGE_LABEL=autogen.image-hash
PYTHON_VERSION=3.11 # bookworm's python3 and glibc: the wheels must match them
GLIBC_MINOR=36

# The Docker CLI may be newer than a dockerd without BuildKit: the classic builder.
export DOCKER_BUILDKIT=0

log() { echo "build.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

label_of() {
    timeout 10 docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# The hash of what goes into the image.
sources_hash() {
    (
        cd "$HERE"
        echo "base $BASE_RECIPE"
        find Dockerfile requirements.txt src -type f ! -name '*.pyc' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-64
}

# 1. The base image.
ensure_base() {
    [[ $(label_of "$BASE" "$BASE_LABEL") == "$BASE_RECIPE" ]] && return 0
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
    local root rc=0
    root=$(mktemp -d "${TMPDIR:-/tmp}/autogen-agent-root.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the directory to remove
    trap "rm -rf '$root'" EXIT
    log "debootstrap bookworm minbase with python3 (a few minutes; log: $root.log)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" >"$root.log" 2>&1 || rc=$?
    if ((rc != 0)); then
        tail -n 20 "$root.log" >&2
        die "debootstrap exited $rc (is Debian's mirror reachable?)"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    log "importing $BASE"
    tar --numeric-owner -C "$root" -c . |
        timeout 600 docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change "LABEL $BASE_LABEL=$BASE_RECIPE" \
            --change 'CMD ["/bin/bash"]' \
            - "$BASE" >/dev/null
    rm -rf "$root" "$root.log"
    trap - EXIT
}

# 2. The wheels: downloaded only when one of requirements.txt is not in the cache.
wheel_present() {
    local name=$1 version=$2 found
    # Wheel file names carry the name lowercased (mostly), with _ for - and .
    name=${name//[-.]/_}
    found=$(shopt -s nocaseglob nullglob; echo "$WHEELS/${name}-${version}-"*.whl)
    [[ -n $found ]]
}

ensure_wheels() {
    local line name version missing=0
    mkdir -p "$WHEELS"
    while IFS= read -r line; do
        line=${line%%#*}
        [[ $line == *==* ]] || continue
        name=${line%%==*}
        version=${line#*==}
        version=${version//[[:space:]]/}
        wheel_present "$name" "$version" || missing=$((missing + 1))
    done <"$HERE/requirements.txt"
    ((missing == 0)) && return 0
    local pip
    pip=$(command -v pip3 || command -v pip) || die "pip not found (apt-get install python3-pip)"
    # Every manylinux tag bookworm's glibc (2.36) runs, whatever the host's Python.
    local platforms=() v
    for ((v = GLIBC_MINOR; v >= 5; v--)); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    log "downloading $missing wheel(s) into $WHEELS (PyPI)"
    "$pip" download -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --python-version "$PYTHON_VERSION" --implementation cp "${platforms[@]}" \
        -r "$HERE/requirements.txt" -d "$WHEELS" >&2 ||
        die "pip download failed (is PyPI reachable?)"
}

# 3. The image.
build_image() {
    local tag=$1 hash=$2 ctx
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/autogen-agent-ctx.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$ctx'" EXIT
    cp -a "$HERE/Dockerfile" "$HERE/requirements.txt" "$HERE/src" "$ctx"/
    find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
    mkdir "$ctx/wheels"
    cp -al "$WHEELS"/*.whl "$ctx/wheels"/ 2>/dev/null || cp -a "$WHEELS"/*.whl "$ctx/wheels"/
    log "docker build $tag"
    if ! timeout 900 docker build -q --build-arg "BASE=$BASE" --label "$IMAGE_LABEL=$hash" \
            -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
        tail -n 30 "$ctx.log" >&2
        rm -f "$ctx.log"
        die "docker build failed"
    fi
    rm -rf "$ctx" "$ctx.log"
    trap - EXIT
}

main() {
    local tag=${1:-} hash
    hash=$(sources_hash)
    case $tag in
    --hash) echo "$hash"; return 0 ;;
    --tag) echo "autogen-agent:ref-${hash:0:12}"; return 0 ;;
    '') tag=autogen-agent:ref-${hash:0:12} ;;
    esac
    if [[ $(label_of "$tag" "$IMAGE_LABEL") != "$hash" ]]; then
        ensure_base
        ensure_wheels
        build_image "$tag" "$hash"
    fi
    echo "$tag"
}

main "$@"
