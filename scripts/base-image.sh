#!/usr/bin/env bash
# Makes a local base image for the Dockerfile where no registry is reachable (this
# machine, air-gapped hosts, tests/image.rs) and prints its tag. The Dockerfile takes
# it as BUILD_IMAGE and RUNTIME_IMAGE together with PREBUILT (a binary built on the
# host), so no stage needs a registry or cargo:
#
#   DOCKER_BUILDKIT=0 docker build --build-arg BUILD_IMAGE=$BASE \
#       --build-arg RUNTIME_IMAGE=$BASE --build-arg PREBUILT=prebuilt/agent-manager ...
#
# usage: scripts/base-image.sh host BINARY
#        scripts/base-image.sh debootstrap
#
#   host         busybox (static, package busybox-static) + the host's shared
#                libraries that `ldd BINARY` lists + the host's CA bundle: offline,
#                ~2 s, ~10 MB. Tag agent-manager-base:host. The binary then runs on
#                the same glibc it was linked against.
#   debootstrap  a Debian 12 (bookworm) minbase root filesystem with ca-certificates,
#                close to debian:bookworm-slim: needs the Debian mirror apt uses and
#                the debootstrap package, ~1-2 min once, ~210 MB. Tag
#                agent-manager-base:bookworm.
#
# Cached: the image carries the label autogen.base-hash (host: a hash of every file
# that goes in; debootstrap: the recipe's version), and a run that finds an image
# with the same label only prints the tag. Needs root (debootstrap) and a Docker
# engine. Messages go to stderr; stdout is the tag alone.

set -euo pipefail

LABEL=autogen.base-hash
RECIPE_VERSION=1   # bump when the recipe below changes what goes in

log() { echo "base-image.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

current_label() {
    timeout 10 docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

# import DIR TAG HASH: the directory as an image's root filesystem.
import_rootfs() {
    local dir=$1 tag=$2 hash=$3
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -c . |
        timeout 300 docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change "LABEL $LABEL=$hash" \
            --change 'CMD ["/bin/sh"]' \
            - "$tag" >/dev/null
}

# A root filesystem of busybox, BINARY's libraries and the CA bundle, in $1.
host_rootfs() {
    local root=$1 binary=$2 busybox lib target applet
    busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
    busybox=$(readlink -f "$busybox")
    file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
        ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' ||
        die "$busybox is not statically linked (apt-get install busybox-static)"
    mkdir -p "$root"/{bin,etc,tmp,root,usr/local/bin,etc/ssl/certs}
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ $applet == busybox || -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
    done
    # Every library the binary loads (and the loader), at the path it is looked up by.
    while read -r lib; do
        target=$root$lib
        mkdir -p "$(dirname "$target")"
        cp -L "$lib" "$target"
    done < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

main() {
    local mode=${1:-} tag hash
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    local work=$WORK
    case $mode in
    host)
        local binary=${2:-}
        [[ -n $binary && -x $binary ]] || usage
        tag=agent-manager-base:host
        host_rootfs "$work/root" "$binary"
        # The hash of what goes in (names, link targets, contents) and of this recipe.
        hash=$(
            cd "$work/root"
            echo "recipe $RECIPE_VERSION"
            find . -printf '%p %y %l %m\n' | LC_ALL=C sort
            find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        )
        hash=$(sha256sum <<<"$hash" | cut -c1-64)
        if [[ $(current_label "$tag") == "$hash" ]]; then
            echo "$tag"
            return 0
        fi
        log "importing $tag (${hash:0:12})"
        import_rootfs "$work/root" "$tag" "$hash"
        ;;
    debootstrap)
        tag=agent-manager-base:bookworm
        hash="debootstrap-bookworm-minbase-ca-v$RECIPE_VERSION"
        if [[ $(current_label "$tag") == "$hash" ]]; then
            echo "$tag"
            return 0
        fi
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
        local mirror
        mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
            head -n1)
        mirror=${mirror:-http://deb.debian.org/debian}
        log "debootstrap bookworm from $mirror (a minute or two; log: $work/debootstrap.log)"
        if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$work/root" "$mirror" \
                >"$work/debootstrap.log" 2>&1; then
            tail -n 20 "$work/debootstrap.log" >&2
            die "debootstrap failed (is $mirror reachable?)"
        fi
        rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/*
        log "importing $tag"
        import_rootfs "$work/root" "$tag" "$hash"
        ;;
    *)
        usage
        ;;
    esac
    echo "$tag"
}

main "$@"
