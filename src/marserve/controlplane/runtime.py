"""What a replica runs: the runtime's container (args, env, resources) for one revision, pure."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marserve.cli.container import envelope_for, split_args
from marserve.kube.export import runtime_manifest

Obj = dict[str, Any]

RUNTIME_NAME = "kserve-marserve"
CONTAINER = "kserve-container"
MOUNT = "/mnt/models"
GPU = "nvidia.com/gpu"
_ENVELOPE = {"v1": "kserve", "v2": "kservev2", "grpc-v2": "kservev2"}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 1e-3,
}  # fmt: skip


class SpecError(ValueError):
    """A predictor this machine cannot run as written (a bad quantity, an unknown flag)."""


@dataclass(frozen=True, slots=True)
class Resources:
    """The limits a replica is held to: CPUs (threads + affinity), bytes of RSS, GPUs."""

    cpu: float | None = None
    memory: int | None = None
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """How to start one replica: argv, the extra environment and the config.properties text."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    config_text: str
    resources: Resources
    protocol: str = "v1"
    container_args: tuple[str, ...] = field(default=())
    """The container's args as KServe merges them: the runtime's, then the predictor's."""


def quantity(value: object, what: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``4Gi``) as a number."""
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIX:
        pattern = "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        raise SpecError(
            f"{what}: quantities must match the regular expression {pattern}: {value!r}"
        )
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def predictor_model(isvc: Obj) -> Obj:
    """The predictor's container block: ``model`` (new schema, after defaulting) or ``pytorch``."""
    pred = isvc.get("spec", {}).get("predictor", {})
    for key in ("model", "pytorch"):
        if isinstance(pred.get(key), dict):
            block: Obj = pred[key]
            return block
    containers = pred.get("containers") or [{}]
    first: Obj = containers[0]
    return first


KNOWN_RUNTIMES = frozenset({RUNTIME_NAME, "kserve-torchserve"})
"""Runtimes a predictor may name: marserve's own, and the one it replaces in place."""


def check_runtime(isvc: Obj) -> None:
    """The predictor's format and pinned runtime must be ones this controller serves."""
    model = predictor_model(isvc)
    named = model.get("runtime")
    if named is not None and named not in KNOWN_RUNTIMES:
        raise SpecError(f"No ServingRuntimes or ClusterServingRuntimes with the name: {named}")
    fmt = (model.get("modelFormat") or {}).get("name", "pytorch")
    if fmt != "pytorch":
        raise SpecError(f"No runtime found to support predictor with model type: {fmt}")


def protocol_of(isvc: Obj) -> str:
    protocol = str(predictor_model(isvc).get("protocolVersion") or "v1")
    if protocol not in _ENVELOPE:
        raise SpecError(f"protocolVersion {protocol!r} is not one of v1, v2, grpc-v2")
    return protocol


def resources_of(model: Obj) -> Resources:
    """``limits`` (falling back to ``requests``) as the replica's CPU, memory and GPU count."""
    res = model.get("resources") or {}
    limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    cpu = quantity(limits["cpu"], "resources.limits.cpu") if "cpu" in limits else None
    memory = limits.get("memory")
    mem = int(quantity(memory, "resources.limits.memory")) if memory is not None else None
    gpus = int(quantity(limits.get(GPU, 0), f"resources.limits.{GPU}"))
    return Resources(cpu=cpu, memory=mem, gpus=gpus)


def cpu_set(cpu: float | None, available: Sequence[int], offset: int = 0) -> list[int]:
    """The CPUs a replica may run on: ``ceil(limits.cpu)`` of them (at least one), starting
    ``offset`` replicas in so that pinned replicas spread over the machine."""
    cpus = list(available)
    if cpu is None or not cpus:
        return cpus
    count = min(len(cpus), max(1, math.ceil(cpu)))
    start = (offset * count) % len(cpus)
    return [cpus[(start + i) % len(cpus)] for i in range(count)]


def _container_env(model: Obj) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in model.get("env") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            out[item["name"]] = str(item.get("value", ""))
    return out


def build_replica(isvc: Obj, revision: str, model_dir: Path, storage_uri: str) -> ReplicaSpec:
    """The runtime's ``kserve-container`` for this isvc: runtime args + the predictor's args,
    runtime env + KServe's env + the predictor's env, ``/mnt/models`` replaced by ``model_dir``."""
    runtime = runtime_manifest()
    container = next(c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER)
    model = predictor_model(isvc)
    protocol = protocol_of(isvc)
    name = isvc["metadata"]["name"]
    user_args = tuple(str(a) for a in model.get("args") or [])
    raw = [str(a).replace(MOUNT, str(model_dir)) for a in container.get("args") or []]
    try:
        parsed = split_args([*raw, *user_args])
    except Exception as exc:  # click.UsageError
        raise SpecError(f"spec.predictor.model.args: {exc}") from None
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
    env["TS_SERVICE_ENVELOPE"] = _ENVELOPE[protocol]  # {{.Labels.serviceEnvelope}} rendered
    env.update(
        PROTOCOL_VERSION=protocol,
        INFERENCE_SERVICE_NAME=name,
        STORAGE_URI=storage_uri,
        K_SERVICE=f"{name}-predictor",
        K_CONFIGURATION=f"{name}-predictor",
        K_REVISION=revision,
    )
    env.update(_container_env(model))
    resources = resources_of(model)
    if resources.cpu is not None:
        env.setdefault("OMP_NUM_THREADS", str(max(1, math.ceil(resources.cpu))))
    original = ""
    if parsed.ts_config is not None and parsed.ts_config.is_file():
        original = parsed.ts_config.read_text(errors="replace").replace(MOUNT, str(model_dir))
    argv = (sys.executable, "-m", "marserve", "serve", "--foreground", "--log-level", "INFO")
    return ReplicaSpec(
        argv=(*argv, *parsed.serve_args),
        env=env,
        config_text=replica_config(original, envelope_for(env)),
        resources=resources,
        protocol=protocol,
        container_args=(*(str(a) for a in container.get("args") or []), *user_args),
    )


def replica_config(original: str, envelope: str | None) -> str:
    """The mounted config.properties with every listener moved to a free loopback port."""
    overrides = {
        "inference_address": "http://127.0.0.1:0",
        "management_address": "http://127.0.0.1:0",
        "metrics_address": "http://127.0.0.1:0",
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": "0",
        "grpc_management_port": "0",
        "kserve_grpc_port": "",
    }
    if envelope is not None:
        overrides["service_envelope"] = envelope
    lines = [f"{key}={value}" for key, value in overrides.items()]
    body = original.rstrip("\n")
    return body + "\n# set by marserve controller for this replica\n" + "\n".join(lines) + "\n"
