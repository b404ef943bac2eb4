#!/usr/bin/env bash
# Builds the image's base from Debian packages (no registry is reachable here):
# debootstrap into a folder, tar it, `podman import` it. Cached under
# ~/.cache/marserve/ keyed by the inputs below, so a second run only re-imports.
# Prints the base image's name on stdout.
set -euo pipefail
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=${PACKAGES:-python3,python3-venv,ca-certificates,tini}
CACHE=${MARSERVE_CACHE:-$HOME/.cache/marserve}
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" minbase 1 | sha256sum | cut -c1-16)
TARBALL="$CACHE/debian-base-$KEY.tar"
IMAGE="localhost/marserve-base:$KEY"
PODMAN=(podman --runtime runc)

if [[ ! -s "$TARBALL" ]]; then
  mkdir -p "$CACHE"
  ROOT=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$ROOT"' EXIT
  echo "debootstrap $SUITE ($PACKAGES) into $ROOT" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >&2
  # Slim: no apt lists, docs, man pages or locales the server never reads.
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/*
  tar --numeric-owner -C "$ROOT" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
if ! "${PODMAN[@]}" image exists "$IMAGE"; then
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >&2
fi
echo "$IMAGE"
