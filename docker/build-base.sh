#!/usr/bin/env bash
# Builds the base image kd-search-base:debian from Debian packages alone, for a machine that
# reaches a Debian mirror but no container registry: debootstrap a minimal root file system
# with Debian's python3, import it as an image. Runs as root (debootstrap, chroot). Skips
# the work when the image already exists; FORCE=1 rebuilds it.
#   docker/build-base.sh [IMAGE]
# Settings (environment): DEBIAN_SUITE (this machine's release by default), DEBIAN_MIRROR.
set -euo pipefail
image=${1:-kd-search-base:debian}
suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists (FORCE=1 rebuilds it)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }

rootfs=$(mktemp -d /tmp/kd-search-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$suite" "$rootfs" "$mirror"
# The image needs no package lists or caches; apt-get update refills them in a build.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$image"
echo "built base image $image ($suite from $mirror)"
