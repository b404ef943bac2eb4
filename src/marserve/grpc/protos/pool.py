"""marserve's own protobuf descriptor pool, holding its protocols and their imports only."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pool, empty_pb2

# The generated ``*_pb2`` modules add their files here (see ``marserve.grpc.generate``), so that
# KServe's package ``inference`` cannot clash with Triton's copy in protobuf's default pool.
POOL = descriptor_pool.DescriptorPool()
_add: Any = POOL.AddSerializedFile  # untyped in some types-protobuf releases
for _module in (any_pb2, empty_pb2):
    _add(_module.DESCRIPTOR.serialized_pb)
