"""``BaseHandler``: TorchServe's default handler (model loading, pre/inference/post, handle)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from marserve.handlers.context import Context
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.labels import load_label_mapping
from marserve.handlers.loader import import_module_file

logger = logging.getLogger(__name__)


def select_device(gpu_id: int | None) -> tuple[str, torch.device]:
    """TorchServe's choice: ``cuda:{gpu_id}`` (or ``mps``) when a GPU is assigned and present."""
    if gpu_id is not None and torch.cuda.is_available():
        return "cuda", torch.device(f"cuda:{gpu_id}")
    mps = getattr(torch.backends, "mps", None)
    if gpu_id is not None and mps is not None and mps.is_available():
        return "mps", torch.device("mps")
    return "cpu", torch.device("cpu")


def row_payload(row: Any) -> Any:
    """A request row's payload: its ``data`` field, else its ``body`` (non-dict rows as given)."""
    if not isinstance(row, dict):
        return row
    value = row.get("data")
    return row.get("body") if value is None else value


def _insight_data(row: Any) -> Any:
    """What TorchServe passes ``get_insights`` as its data: the row's ``data`` or ``body``."""
    return row_payload(row) if isinstance(row, dict) else None


def _insight_target(row: Any) -> Any:
    """TorchServe's target: the row's ``target``, 0 when it has none."""
    return (row.get("target") or 0) if isinstance(row, dict) else 0


def uses_integrated_gradients(handler_class: type) -> bool:
    """Whether explain requests get marserve's batched integrated gradients.

    Walking the MRO, the first class that sets ``explain_with_integrated_gradients`` or defines
    ``get_insights`` decides: a subclass's own ``get_insights`` (TorchServe style) wins over
    an inherited opt-in, and an opt-in wins over a ``get_insights`` of the same class.
    """
    for klass in handler_class.__mro__:
        attrs = vars(klass)
        if attrs.get("explain_with_integrated_gradients") is True:
            return True
        if "get_insights" in attrs or "explain_with_integrated_gradients" in attrs:
            return False
    return False


def _file_in(model_dir: Path, name: str, what: str) -> Path:
    """``model_dir / name``, refusing names that point outside the model directory."""
    path = (model_dir / name).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise ValueError(f"{what} {name!r} points outside the model directory")
    return path


class BaseHandler:
    """Loads an eager or TorchScript model from the archive and serves it with default steps.

    Subclasses override :meth:`preprocess`, :meth:`inference` and :meth:`postprocess`;
    ``handle`` is the entry point the server calls with one list of rows per batch.
    """

    #: marserve extension: answer explain requests with batched Captum integrated gradients of
    #: ``self.model`` (per-row target and n_steps, see :mod:`marserve.explain`). The nearest
    #: class in the MRO that sets this or defines ``get_insights`` decides which path is used.
    explain_with_integrated_gradients = False

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, str] | None = None
        self.device: torch.device | None = None
        self.initialized = False
        self.context: Context | None = None
        self.model_pt_path: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.explain = False
        self.target = 0
        self._explain_settings: Any = None
        self._explain_classes: dict[tuple[int, ...], int] | None = None

    def initialize(self, context: Context) -> None:
        """Load the model named by the manifest onto the assigned device and put it in eval mode."""
        self.context = context
        properties = context.system_properties
        self.map_location, self.device = select_device(properties.get("gpu_id"))
        self.manifest = context.manifest
        model_dir = Path(properties["model_dir"])
        model_meta: dict[str, Any] = self.manifest.get("model", {}) if self.manifest else {}
        serialized = model_meta.get("serializedFile")
        if serialized:
            pt_path = _file_in(model_dir, serialized, "serializedFile")
            if not pt_path.is_file():
                raise RuntimeError(f"Missing the serialized model file {serialized!r}")
            self.model_pt_path = str(pt_path)
        model_file = model_meta.get("modelFile")
        if model_file:
            self.model = self._load_pickled_model(str(model_dir), model_file, self.model_pt_path)
        elif self.model_pt_path:
            self.model = self._load_torchscript_model(self.model_pt_path)
        else:
            raise RuntimeError("The manifest names neither a modelFile nor a serializedFile")
        self.model.eval()
        logger.debug("Model %s loaded on %s", model_meta.get("modelName"), self.device)
        self.mapping = load_label_mapping(model_dir / "index_to_name.json")
        self.initialized = True

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but TorchServe archives still carry it.
            warnings.filterwarnings("ignore", r".*torch\.jit.* is deprecated", DeprecationWarning)
            jit_load: Any = torch.jit.load
            return jit_load(model_pt_path, map_location=self.device)

    def _load_pickled_model(
        self, model_dir: str, model_file: str, model_pt_path: str | None
    ) -> torch.nn.Module:
        """Instantiate the one ``nn.Module`` defined in ``model_file`` and load its state dict."""
        path = _file_in(Path(model_dir), model_file, "modelFile")
        if not path.is_file():
            raise RuntimeError(f"Missing the model definition file {model_file!r}")
        module = import_module_file(path)
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, torch.nn.Module)
            and obj.__module__ == module.__name__
        ]
        if len(classes) != 1:
            names = sorted(c.__name__ for c in classes)
            raise ValueError(
                f"Expected exactly one torch.nn.Module subclass in {model_file}, found {names}"
            )
        model = classes[0]()
        if model_pt_path:
            state_dict = torch.load(model_pt_path, map_location=self.device, weights_only=True)
            if not isinstance(state_dict, Mapping):
                raise ValueError(
                    f"{Path(model_pt_path).name} is not a state dict; eager models need one"
                )
            model.load_state_dict(state_dict)
        return model.to(self.device)

    def preprocess(self, data: Any) -> torch.Tensor:
        """Rows as one tensor on the model's device (dict rows give their ``data``/``body``)."""
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            data = [row_payload(r) for r in data]
        try:
            return torch.as_tensor(data, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PredictionException(f"input is not a tensor: {exc}", 400) from exc

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the model under ``torch.inference_mode``."""
        with torch.inference_mode():
            marshalled = data.to(self.device)
            return self.model(marshalled, *args, **kwargs)

    def postprocess(self, data: Any) -> list[Any]:
        """One JSON-ready item per row."""
        result: list[Any] = data.tolist()
        return result

    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> list[Any]:
        """Entry point: preprocess, then inference and postprocess (or explain_handle)."""
        start = time.perf_counter()
        self.context = context
        data_preprocess = self.preprocess(data)
        output: list[Any]
        if self._is_explain():
            output = self.explain_handle(data_preprocess, data)
        else:
            output = self.postprocess(self.inference(data_preprocess))
        self._record_handler_time((time.perf_counter() - start) * 1000.0)
        return output

    def _record_handler_time(self, elapsed_ms: float) -> None:
        metrics = self.context.metrics if self.context is not None else None
        add_time = getattr(metrics, "add_time", None)
        if callable(add_time):
            add_time("HandlerTime", round(elapsed_ms, 2), None, "ms")

    def _is_explain(self) -> bool:
        """TorchServe's convention: explanation requests carry the header ``explain: True``."""
        context = self.context
        if context is None or not context.request_processor:
            return False
        if context.get_request_header(0, "explain") == "True":
            self.explain = True
            return True
        return False

    def explain_handle(self, data_preprocess: Any, raw_data: Any) -> list[Any]:
        """Explanations for every row of the batch (TorchServe explains with row 0's target).

        Handlers that opt into :attr:`explain_with_integrated_gradients` get marserve's batched
        Captum explanation (see :mod:`marserve.explain`); the others keep TorchServe's
        ``get_insights(tensor, data, target)`` contract, called once per row (see
        :meth:`_insights_per_row`).
        """
        rows = raw_data if isinstance(raw_data, list) else [raw_data]
        if uses_integrated_gradients(type(self)):
            return self._integrated_gradients(data_preprocess, rows)
        return self._insights_per_row(data_preprocess, rows)

    def _integrated_gradients(self, data_preprocess: Any, rows: list[Any]) -> list[Any]:
        from marserve import explain

        classes = getattr(self, "_explain_classes", None)
        if classes is None:
            classes = self._explain_classes = {}
        settings = self.explain_settings
        values = explain.explain_batch(self.model, data_preprocess, rows, settings, classes)
        for index, value in enumerate(values):
            if isinstance(value, explain.RowFailure):
                if self.context is not None:
                    self.context.set_response_status(value.status, value.message, index)
                values[index] = {"error": value.message}
        return values

    @property
    def explain_settings(self) -> Any:
        """This model's :class:`marserve.explain.ExplainSettings` (model-config.yaml)."""
        settings = getattr(self, "_explain_settings", None)
        if settings is None:
            from marserve.explain import ExplainSettings

            config = self.context.model_yaml_config if self.context is not None else None
            try:
                settings = ExplainSettings.from_model_yaml(config)
            except ValueError as exc:
                raise PredictionException(f"model-config.yaml: {exc}", 500) from exc
            self._explain_settings = settings
        return settings

    def _insights_per_row(self, data_preprocess: Any, rows: list[Any]) -> list[Any]:
        """TorchServe's contract, row by row: ``get_insights(row tensor, row data, row target)``.

        A batch of one (or a batch that is not one tensor with a row per request) gets
        TorchServe's exact call with row 0's data and target; a results list of one item per
        call is unwrapped so each row gets its own explanation.
        """
        if type(self).get_insights is BaseHandler.get_insights:
            return self.get_insights(data_preprocess, None, 0)  # the 501 answer
        per_row = isinstance(data_preprocess, torch.Tensor) and data_preprocess.dim() > 0
        if len(rows) <= 1 or not per_row or data_preprocess.shape[0] != len(rows):
            row = rows[0] if rows else None
            return self.get_insights(data_preprocess, _insight_data(row), _insight_target(row))
        results: list[Any] = []
        for index, row in enumerate(rows):
            tensor = data_preprocess[index : index + 1]
            out = self.get_insights(tensor, _insight_data(row), _insight_target(row))
            results.append(out[0] if isinstance(out, list) and len(out) == 1 else out)
        return results

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> list[Any]:
        """Overridden by handlers that can explain their predictions."""
        raise PredictionException(
            f"{type(self).__name__} does not implement explanations (get_insights)", 501
        )

    def describe_handle(self) -> Any:
        """Custom model metadata for the management API's describe call; none by default."""
        return None
