"""load_entry_point: TorchServe's rules for resolving and initialising a model's handler."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from marserve.handlers import Context, load_entry_point
from marserve.handlers.loader import list_classes_from_module


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def context_for(model_dir: Path, handler: str = "handler.py") -> Context:
    manifest = {"runtime": "python", "model": {"modelName": "m", "handler": handler}}
    return Context("m", str(model_dir), manifest, 1, None, "0.1.0")


def write(model_dir: Path, name: str, source: str) -> None:
    path = model_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


CLASS_HANDLER = """
    class Handler:
        def __init__(self):
            self.context = None

        def initialize(self, context):
            self.context = context
            self.dir = context.system_properties["model_dir"]

        def handle(self, data, context):
            return [{"dir_seen": self.dir == context.system_properties["model_dir"], "row": row}
                    for row in data]
"""


def rows(*values: Any) -> list[dict[str, Any]]:
    return [{"body": v} for v in values]


def test_class_handler_file_is_instantiated_and_initialised(tmp_path: Path) -> None:
    write(tmp_path, "handler.py", CLASS_HANDLER)
    ctx = context_for(tmp_path)
    entry = load_entry_point("handler.py", tmp_path, ctx)
    assert entry(rows(1, 2), ctx) == [
        {"dir_seen": True, "row": {"body": 1}},
        {"dir_seen": True, "row": {"body": 2}},
    ]
    assert str(tmp_path) in sys.path  # siblings of the handler are importable


def test_module_name_without_py_suffix(tmp_path: Path) -> None:
    write(tmp_path, "handler.py", CLASS_HANDLER)
    ctx = context_for(tmp_path, "handler")
    assert load_entry_point("handler", tmp_path, ctx)(rows(7), ctx)[0]["row"] == {"body": 7}


FUNCTION_HANDLER = """
    CALLS = []

    def handle(data, context):
        CALLS.append(data)
        if data is None:
            return None
        return [len(CALLS)] * len(data)

    def custom(data, context):
        CALLS.append(("custom", data))
        return None if data is None else ["custom"] * len(data)
"""


def test_function_entry_point_is_initialised_with_none(tmp_path: Path) -> None:
    write(tmp_path, "fn_handler.py", FUNCTION_HANDLER)
    ctx = context_for(tmp_path, "fn_handler.py")
    entry = load_entry_point("fn_handler.py", tmp_path, ctx)
    module = sys.modules["fn_handler"]
    assert module.CALLS == [None]  # called once with (None, context) at load time
    assert entry(rows("x", "y"), ctx) == [2, 2]


def test_named_function_entry_point(tmp_path: Path) -> None:
    write(tmp_path, "fn_handler.py", FUNCTION_HANDLER)
    ctx = context_for(tmp_path, "fn_handler.py:custom")
    entry = load_entry_point("fn_handler.py:custom", tmp_path, ctx)
    assert sys.modules["fn_handler"].CALLS == [("custom", None)]
    assert entry(rows(1), ctx) == ["custom"]


def test_module_function_wins_over_a_class(tmp_path: Path) -> None:
    write(tmp_path, "mixed.py", CLASS_HANDLER + FUNCTION_HANDLER)
    ctx = context_for(tmp_path, "mixed.py")
    assert load_entry_point("mixed.py", tmp_path, ctx)(rows(1), ctx) == [2]


def test_more_than_one_class_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "two.py", CLASS_HANDLER + "\n    class Other:\n        pass\n")
    with pytest.raises(ValueError, match="Expected only one class"):
        load_entry_point("two.py", tmp_path, context_for(tmp_path, "two.py"))


def test_imported_classes_do_not_count(tmp_path: Path) -> None:
    write(
        tmp_path,
        "imports.py",
        "from pathlib import Path\nfrom collections import OrderedDict\n"
        + textwrap.dedent(CLASS_HANDLER),
    )
    ctx = context_for(tmp_path, "imports.py")
    assert load_entry_point("imports.py", tmp_path, ctx)(rows(1), ctx)[0]["dir_seen"] is True
    assert [c.__name__ for c in list_classes_from_module(sys.modules["imports"])] == ["Handler"]


def test_same_file_name_in_two_models_loads_each_models_own(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path / name, "handler.py", f"def handle(data, context):\n    return [{name!r}]\n")
    for name in ("a", "b"):
        model_dir = tmp_path / name
        ctx = context_for(model_dir)
        assert load_entry_point("handler.py", model_dir, ctx)([{}], ctx) == [name]


def test_handler_can_import_its_sibling_files(tmp_path: Path) -> None:
    write(tmp_path, "helpers_for_sibling_test.py", "SCALE = 3\n")
    write(
        tmp_path,
        "handler.py",
        """
        from helpers_for_sibling_test import SCALE

        def handle(data, context):
            return None if data is None else [row["body"] * SCALE for row in data]
        """,
    )
    ctx = context_for(tmp_path)
    assert load_entry_point("handler.py", tmp_path, ctx)(rows(2), ctx) == [6]


def test_package_module_inside_the_model(tmp_path: Path) -> None:
    write(tmp_path, "pkg_for_loader_test/__init__.py", "")
    write(tmp_path, "pkg_for_loader_test/service.py", FUNCTION_HANDLER)
    ctx = context_for(tmp_path, "pkg_for_loader_test.service:custom")
    entry = load_entry_point("pkg_for_loader_test.service:custom", tmp_path, ctx)
    assert entry(rows(1), ctx) == ["custom"]


def test_model_file_shadows_a_builtin_name(tmp_path: Path) -> None:
    write(tmp_path, "image_classifier.py", "def handle(data, context):\n    return ['mine']\n")
    ctx = context_for(tmp_path, "image_classifier")
    assert load_entry_point("image_classifier", tmp_path, ctx)([{}], ctx) == ["mine"]


@pytest.mark.parametrize("name", ["text_handler"])
def test_unsupported_torchserve_builtins_say_what_is_built_in(tmp_path: Path, name: str) -> None:
    with pytest.raises(
        ValueError, match="base_handler, densenet_handler, image_classifier"
    ) as info:
        load_entry_point(name, tmp_path, context_for(tmp_path, name))
    assert name in str(info.value)


def test_unknown_handler_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found in the model archive"):
        load_entry_point("no_such_handler.py", tmp_path, context_for(tmp_path))


def test_a_missing_dependency_of_the_handler_is_not_masked(tmp_path: Path) -> None:
    source = "import no_such_dependency_xyz\n" + textwrap.dedent(CLASS_HANDLER)
    write(tmp_path, "handler.py", source)
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_entry_point("handler.py", tmp_path, context_for(tmp_path))


@pytest.mark.parametrize(
    "handler",
    [
        "",
        "../handler.py",
        "/etc/handler.py",
        "sub/handler.py",
        "a\\b.py",
        ".hidden",
        "handler.py:",
        "handler.py:1bad",
        "handler.py:os.system",
    ],
)
def test_handler_names_outside_the_model_are_refused(tmp_path: Path, handler: str) -> None:
    write(tmp_path, "handler.py", CLASS_HANDLER)
    with pytest.raises(ValueError):
        load_entry_point(handler, tmp_path, context_for(tmp_path, handler))


def test_errors_in_initialize_propagate(tmp_path: Path) -> None:
    write(
        tmp_path,
        "handler.py",
        """
        class Handler:
            def initialize(self, context):
                raise RuntimeError("weights missing")

            def handle(self, data, context):
                return []
        """,
    )
    with pytest.raises(RuntimeError, match="weights missing"):
        load_entry_point("handler.py", tmp_path, context_for(tmp_path))


def test_a_model_file_named_like_a_library_module_does_not_replace_it(tmp_path: Path) -> None:
    import json

    write(
        tmp_path,
        "json.py",
        "def handle(data, context):\n    return None if data is None else ['mine']\n",
    )
    ctx = context_for(tmp_path, "json.py")
    assert load_entry_point("json.py", tmp_path, ctx)([{}], ctx) == ["mine"]
    assert sys.modules["json"] is json
    assert json.dumps([1]) == "[1]"
