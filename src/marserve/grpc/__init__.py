"""gRPC adapters: KServe v2 and TorchServe inference/management services over the data plane."""

from __future__ import annotations

import os


def prepare_runtime() -> None:
    """Call before the first ``import grpc`` of a serving process: turns off gRPC's fork handlers.

    Workers start with ``spawn`` (fork + exec) and never use gRPC, so the handlers would only log
    "skipping fork() handlers" at each worker start. gRPC reads the setting when it is imported;
    an explicit ``GRPC_ENABLE_FORK_SUPPORT`` in the environment wins.
    """
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
