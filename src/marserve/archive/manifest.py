"""The ``MAR-INF/MANIFEST.json`` of a model archive: parse, validate and write it like TMA 0.12."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from marserve.errors import ArchiveError

MANIFEST_DIR = "MAR-INF"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_PATH = f"{MANIFEST_DIR}/{MANIFEST_NAME}"
# The archive format we write is torch-model-archiver 0.12's, byte for byte (but createdOn).
ARCHIVER_VERSION = "0.12.0"
CREATED_ON_FORMAT = "%d/%m/%Y %H:%M:%S"
MAX_MANIFEST_BYTES = 1 << 20
# TorchServe's RuntimeType enum; marserve runs the Python ones.
PYTHON_RUNTIMES = frozenset({"python", "python2", "python3"})
KNOWN_RUNTIMES = PYTHON_RUNTIMES | {"LSP"}
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]*")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
# Optional model.* string fields and the attribute each one fills.
_PATH_FIELDS = {
    "serializedFile": "serialized_file",
    "modelFile": "model_file",
    "requirementsFile": "requirements_file",
    "configFile": "config_file",
}


def valid_model_name(name: str) -> bool:
    """Whether ``name`` passes torch-model-archiver's model-name filter."""
    return MODEL_NAME_RE.fullmatch(name) is not None


def relative_path_problem(value: str) -> str | None:
    """Why ``value`` is not a safe path relative to the model folder, or None when it is."""
    if not value:
        return "is empty"
    if "\x00" in value:
        return "contains a NUL byte"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/") or _DRIVE_RE.match(value):
        return "is an absolute path"
    if ".." in value.split("/"):
        return "contains '..'"
    return None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed, validated ``MAR-INF/MANIFEST.json``; ``raw`` keeps every key as read."""

    model_name: str
    model_version: str | None
    handler: str
    serialized_file: str | None
    model_file: str | None
    requirements_file: str | None
    config_file: str | None
    runtime: str
    archiver_version: str
    created_on: str | None
    raw: dict[str, Any] = field(hash=False)

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        """Parse and validate manifest bytes; ``source`` names the archive in errors."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ArchiveError(
                f"{source}: {MANIFEST_PATH} is larger than {MAX_MANIFEST_BYTES} bytes"
            )
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{source}: {MANIFEST_PATH} is not valid JSON: {exc}") from None
        return cls.from_dict(parsed, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> Manifest:
        """Validate an already parsed manifest object."""
        where = f"{source}: {MANIFEST_PATH}"
        if not isinstance(raw, dict):
            raise ArchiveError(f"{where}: must be a JSON object")
        model = raw.get("model")
        if not isinstance(model, dict):
            raise ArchiveError(f"{where}: missing 'model' object")
        runtime = _required(raw, "runtime", where, "")
        if runtime not in KNOWN_RUNTIMES:
            known = ", ".join(sorted(KNOWN_RUNTIMES))
            raise ArchiveError(f"{where}: unknown 'runtime' {runtime!r} (expected one of {known})")
        name = _required(model, "modelName", where, "model.")
        if not valid_model_name(name):
            raise ArchiveError(f"{where}: 'model.modelName' {name!r} has characters not allowed")
        handler = _required(model, "handler", where, "model.")
        _check_handler(handler, where)
        paths: dict[str, str | None] = {}
        for key, attr in _PATH_FIELDS.items():
            value = _optional(model, key, where, "model.")
            if value is not None and (problem := relative_path_problem(value)):
                raise ArchiveError(f"{where}: 'model.{key}' {value!r} {problem}")
            paths[attr] = value
        return cls(
            model_name=name,
            model_version=_version(model, where),
            handler=handler,
            serialized_file=paths["serialized_file"],
            model_file=paths["model_file"],
            requirements_file=paths["requirements_file"],
            config_file=paths["config_file"],
            runtime=runtime,
            archiver_version=_optional(raw, "archiverVersion", where, "") or "",
            created_on=_optional(raw, "createdOn", where, ""),
            raw=raw,
        )

    @classmethod
    def build(
        cls,
        *,
        model_name: str,
        handler: str,
        runtime: str = "python",
        model_version: str | None = None,
        serialized_file: str | None = None,
        model_file: str | None = None,
        requirements_file: str | None = None,
        config_file: str | None = None,
        created_on: datetime | None = None,
    ) -> Manifest:
        """A new manifest with torch-model-archiver 0.12's keys, key order and omissions."""
        model: dict[str, Any] = {"modelName": model_name}
        if serialized_file:
            model["serializedFile"] = serialized_file
        model["handler"] = handler
        optional = (
            ("modelFile", model_file),
            ("modelVersion", model_version),
            ("requirementsFile", requirements_file),
            ("configFile", config_file),
        )
        model.update((key, value) for key, value in optional if value)
        raw = {
            "createdOn": (created_on or datetime.now()).strftime(CREATED_ON_FORMAT),
            "runtime": runtime,
            "model": model,
            "archiverVersion": ARCHIVER_VERSION,
        }
        return cls.from_dict(raw, model_name)

    @property
    def is_python(self) -> bool:
        """Whether the handler runs on the Python runtime (marserve does not run ``LSP``)."""
        return self.runtime in PYTHON_RUNTIMES

    @property
    def handler_module(self) -> str:
        """The handler's module part: ``"h.py"`` for ``"h.py:fn"``, the name itself otherwise."""
        return self.handler.split(":", 1)[0]

    @property
    def handler_function(self) -> str | None:
        """The entry point after ``:`` in ``module:function`` handlers, else None."""
        _, sep, function = self.handler.partition(":")
        return function if sep else None

    def to_json(self) -> bytes:
        """The manifest as torch-model-archiver writes it (``json.dumps(indent=2)``, UTF-8)."""
        return json.dumps(self.raw, indent=2).encode("utf-8")


def _optional(obj: dict[str, Any], key: str, where: str, prefix: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArchiveError(f"{where}: '{prefix}{key}' must be a string")
    return value


def _required(obj: dict[str, Any], key: str, where: str, prefix: str) -> str:
    value = _optional(obj, key, where, prefix)
    if value is None:
        raise ArchiveError(f"{where}: missing '{prefix}{key}'")
    if not value:
        raise ArchiveError(f"{where}: '{prefix}{key}' is empty")
    return value


def _version(model: dict[str, Any], where: str) -> str | None:
    value = model.get("modelVersion")
    # TorchServe's JSON reader turns a numeric version into its text; so do we.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _optional(model, "modelVersion", where, "model.") or None


def _check_handler(handler: str, where: str) -> None:
    module, sep, function = handler.partition(":")
    if problem := relative_path_problem(module):
        raise ArchiveError(f"{where}: 'model.handler' {handler!r} {problem}")
    if sep and not function.isidentifier():
        raise ArchiveError(f"{where}: 'model.handler' {handler!r} names no valid function")
