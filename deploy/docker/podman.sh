# Sourced by the image scripts: podman as this machine needs it (runc, and ulimits below the
# host's hard limits, which podman's defaults exceed here).
_limit() { local v; v=$(ulimit -H "$1"); [[ $v == unlimited ]] && v=$((2 * $2)); echo $(( v / 2 < $2 ? v / 2 : $2 )); }
NOFILE=$(_limit -n 65536)
NPROC=$(_limit -u 16384)
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")
