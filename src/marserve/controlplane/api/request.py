"""Parsing one API request: the resource path, query options, body and Accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml
from starlette.requests import Request

from marserve.controlplane import protobuf
from marserve.controlplane.errors import BadRequest, NotFound, TooLarge
from marserve.controlplane.resources import Resource, lookup

MAX_BODY = 3 * 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a few kilobytes of aliases can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not accepted")
        return super().compose_node(parent, index)


@dataclass(slots=True)
class Target:
    """What a resource path names: the resource, namespace, object name and subresource."""

    resource: Resource
    namespace: str | None
    name: str | None = None
    sub: str | None = None
    warnings: list[str] = field(default_factory=list)


def _unknown(path: str) -> NotFound:
    return NotFound("the server could not find the requested resource", field=None)


def parse_target(path: str) -> Target:
    """``/api/v1/...`` or ``/apis/G/V/...`` into a :class:`Target`; 404 for anything else."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        gv, rest = "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise _unknown(path)
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise _unknown(path)
    res = lookup(gv, rest[0])
    if res is None or (namespace is not None and not res.namespaced):
        raise _unknown(path)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if not res.namespaced:
        namespace = ""
    return Target(res, namespace, name, sub)


def wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0].replace(" ", "")
    return "as=Table" in first


def field_manager(request: Request, default: str | None = None) -> str:
    raw = request.query_params.get("fieldManager")
    if raw:
        if len(raw) > 128:
            raise BadRequest("fieldManager: Too long: must have at most 128 bytes")
        return raw
    agent = request.headers.get("user-agent", "")
    return default or agent.split("/")[0].strip() or "unknown"


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


def dry_run(request: Request) -> bool:
    values = request.query_params.getlist("dryRun")
    for value in values:
        if value != "All":
            raise BadRequest(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


async def read_body(request: Request) -> Any:
    """The decoded body (JSON, or YAML for apply patches and ``application/yaml``)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY:
        raise TooLarge(f"Request entity too large: limit is {MAX_BODY}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise TooLarge(f"Request entity too large: limit is {MAX_BODY}")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("the body of the request is empty")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(raw)
    try:
        if "yaml" in ctype:
            return yaml.load(raw, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadRequest(f"the body of the request was in an unknown format: {first}") from None
