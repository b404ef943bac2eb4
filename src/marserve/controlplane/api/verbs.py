"""The resource verbs over the store: list, get, create, replace, patch, apply, delete."""

from __future__ import annotations

import copy
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from marserve.controlplane.admission import default_isvc, validate_isvc
from marserve.controlplane.errors import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
)
from marserve.controlplane.managed import record_update, server_side_apply
from marserve.controlplane.patch import APPLY, apply_patch
from marserve.controlplane.resources import ISVC, Resource
from marserve.controlplane.selectors import FieldSelector, Selector, fields_match, matches
from marserve.controlplane.store import Obj, Store
from marserve.controlplane.validation import (
    check_isvc_schema,
    check_isvc_types,
    check_shape,
)

MAX_OBJECTS = 500
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SERVER_META = ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_kind(res: Resource, obj: Obj) -> Obj:
    """Objects as clients see them: apiVersion and kind always set."""
    out = dict(obj)
    out.setdefault("apiVersion", res.group_version)
    out.setdefault("kind", res.kind)
    return out


def select(objs: list[Obj], labels: Selector, fields: FieldSelector) -> list[Obj]:
    """The objects whose labels and fields both match."""
    return [
        o
        for o in objs
        if matches(labels, o.get("metadata", {}).get("labels")) and fields_match(fields, o)
    ]


def _admit_namespace(obj: Obj) -> None:
    name = obj["metadata"]["name"]
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise Invalid(
            f'Namespace "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
            "RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
            "start and end with an alphanumeric character",
            field="metadata.name",
        )
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj.setdefault("status", {"phase": "Active"})


class Verbs:
    """Verbs of every served resource; InferenceServices go through KServe's admission."""

    def __init__(self, store: Store, *, max_objects: int = MAX_OBJECTS) -> None:
        self.store = store
        self.max_objects = max_objects

    def list_objects(
        self, res: Resource, ns: str | None, labels: Selector, fields: Any
    ) -> tuple[list[Obj], int]:
        items, rv = self.store.list(res.key, ns or None if res.namespaced else None)
        return [with_kind(res, o) for o in select(items, labels, fields)], rv

    def get(self, res: Resource, ns: str, name: str) -> Obj:
        return with_kind(res, self.store.get(res.key, ns, name))

    def _namespace_exists(self, ns: str) -> None:
        try:
            self.store.get("namespaces", "", ns)
        except NotFound:
            raise NotFound(f'namespaces "{ns}" not found') from None

    def admit(
        self, res: Resource, ns: str, name: str | None, body: Any, mode: str
    ) -> tuple[Obj, list[str]]:
        """Shape, identity, schema and admission checks; the object to store and warnings."""
        obj = copy.deepcopy(check_shape(body, res.kind, res.group_version))
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = ns
        if name is not None and meta.get("name") not in (None, name):
            raise BadRequest(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        if not meta.get("name") and meta.get("generateName") and name is None:
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        meta.setdefault("name", name)
        if not meta.get("name"):
            raise Invalid(
                "metadata.name: Required value: name or generateName is required",
                field="metadata.name",
            )
        if res.key == ISVC:
            return self._admit_isvc(res, obj, mode)
        if res.plural == "namespaces":
            _admit_namespace(obj)
        return obj, []

    def _admit_isvc(self, res: Resource, obj: Obj, mode: str) -> tuple[Obj, list[str]]:
        """The CRD schema (unknown fields per ``mode``), then KServe's webhooks."""
        try:
            obj, warnings = check_isvc_schema(obj, mode)
            obj = default_isvc(obj)
            validate_isvc(obj)
            check_isvc_types(obj)
        except Invalid as err:
            group = res.group_version.rpartition("/")[0]
            name = obj["metadata"]["name"]
            err.details = err.details or {"name": name, "group": group, "kind": res.kind}
            raise
        return obj, warnings

    def _writable(self, res: Resource) -> None:
        if not res.writable:
            raise MethodNotAllowed(f"{res.plural} are read-only in marserve (managed by it)")

    def create(
        self,
        res: Resource,
        ns: str,
        body: Any,
        mode: str,
        manager: str,
        dry: bool,
        applied: list[Obj] | None = None,
    ) -> tuple[Obj, list[str]]:
        self._writable(res)
        obj, warnings = self.admit(res, ns, None, body, mode)
        if res.namespaced:
            self._namespace_exists(ns)
            if self.store.count(res.key, ns) >= self.max_objects:
                raise Forbidden(
                    f'{res.plural} "{obj["metadata"]["name"]}" is forbidden: exceeded quota: '
                    f"at most {self.max_objects} {res.plural} per namespace"
                )
        for key in _SERVER_META:
            obj["metadata"].pop(key, None)
        if applied is None:
            obj = record_update(None, obj, manager, now=now())
        else:
            obj["metadata"]["managedFields"] = applied
        if dry:
            name = obj["metadata"]["name"]
            try:
                self.store.get(res.key, ns, name)
            except NotFound:
                obj["metadata"].update(creationTimestamp=now(), generation=1)
                return obj, warnings
            raise AlreadyExists(f'{res.key} "{name}" already exists')
        return self.store.create(res.key, obj), warnings

    def replace(
        self,
        res: Resource,
        ns: str,
        name: str,
        sub: str | None,
        body: Any,
        mode: str,
        manager: str,
        dry: bool,
    ) -> tuple[Obj, list[str]]:
        self._writable(res)
        old = self.store.get(res.key, ns, name)
        if sub == "status":
            obj = copy.deepcopy(check_shape(body, res.kind, res.group_version))
            obj.setdefault("metadata", {})["name"] = name
            obj["metadata"]["namespace"] = ns
            if dry:
                return {**old, "status": obj.get("status", {})}, []
            return self.store.update_status(res.key, obj), []
        if sub is not None:
            raise NotFound("the server could not find the requested resource")
        obj, warnings = self.admit(res, ns, name, body, mode)
        obj = record_update(old, obj, manager, now=now())
        if dry:
            return {**obj, "metadata": {**old["metadata"], **obj["metadata"]}}, warnings
        return self.store.update(res.key, obj), warnings

    def patch(
        self,
        res: Resource,
        ns: str,
        name: str,
        sub: str | None,
        body: Any,
        ctype: str,
        opts: dict[str, Any],
    ) -> tuple[Obj, list[str]]:
        self._writable(res)
        if sub not in (None, "status"):
            raise NotFound("the server could not find the requested resource")
        if ctype == APPLY:
            return self._apply(res, ns, name, sub, body, opts)
        current = self.get(res, ns, name)
        patched = apply_patch(current, body, ctype, kind=res.kind)
        if not isinstance(patched, dict):
            raise BadRequest("the patched document is not an object")
        meta = (
            patched.setdefault("metadata", {}) if isinstance(patched.get("metadata"), dict) else {}
        )
        meta.setdefault("resourceVersion", current["metadata"]["resourceVersion"])
        return self.replace(res, ns, name, sub, patched, opts["mode"], opts["manager"], opts["dry"])

    def _apply(
        self, res: Resource, ns: str, name: str, sub: str | None, body: Any, opts: dict[str, Any]
    ) -> tuple[Obj, list[str]]:
        if not opts.get("explicit_manager"):
            raise Invalid(
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
                field="fieldManager",
            )
        config = check_shape(body, res.kind, res.group_version)
        if config.get("apiVersion") is None or config.get("kind") is None:
            raise BadRequest("apply patches need apiVersion and kind")
        config.setdefault("metadata", {}).setdefault("name", name)
        try:
            current: Obj | None = self.get(res, ns, name)
        except NotFound:
            current = None
        if sub == "status":
            if current is None:
                raise NotFound(f'{res.key} "{name}" not found')
            return self.replace(
                res,
                ns,
                name,
                sub,
                {**current, "status": config.get("status")},
                opts["mode"],
                opts["manager"],
                opts["dry"],
            )
        # the applied configuration may be partial: only its fields are checked here (unknown
        # ones per fieldValidation); the merged object then goes through admission
        warnings: list[str] = []
        if res.key == ISVC:
            config, warnings = check_isvc_schema(config, opts["mode"])
        merged = server_side_apply(current, config, opts["manager"], force=opts["force"], now=now())
        obj, more = self.admit(res, ns, name, merged, "Ignore")
        if current is None:
            applied = merged["metadata"]["managedFields"]
            out, _ = self.create(
                res, ns, obj, "Ignore", opts["manager"], opts["dry"], applied=applied
            )
            return out, warnings
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if opts["dry"]:
            return obj, warnings
        return self.store.update(res.key, obj), warnings + more

    def delete(self, res: Resource, ns: str, name: str, dry: bool) -> Obj:
        self._writable(res)
        obj = self.get(res, ns, name)
        if res.plural == "namespaces":
            if name in PROTECTED_NAMESPACES:
                raise Forbidden(
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted'
                )
            if not dry:
                self._empty_namespace(name)
        if not dry:
            self.store.delete(res.key, ns, name)
        return obj

    def _empty_namespace(self, ns: str) -> None:
        for key in (ISVC, "pods", "services", "events"):
            for obj in self.store.list(key, ns)[0]:
                self.store.delete(key, ns, obj["metadata"]["name"])
