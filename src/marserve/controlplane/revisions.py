"""Revisions as Knative counts them: template snapshots, ``NAME-predictor-0000N``, storage pulls."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Any

import orjson

from marserve.storage import StorageError, StorageSettings, pull

Obj = dict[str, Any]

REVISIONS = "revisions.serving.knative.dev"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"
HASH_ANNOTATION = "marserve.dev/template-hash"
NUMBER_ANNOTATION = "marserve.dev/revision-number"
UID_ANNOTATION = "marserve.dev/inferenceservice-uid"
# Not part of the template: traffic is the Route's business, the rest is client bookkeeping.
_NOT_TEMPLATE = frozenset({"canaryTrafficPercent"})
_NOT_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def template(isvc: Obj) -> Obj:
    """What the Knative revision template is built from: the predictor and the annotations."""
    pred = isvc.get("spec", {}).get("predictor") or {}
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    return {
        "predictor": {k: v for k, v in pred.items() if k not in _NOT_TEMPLATE},
        "annotations": {k: v for k, v in annotations.items() if k not in _NOT_ANNOTATIONS},
    }


def template_hash(isvc: Obj) -> str:
    raw = orjson.dumps(template(isvc), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


def revision_name(isvc_name: str, number: int) -> str:
    return f"{isvc_name}-predictor-{number:05d}"


def revision_object(isvc: Obj, number: int) -> Obj:
    """The Revision kept in the store: the template snapshot it was made from."""
    meta = isvc["metadata"]
    name = revision_name(meta["name"], number)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace", "default"),
            "labels": {
                ISVC_LABEL: meta["name"],
                REVISION_LABEL: name,
                "serving.knative.dev/configuration": f"{meta['name']}-predictor",
                "serving.knative.dev/service": f"{meta['name']}-predictor",
                "component": "predictor",
            },
            "annotations": {
                HASH_ANNOTATION: template_hash(isvc),
                NUMBER_ANNOTATION: str(number),
                UID_ANNOTATION: str(meta.get("uid", "")),
            },
        },
        "spec": {
            "template": template(isvc),
            "isvc": {"metadata": _meta(isvc), "spec": isvc["spec"]},
        },
    }


def _meta(isvc: Obj) -> Obj:
    meta = isvc["metadata"]
    return {k: meta[k] for k in ("name", "namespace", "annotations", "labels") if k in meta}


def number_of(revision: Obj) -> int:
    return int(revision["metadata"]["annotations"][NUMBER_ANNOTATION])


def storage_uri_of(isvc: Obj) -> str | None:
    pred = isvc.get("spec", {}).get("predictor") or {}
    for key in ("model", "pytorch"):
        block = pred.get(key)
        if isinstance(block, dict) and block.get("storageUri"):
            return str(block["storageUri"])
    return None


def storage_settings(home: Path, env: dict[str, str]) -> StorageSettings:
    """Pulls cached under ``~/.cache/marserve``; ``pvc://CLAIM/...`` is ``HOME/pvc/CLAIM/...``."""
    pvc_root = home / "pvc"
    claims = {p.name: p for p in pvc_root.iterdir() if p.is_dir()} if pvc_root.is_dir() else {}
    cache = Path(env.get("MARSERVE_STORAGE_CACHE", "~/.cache/marserve/storage")).expanduser()
    return StorageSettings(cache_dir=cache, pvc=claims, env=env)


async def pull_revision(uri: str, dest: Path, settings: StorageSettings) -> Path:
    """The revision's model folder (``config/``, ``model-store/``); StorageError on failure.

    The pull runs in a daemon thread of its own, so a controller that stops mid-download
    (a large store, a stalled remote) exits at once instead of waiting for it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Path] = loop.create_future()

    def settle(path: Path | None, error: BaseException | None) -> None:
        if done.done():  # cancelled: the service was deleted meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert path is not None
            done.set_result(path)

    def work() -> None:
        try:
            path, error = pull(uri, dest, settings).path, None
        except Exception as exc:  # StorageError, or anything a client raised
            path, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, path, error)

    threading.Thread(target=work, name=f"pull {uri}", daemon=True).start()
    return await done


__all__ = ["StorageError", "pull_revision"]
