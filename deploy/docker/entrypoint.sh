#!/bin/sh
# The image's entrypoint: KServe's runtime args (`torchserve --start ...`) go to
# `marserve container`, which serves in the foreground with logs on stdout.
exec /opt/marserve/bin/marserve container "$@"
