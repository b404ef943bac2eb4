"""Resolves a manifest's ``handler`` to an initialised entry point, with TorchServe's rules."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from marserve.handlers.context import Context
from marserve.handlers.shim import install_ts_shim

EntryPoint = Callable[[list[dict[str, Any]] | None, Context], list[Any]]

# Handlers shipped with marserve, by TorchServe's names.
BUILTIN_HANDLERS = {
    "base_handler": "marserve.handlers.base_handler",
    "image_classifier": "marserve.handlers.image_classifier",
    "object_detector": "marserve.handlers.object_detector",
    "image_segmenter": "marserve.handlers.image_segmenter",
    "densenet_handler": "marserve.handlers.densenet_handler",
    "text_classifier": "marserve.handlers.text_classifier",
}
# TorchServe built-ins marserve does not ship (text_handler is TorchServe's deprecated one).
UNSUPPORTED_BUILTINS = frozenset({"text_handler"})


class HandlerError(ValueError):
    """The handler cannot be resolved (not found, not a handler): loading it again won't help."""


_FUNCTION_NAME = re.compile(r"[A-Za-z_]\w*\Z")
_TS_PREFIX = "ts.torch_handler."
_MODEL_MARK = "__marserve_model_file__"


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """Classes defined in ``module`` itself (not imported into it), optionally of one base."""
    classes = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    if parent_class is not None:
        classes = [c for c in classes if issubclass(c, parent_class)]
    return classes


def import_module_file(path: Path, module_name: str | None = None) -> ModuleType:
    """Import the Python file at ``path`` as ``module_name`` (its stem by default), freshly.

    Importing by path means a same-named module elsewhere on ``sys.path`` never shadows a
    model's own file. The module is registered in ``sys.modules`` so that pickling and sibling
    imports find it, unless that name belongs to a library module (a model file called
    ``json.py``), which is left alone: the model's module then gets a private name.
    """
    name = module_name or path.stem
    existing = sys.modules.get(name)
    if existing is not None and not getattr(existing, _MODEL_MARK, False):
        name = f"marserve_model_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path.name}")
    module = importlib.util.module_from_spec(spec)
    setattr(module, _MODEL_MARK, True)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
    return module


def _split_handler(handler: str) -> tuple[str, str | None]:
    """``"file.py:fn"`` -> ``("file", "fn")``, refusing anything that is not a plain name."""
    module_part, sep, function = handler.strip().partition(":")
    if sep and not _FUNCTION_NAME.match(function):
        raise HandlerError(f"handler {handler!r}: expected a function name after ':'")
    if (
        not module_part
        or module_part.startswith(".")
        or ".." in module_part
        or any(ch in module_part for ch in "/\\")
        or Path(module_part).is_absolute()
    ):
        raise HandlerError(f"handler {handler!r} must be a file or module name inside the model")
    if module_part.endswith(".py"):
        module_part = module_part[: -len(".py")]
    return module_part, function or None


def _builtin(module_part: str) -> str | None:
    """The built-in a handler names: ``image_classifier``, ``ts.torch_handler.image_classifier``
    or a path to TorchServe's own file (``serve/ts/torch_handler/image_classifier.py``)."""
    name = module_part.removesuffix(".py").replace("\\", "/")
    if "/" in name:
        parent, _, name = name.rpartition("/")
        if not parent.endswith("ts/torch_handler"):
            return None
    name = name.removeprefix(_TS_PREFIX)
    return name if name in BUILTIN_HANDLERS or name in UNSUPPORTED_BUILTINS else None


def api_handler(handler: str, model_dir: Path) -> str:
    """A ``handler`` given to the management API, checked against the extracted model.

    It may name a built-in (also by TorchServe's path to its file), or a file or module in the
    archive; a name found nowhere is kept (the workers then fail to load it, deterministically,
    as TorchServe's do). A module from outside the archive (``os:system``) is refused: the API
    must not let a caller pick any importable function to run in the workers.
    """
    module_part, sep, function = handler.strip().partition(":")
    builtin = _builtin(module_part)
    if builtin is not None:
        return builtin + sep + function
    module, _ = _split_handler(handler)
    parts = module.split(".")
    if (
        (model_dir / f"{module}.py").is_file()
        or model_dir.joinpath(*parts).is_dir()
        or model_dir.joinpath(*parts[:-1], f"{parts[-1]}.py").is_file()
    ):
        return handler.strip()
    if importlib.util.find_spec(parts[0]) is not None:
        raise ValueError(
            f"handler {handler[:80]!r} names a module outside the model archive; the "
            "management API takes a built-in handler or a file in the archive"
        )
    return handler.strip()


def _import_handler_module(name: str, model_dir: Path) -> ModuleType:
    """The model's own file or package first, then a built-in, then any importable module."""
    as_file = model_dir / f"{name}.py"
    if as_file.is_file():
        return import_module_file(as_file)
    parts = name.split(".")
    in_model = (
        model_dir.joinpath(*parts).is_dir()
        or model_dir.joinpath(*parts[:-1], f"{parts[-1]}.py").is_file()
    )
    builtin = name.removeprefix(_TS_PREFIX)
    if not in_model:
        if builtin in BUILTIN_HANDLERS:
            return importlib.import_module(BUILTIN_HANDLERS[builtin])
        if builtin in UNSUPPORTED_BUILTINS:
            raise HandlerError(
                f"handler {name!r} is a TorchServe built-in that marserve does not ship; "
                f"built-in handlers are: {', '.join(sorted(BUILTIN_HANDLERS))}. "
                "Package your own handler file in the archive instead."
            )
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.split(".")[0] != exc.name.split(".")[0]:
            raise  # the handler exists but one of its own imports is missing
        raise HandlerError(
            f"handler {name!r} not found in the model archive and not a built-in "
            f"({', '.join(sorted(BUILTIN_HANDLERS))})"
        ) from exc


def _class_entry_point(module: ModuleType, context: Context) -> EntryPoint:
    classes = list_classes_from_module(module)
    if len(classes) != 1:
        names = sorted(c.__name__ for c in classes)
        raise HandlerError(
            f"Expected only one class in handler module {module.__name__} or a function "
            f"entry point, found classes {names}"
        )
    service = classes[0]()
    handle = getattr(service, "handle", None)
    if not callable(handle):
        raise HandlerError(f"handler class {classes[0].__name__} has no handle method")
    initialize = getattr(service, "initialize", None)
    if callable(initialize):
        initialize(context)
    entry: EntryPoint = handle
    return entry


def load_entry_point(handler: str, model_dir: Path, context: Context) -> EntryPoint:
    """Import ``handler`` for the model in ``model_dir``, initialise it, and return its entry point.

    ``handler`` is ``file.py``, ``module`` or either with ``:function``, resolved inside
    ``model_dir`` (put on ``sys.path``), or a built-in name (``image_classifier``,
    ``base_handler``). As in TorchServe, a module-level function (``handle`` or the named one)
    wins and is initialised by calling it once with ``(None, context)``; otherwise the module
    must define exactly one class, which is instantiated, ``initialize(context)``-ed, and whose
    ``handle`` becomes the entry point.
    """
    install_ts_shim()
    module_name, function_name = _split_handler(handler)
    model_dir = Path(model_dir)
    if str(model_dir) not in sys.path:
        sys.path.append(str(model_dir))
    module = _import_handler_module(module_name, model_dir)
    function = getattr(module, function_name or "handle", None)
    if callable(function) and not inspect.isclass(function):
        entry: EntryPoint = function
        entry(None, context)
        return entry
    return _class_entry_point(module, context)
