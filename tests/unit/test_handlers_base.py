"""BaseHandler: TorchScript and eager model loading, default steps, explain hooks, metrics."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from marserve.handlers import Context, PredictionException, load_entry_point
from marserve.handlers.base_handler import BaseHandler


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def save_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.script(module), str(path))


def affine() -> nn.Linear:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    return layer


def context_for(model_dir: Path, metrics: Any = None, **model: str) -> Context:
    manifest = {"runtime": "python", "model": {"modelName": "m", "modelVersion": "1", **model}}
    return Context("m", str(model_dir), manifest, 2, None, "0.1.0", metrics=metrics)


EAGER_MODEL = """
    import torch
    from torch import nn

    HELPER_CONSTANT = 2


    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)
"""


def write_eager(
    model_dir: Path, source: str = EAGER_MODEL, state: dict[str, Any] | None = None
) -> None:
    (model_dir / "model_def.py").write_text(textwrap.dedent(source), encoding="utf-8")
    if state is None:
        state = {f"fc.{k}": v for k, v in affine().state_dict().items()}
    torch.save(state, model_dir / "weights.pt")


def test_builtin_base_handler_serves_a_torchscript_model(tmp_path: Path) -> None:
    save_torchscript(affine(), tmp_path / "model.pt")
    ctx = context_for(tmp_path, serializedFile="model.pt", handler="base_handler")
    entry = load_entry_point("base_handler", tmp_path, ctx)
    ctx.begin_batch(["a", "b"], [{}, {}])
    out = entry([{"data": [1.0, 2.0, 3.0]}, {"body": [0.0, 0.0, 0.0]}], ctx)
    assert out == [[1.5, 6.0], [0.5, -1.0]]


def test_eager_model_is_loaded_from_model_file_and_state_dict(tmp_path: Path) -> None:
    write_eager(tmp_path)
    handler = BaseHandler()
    handler.initialize(context_for(tmp_path, modelFile="model_def.py", serializedFile="weights.pt"))
    assert handler.initialized
    assert handler.map_location == "cpu"
    assert handler.device == torch.device("cpu")
    assert handler.mapping is None
    assert handler.model_pt_path == str((tmp_path / "weights.pt").resolve())
    assert type(handler.model).__name__ == "Affine"
    assert not handler.model.training  # eval mode
    out = handler.postprocess(handler.inference(handler.preprocess([[1.0, 2.0, 3.0]])))
    assert out == [[1.5, 6.0]]


def test_eager_state_dict_keys_must_match(tmp_path: Path) -> None:
    write_eager(tmp_path, state={"wrong.weight": torch.zeros(2, 3)})
    with pytest.raises(RuntimeError, match="state_dict"):
        BaseHandler().initialize(
            context_for(tmp_path, modelFile="model_def.py", serializedFile="weights.pt")
        )


class _Payload:
    """Pickles to a call of open(canary, "w"): must never run on load."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.canary), "w"))


def test_weights_are_loaded_without_running_pickled_code(tmp_path: Path) -> None:
    write_eager(tmp_path)
    canary = tmp_path / "pwned"
    torch.save({"fc.weight": _Payload(canary)}, tmp_path / "weights.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        BaseHandler().initialize(
            context_for(tmp_path, modelFile="model_def.py", serializedFile="weights.pt")
        )
    assert not canary.exists()


def test_model_file_needs_exactly_one_module_class(tmp_path: Path) -> None:
    two = EAGER_MODEL + "\n\n    class Extra(nn.Module):\n        pass\n"
    write_eager(tmp_path, source=two)
    with pytest.raises(ValueError, match=r"exactly one torch.nn.Module.*\['Affine', 'Extra'\]"):
        BaseHandler().initialize(
            context_for(tmp_path, modelFile="model_def.py", serializedFile="weights.pt")
        )


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        ({"serializedFile": "../outside.pt"}, ValueError, "outside the model directory"),
        ({"serializedFile": "missing.pt"}, RuntimeError, "Missing the serialized model file"),
        ({"modelFile": "/etc/x.py", "serializedFile": "weights.pt"}, ValueError, "outside"),
        ({}, RuntimeError, "neither a modelFile nor a serializedFile"),
    ],
)
def test_manifest_problems_are_clear_errors(
    tmp_path: Path, model: dict[str, str], error: type[Exception], match: str
) -> None:
    write_eager(tmp_path)
    (tmp_path.parent / "outside.pt").write_bytes(b"x")
    with pytest.raises(error, match=match):
        BaseHandler().initialize(context_for(tmp_path, **model))


def test_default_preprocess_refuses_non_tensors_with_400(tmp_path: Path) -> None:
    save_torchscript(affine(), tmp_path / "model.pt")
    ctx = context_for(tmp_path, serializedFile="model.pt")
    entry = load_entry_point("base_handler", tmp_path, ctx)
    ctx.begin_batch(["a"], [{}])
    with pytest.raises(PredictionException) as info:
        entry([{"data": "not a tensor"}], ctx)
    assert info.value.error_code == 400


def test_explain_requests_reach_get_insights_which_is_501_by_default(tmp_path: Path) -> None:
    save_torchscript(affine(), tmp_path / "model.pt")
    ctx = context_for(tmp_path, serializedFile="model.pt")
    entry = load_entry_point("base_handler", tmp_path, ctx)
    ctx.begin_batch(["a"], [{"explain": "True"}])
    with pytest.raises(PredictionException) as info:
        entry([{"data": [1.0, 2.0, 3.0], "target": 1}], ctx)
    assert info.value.error_code == 501
    assert "get_insights" in info.value.message
    err = info.value.to_error()
    assert err.http_status == 501
    assert str(info.value).endswith(": 501")


def test_explain_handle_passes_data_and_target_to_get_insights(tmp_path: Path) -> None:
    class Explaining(BaseHandler):
        def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> list[Any]:
            return [{"shape": list(tensor_data.shape), "raw": raw_data, "target": target}]

    save_torchscript(affine(), tmp_path / "model.pt")
    ctx = context_for(tmp_path, serializedFile="model.pt")
    handler = Explaining()
    handler.initialize(ctx)
    ctx.begin_batch(["a"], [{"explain": "True"}])
    out = handler.handle([{"data": [1.0, 2.0, 3.0], "target": 1}], ctx)
    assert out == [{"shape": [1, 3], "raw": [1.0, 2.0, 3.0], "target": 1}]
    assert handler.explain is True


def test_handler_time_goes_to_the_metrics_object_when_there_is_one(tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.times: list[tuple[Any, ...]] = []

        def add_time(self, *args: Any) -> None:
            self.times.append(args)

    save_torchscript(affine(), tmp_path / "model.pt")
    recorder = Recorder()
    ctx = context_for(tmp_path, metrics=recorder, serializedFile="model.pt")
    entry = load_entry_point("base_handler", tmp_path, ctx)
    ctx.begin_batch(["a"], [{}])
    entry([{"data": [1.0, 2.0, 3.0]}], ctx)
    assert len(recorder.times) == 1
    name, value, _, unit = recorder.times[0]
    assert (name, unit) == ("HandlerTime", "ms")
    assert value >= 0


def test_label_mapping_is_read_from_the_model_dir(tmp_path: Path) -> None:
    save_torchscript(affine(), tmp_path / "model.pt")
    (tmp_path / "index_to_name.json").write_text('{"0": "zero", "1": ["n01", "one"]}')
    handler = BaseHandler()
    handler.initialize(context_for(tmp_path, serializedFile="model.pt"))
    assert handler.mapping == {"0": "zero", "1": "one"}
