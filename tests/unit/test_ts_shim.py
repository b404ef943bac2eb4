"""The ``ts`` import shim: TorchServe handlers run unmodified; a real ``ts`` is never shadowed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import marserve

SRC = Path(marserve.__file__).resolve().parent.parent

# A handler written for TorchServe, importing every ts.* module the shim provides.
TORCHSERVE_STYLE_HANDLER = """
    import base64

    import torch
    from ts.context import Context
    from ts.handler_utils.timer import timed
    from ts.torch_handler.base_handler import BaseHandler
    from ts.torch_handler.image_classifier import ImageClassifier
    from ts.torch_handler.vision_handler import VisionHandler
    from ts.utils.util import (
        PredictionException,
        list_classes_from_module,
        load_label_mapping,
        map_class_to_label,
    )


    class BrightnessClassifier(ImageClassifier):
        topk = 2

        def initialize(self, context):
            assert isinstance(context, Context)
            super().initialize(context)
            assert isinstance(self, VisionHandler) and isinstance(self, BaseHandler)
            self.extra = load_label_mapping(
                context.system_properties["model_dir"] + "/index_to_name.json"
            )

        @timed
        def preprocess(self, data):
            for row in data:
                if row.get("data") == "reject me":
                    raise PredictionException("rejected on purpose", 422)
            return super().preprocess(data)

        def postprocess(self, data):
            labels = super().postprocess(data)
            self.context.set_response_header(0, "x-classes", str(len(self.extra)))
            return [{"top": next(iter(r)), "n": len(r)} for r in labels]
"""

RUN_HANDLER = """
    import importlib.util, json, sys
    sys.path.insert(0, {src!r})
    assert importlib.util.find_spec("ts") is None, "a real ts is installed; the test needs none"
    from marserve.handlers import Context, PredictionException, install_ts_shim, load_entry_point
    from pathlib import Path

    model_dir = Path({model_dir!r})
    manifest = {{"model": {{"modelName": "b", "serializedFile": "model.pt",
                           "handler": "ts_style_handler.py"}}}}
    ctx = Context("b", str(model_dir), manifest, 2, None, "0.1.0")
    entry = load_entry_point("ts_style_handler.py", model_dir, ctx)
    assert install_ts_shim() is True
    import ts
    ctx.begin_batch(["a", "b"], [{{}}, {{}}])
    rows = [{{"data": (model_dir / "dark.png").read_bytes()}},
            {{"body": (model_dir / "light.png").read_bytes()}}]
    out = entry(rows, ctx)
    header = ctx.get_response_headers(0)
    try:
        entry([{{"data": "reject me"}}], ctx)
        code = None
    except PredictionException as exc:
        code = exc.error_code
    print(json.dumps({{"out": out, "header": header, "code": code, "ts": ts.__file__}}))
"""


class Brightness(nn.Module):
    """Two logits: darkness and brightness of the whole image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1) * 10.0


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_torchserve_handler_runs_unmodified_on_the_shim(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.script(Brightness()), str(tmp_path / "model.pt"))
    (tmp_path / "index_to_name.json").write_text('{"0": "dark", "1": "light"}')
    (tmp_path / "ts_style_handler.py").write_text(textwrap.dedent(TORCHSERVE_STYLE_HANDLER))
    for name, level in (("dark", 10), ("light", 245)):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (level, level, level)).save(buffer, format="PNG")
        (tmp_path / f"{name}.png").write_bytes(buffer.getvalue())

    result = python(RUN_HANDLER.format(src=str(SRC), model_dir=str(tmp_path)), tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["out"] == [{"top": "dark", "n": 2}, {"top": "light", "n": 2}]
    assert report["header"] == {"x-classes": "2"}
    assert report["code"] == 422
    assert Path(report["ts"]).is_relative_to(SRC / "marserve" / "handlers" / "ts_shim")


FAKE_TS = """
    import importlib.util, sys
    sys.path.insert(0, {fake!r})
    sys.path.insert(1, {src!r})
    from marserve.handlers import install_ts_shim
    from marserve.handlers.shim import SHIM_DIR

    assert install_ts_shim() is False
    assert install_ts_shim() is False
    assert str(SHIM_DIR) not in sys.path
    import ts
    assert ts.REAL_TORCHSERVE is True, ts.__file__
    print("ok")
"""


def test_a_real_ts_package_is_never_shadowed(tmp_path: Path) -> None:
    fake = tmp_path / "site"
    (fake / "ts").mkdir(parents=True)
    (fake / "ts" / "__init__.py").write_text("REAL_TORCHSERVE = True\n")
    result = python(FAKE_TS.format(fake=str(fake), src=str(SRC)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


NO_TS = """
    import importlib.util, sys
    sys.path.insert(0, {src!r})
    from marserve.handlers.shim import SHIM_DIR, install_ts_shim

    before = list(sys.path)
    assert importlib.util.find_spec("ts") is None
    assert install_ts_shim() is True
    assert sys.path == before + [str(SHIM_DIR)]  # appended, never in front of anything
    assert install_ts_shim() is True
    assert sys.path.count(str(SHIM_DIR)) == 1
    from ts.utils.util import PredictionException
    from marserve.handlers.exceptions import PredictionException as Ours
    assert PredictionException is Ours
    print("ok")
"""


def test_shim_is_appended_once_when_no_ts_exists(tmp_path: Path) -> None:
    result = python(NO_TS.format(src=str(SRC)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "module",
    [
        "ts.context",
        "ts.torch_handler.base_handler",
        "ts.torch_handler.vision_handler",
        "ts.torch_handler.image_classifier",
        "ts.utils.util",
        "ts.handler_utils.timer",
    ],
)
def test_shim_modules_only_reexport_marserve(module: str) -> None:
    path = SRC / "marserve" / "handlers" / "ts_shim" / Path(*module.split("."))
    source = path.with_suffix(".py").read_text()
    code = [
        line
        for line in source.splitlines()
        if line.strip() and not line.startswith(("from marserve.", '"""', "__all__", " ", "]"))
    ]
    assert code == [], f"{module} should only re-export marserve names: {code}"
