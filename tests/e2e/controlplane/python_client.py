"""What the Python-client tests share: an InferenceService body and a watch on the kind.

Also imported by ``kserve_sdk_session.py``, which runs as a script from this folder, so this
module imports nothing from ``tests``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
DEFAULT_URI = "gs://kfserving-examples/models/torchserve/image_classifier/v1"


def isvc(name: str, uri: str = DEFAULT_URI) -> dict[str, Any]:
    """A pytorch InferenceService labelled ``team: ml``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": uri}}},
    }


def watch_isvcs(
    api: client.CustomObjectsApi,
    resource_version: str,
    timeout_s: int,
    w: watch.Watch | None = None,
) -> Iterator[dict[str, Any]]:
    """The kubernetes client's watch of ``default``'s InferenceServices from a resourceVersion;
    pass ``w`` to ``w.stop()`` it from the loop."""
    yield from (w or watch.Watch()).stream(
        api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=resource_version,
        timeout_seconds=timeout_s,
    )
