"""The replica's container as KServe builds it from the runtime manifest and the predictor."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from marserve.controlplane.admission import default_isvc
from marserve.controlplane.pods import pod_name
from marserve.controlplane.runtime import (
    Resources,
    SpecError,
    build_replica,
    cpu_set,
    quantity,
    resources_of,
)
from marserve.settings.properties import parse_properties


def isvc(**model: Any) -> dict[str, Any]:
    return default_isvc(
        {
            "metadata": {"name": "torchserve", "namespace": "default"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, **model}}},
        }
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "model-store").mkdir()
    (tmp_path / "config" / "config.properties").write_text(
        "inference_address=http://0.0.0.0:8085\nmodel_store=/mnt/models/model-store\n"
        "job_queue_size=7\n"
    )
    return tmp_path


def test_runtime_args_then_predictor_args_and_kserve_env(model_dir: Path) -> None:
    obj = isvc(protocolVersion="v2", args=["--enable-model-api"],
               env=[{"name": "TS_JOB_QUEUE_SIZE", "value": "9"}])  # fmt: skip
    spec = build_replica(obj, "torchserve-predictor-00001", model_dir, "gs://b/m")
    assert spec.argv[1:5] == ("-m", "marserve", "serve", "--foreground")
    assert "--model-store" in spec.argv
    assert spec.argv[spec.argv.index("--model-store") + 1] == str(model_dir / "model-store")
    assert spec.argv[-2:] == ("--disable-token-auth", "--enable-model-api")
    assert spec.container_args[0] == "torchserve"
    assert spec.container_args[-1] == "--enable-model-api"
    assert spec.env["PROTOCOL_VERSION"] == "v2"
    assert spec.env["TS_SERVICE_ENVELOPE"] == "kservev2"
    assert spec.env["INFERENCE_SERVICE_NAME"] == "torchserve"
    assert spec.env["STORAGE_URI"] == "gs://b/m"
    assert spec.env["K_REVISION"] == "torchserve-predictor-00001"
    assert spec.env["TS_JOB_QUEUE_SIZE"] == "9"


def test_config_keeps_the_mounted_file_and_moves_listeners_to_loopback(model_dir: Path) -> None:
    spec = build_replica(isvc(), "r-00001", model_dir, "file:///m")
    props = parse_properties(spec.config_text)
    assert props["job_queue_size"] == "7"
    assert props["inference_address"] == "http://127.0.0.1:0"
    assert props["management_address"] == "http://127.0.0.1:0"
    assert props["grpc_inference_port"] == "0"
    assert props["service_envelope"] == "kserve"
    assert props["model_store"] == str(model_dir / "model-store")  # /mnt/models is the folder


def test_limits_cpu_sets_torch_threads(model_dir: Path) -> None:
    obj = isvc(resources={"limits": {"cpu": "1500m", "memory": "2Gi"}})
    spec = build_replica(obj, "r-00001", model_dir, "file:///m")
    assert spec.env["OMP_NUM_THREADS"] == "2"
    assert spec.resources == Resources(cpu=1.5, memory=2 * 2**30, gpus=0)
    assert cpu_set(1.5, [0, 1, 2, 3]) == [0, 1]
    assert cpu_set(1.5, [0, 1, 2, 3], offset=1) == [2, 3]  # the next pinned replica
    assert cpu_set(0.1, [4, 5]) == [4]
    assert cpu_set(0.1, [4, 5], offset=3) == [5]
    assert cpu_set(8, [0, 1]) == [0, 1]
    assert cpu_set(None, [0, 1]) == [0, 1]


@pytest.mark.parametrize(
    ("value", "number"), [("500m", 0.5), ("2", 2.0), ("4Gi", 4 * 2**30), ("1G", 1e9), ("1k", 1e3)]
)
def test_quantities(value: str, number: float) -> None:
    assert quantity(value, "x") == number


def test_gpus_from_limits() -> None:
    assert resources_of({"resources": {"limits": {"nvidia.com/gpu": "2"}}}).gpus == 2


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
        ({"args": ["--no-such-flag"]}, "--no-such-flag"),
        ({"protocolVersion": "v9"}, "protocolVersion"),
    ],
)
def test_bad_predictors_are_spec_errors(
    model_dir: Path, model: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        build_replica(isvc(**model), "r-00001", model_dir, "file:///m")


def test_pod_names_as_knative() -> None:
    name = pod_name("torchserve-predictor-00001")
    assert re.fullmatch(r"torchserve-predictor-00001-deployment-[b-z2-9]{10}-[b-z2-9]{5}", name)
    assert pod_name("r-00001", seed="x") == pod_name("r-00001", seed="x")


def test_gpu_count_from_the_environment() -> None:
    from marserve.controlplane.operator import count_gpus

    assert count_gpus({"MARSERVE_GPUS": "2"}) == 2
    assert count_gpus({"MARSERVE_GPUS": " 0 "}) == 0


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"runtime": "kserve-tritonserver"}, "with the name: kserve-tritonserver"),
        ({"modelFormat": {"name": "sklearn"}}, "model type: sklearn"),
    ],
)
def test_runtimes_this_controller_does_not_serve(model: dict[str, Any], message: str) -> None:
    from marserve.controlplane.runtime import check_runtime

    with pytest.raises(SpecError, match=message):
        check_runtime(isvc(**model))
    check_runtime(isvc(runtime="kserve-marserve"))
    check_runtime(isvc(runtime="kserve-torchserve"))
