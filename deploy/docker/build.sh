#!/usr/bin/env bash
# Builds the CPU image here, offline: the Debian base (base.sh), a build context with
# marserve's wheel and its dependencies' wheels (downloaded on the host, cached under
# ~/.cache/marserve/ keyed by pyproject.toml), then `podman build` (docker format: OCI
# images have no HEALTHCHECK). Prints the image name.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
IMAGE=${IMAGE:-localhost/marserve:test}
CACHE=${MARSERVE_CACHE:-$HOME/.cache/marserve}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# shellcheck source=deploy/docker/podman.sh
source "$HERE/podman.sh"
BASE=$("$HERE/base.sh")

KEY=$(cat "$ROOT/pyproject.toml" <(echo "$TORCH_VERSION") | sha256sum | cut -c1-16)
DEPS="$CACHE/wheels-$KEY"
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/wheels/app"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CTX/wheels/app" "$ROOT" >&2
if [[ ! -f "$DEPS/.complete" ]]; then
  rm -rf "$DEPS" && mkdir -p "$DEPS"
  "$PY" -m pip download -q -d "$DEPS" "torch==$TORCH_VERSION" \
    "$(ls "$CTX"/wheels/app/marserve-*.whl)[explain]" >&2
  rm -f "$DEPS"/marserve-*.whl
  touch "$DEPS/.complete"
fi
# Hard links keep the context cheap (same filesystem), copies otherwise.
cp -al "$DEPS" "$CTX/wheels/deps" 2>/dev/null || cp -a "$DEPS" "$CTX/wheels/deps"
cp "$HERE/Dockerfile" "$HERE/entrypoint.sh" "$CTX/"
"${PODMAN[@]}" build --format docker "${ULIMITS[@]}" \
  --network none --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" -f "$CTX/Dockerfile" "$CTX" >&2
echo "$IMAGE"
