"""``marserve convert``: the seeds' inputs give the seeds' sample requests; bad input is refused."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from PIL import Image
from tritonclient.grpc import service_pb2

from marserve import convert as conv
from marserve.cli.main import cli

REQUESTS = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "requests"
SEED_ID = "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"
SEED_NAME = "312a4eb0-0ca7-4803-a101-a6d2c18486fe"
SENTENCE = "Bloomberg has reported on the economy"
# The seeds' v1 text requests (data/requests/v1/text_classifier.json and bert.json), verbatim.
TEXT_CLASSIFIER_JSON = '{\n  "instances": [\n    {\n      "data": "SENTENCE"\n    }\n  ]\n}\n'
BERT_JSON = TEXT_CLASSIFIER_JSON.replace('"SENTENCE"', '"SENTENCE",\n      "target": 0')
TEXT_CLASSIFIER_JSON, BERT_JSON = (
    t.replace("SENTENCE", SENTENCE) for t in (TEXT_CLASSIFIER_JSON, BERT_JSON)
)
# Seed 004's v2 INT64 request: two inputs, each the sentence's 37 byte codes.
SEED_CODES = [66, 108, 111, 111, 109, 98, 101, 114, 103, 32, 104, 97, 115, 32, 114]
SEED_CODES += [101, 112, 111, 114, 116, 101, 100, 32, 111, 110, 32, 116, 104, 101, 32]
SEED_CODES += [101, 99, 111, 110, 111, 109, 121]
SEED_INT64_NAMES = ("a5c32978-fe42-4af0-a1c6-7dded82d12aa", "a5c32978-fe42-4af0-a1c6-7dded82d12ab")
SEED_INT64 = {
    "inputs": [
        {"name": name, "shape": [37], "datatype": "INT64", "data": SEED_CODES}
        for name in SEED_INT64_NAMES
    ]
}


def sample(relative: str) -> str:
    return (REQUESTS / relative).read_text()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The PNGs inside the seeds' sample requests, as files, plus a few bad ones."""
    folder = tmp_path_factory.mktemp("images")
    v1 = json.loads(sample("v1/mnist.json"))["instances"][0]["data"]
    v2 = json.loads(sample("v2/mnist_v2_bytes.json"))["inputs"][0]["data"][0]
    files = {"v1": base64.b64decode(v1), "v2": base64.b64decode(v2)}
    rgb = io.BytesIO()
    Image.new("RGB", (28, 28), (10, 20, 30)).save(rgb, format="PNG")
    files["rgb"] = rgb.getvalue()
    files["truncated"] = files["v2"][:60]
    files["text"] = b"this is not an image\n"
    paths = {}
    for key, data in files.items():
        paths[key] = folder / f"{key}.png"
        paths[key].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("texts")
    contents = {
        "sentence": (SENTENCE + "\n").encode(),
        "other": "Stocks fell sharply — again".encode(),
        "empty": b"\n",
        "latin1": "caf\xe9".encode("latin-1"),
    }
    paths = {}
    for key, data in contents.items():
        paths[key] = folder / f"{key}.txt"
        paths[key].write_bytes(data)
    return paths


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["convert", *map(str, args)])
    return result.exit_code, result.output


def converted(*args: str | Path) -> str:
    code, output = run(*args)
    assert code == 0, output
    return output


# The seeds' samples, byte for byte -----------------------------------------------------------
def test_image_v1_is_the_seeds_mnist_json(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mnist.json"
    assert converted("image-v1", images["v1"], "--target", "0", "-o", out) == ""
    assert out.read_text() == sample("v1/mnist.json")


def test_image_v2_bytes_is_the_seeds_sample(images: dict[str, Path]) -> None:
    output = converted("image-v2-bytes", images["v2"], "--name", SEED_NAME, "--id", SEED_ID)
    assert output == sample("v2/mnist_v2_bytes.json")


def test_image_v2_bytes_grpc_is_the_seeds_sample(images: dict[str, Path]) -> None:
    args = ("--grpc", "--model", "mnist", "--name", SEED_NAME)
    assert converted("image-v2-bytes", images["v2"], *args) == sample("v2/mnist_v2_bytes_grpc.json")


def test_image_v2_tensor_is_the_seeds_sample(images: dict[str, Path]) -> None:
    output = converted("image-v2-tensor", images["v2"], "--id", SEED_ID)
    assert output == sample("v2/mnist_v2_tensor.json")


def test_image_v2_tensor_grpc_is_the_seeds_sample(images: dict[str, Path]) -> None:
    args = ("--grpc", "--model", "mnist", "--id", SEED_ID)
    output = converted("image-v2-tensor", images["v2"], *args)
    assert output == sample("v2/mnist_v2_tensor_grpc.json")


def test_text_v1_is_the_seeds_text_requests(texts: dict[str, Path]) -> None:
    assert converted("text-v1", texts["sentence"]) == TEXT_CLASSIFIER_JSON
    assert converted("text-v1", texts["sentence"], "--target", "0") == BERT_JSON


def test_text_v2_int64_is_seed_004(texts: dict[str, Path]) -> None:
    names = SEED_INT64_NAMES
    args = ("--datatype", "INT64", "--name", names[0], "--name", names[1])
    output = converted("text-v2", texts["sentence"], texts["sentence"], *args)
    assert json.loads(output) == SEED_INT64


# Forms the seeds describe without a sample ---------------------------------------------------
def test_static_batches_keep_file_order(images: dict[str, Path]) -> None:
    first, second = images["v1"], images["v2"]
    v1 = json.loads(converted("image-v1", first, second))
    assert [base64.b64decode(i["data"]) for i in v1["instances"]] == [
        first.read_bytes(),
        second.read_bytes(),
    ]
    v2 = json.loads(converted("image-v2-bytes", first, second))
    (tensor,) = v2["inputs"]
    assert tensor["shape"] == [-1] and len(tensor["data"]) == 2
    tensors = json.loads(converted("image-v2-tensor", first, second))["inputs"]
    assert [t["name"] for t in tensors] == ["input-0", "input-1"]
    assert all(t["shape"] == [1, 28, 28] for t in tensors)


def test_tensor_normalisation_uses_mnist_mean_and_std(images: dict[str, Path]) -> None:
    plain = json.loads(converted("image-v2-tensor", images["v2"], "--decimals", "8"))
    norm = json.loads(converted("image-v2-tensor", images["v2"], "--normalize", "--decimals", "8"))
    x = np.asarray(plain["inputs"][0]["data"])
    y = np.asarray(norm["inputs"][0]["data"])
    assert np.allclose(y, (x - 0.1307) / 0.3081, atol=1e-6)
    assert y.min() == pytest.approx(-0.1307 / 0.3081, abs=1e-7)
    pixels = np.asarray(Image.open(images["v2"]), dtype=np.float64) / 255
    assert np.allclose(x[0], pixels, atol=1e-7)


def test_grpc_forms_parse_as_model_infer_requests(
    images: dict[str, Path], texts: dict[str, Path]
) -> None:
    def parse(*args: str | Path) -> service_pb2.ModelInferRequest:
        text = converted(*args, "--grpc", "--model", "m")
        return json_format.Parse(text, service_pb2.ModelInferRequest())

    request = parse("image-v2-bytes", images["v2"])
    assert request.model_name == "m"
    assert request.inputs[0].contents.bytes_contents == [images["v2"].read_bytes()]
    request = parse("text-v2", texts["sentence"], texts["other"])
    assert list(request.inputs[0].shape) == [2]
    assert [b.decode() for b in request.inputs[0].contents.bytes_contents] == [
        SENTENCE,
        "Stocks fell sharply — again",
    ]
    request = parse("text-v2", texts["sentence"], "--datatype", "int64")
    assert list(request.inputs[0].contents.int64_contents) == SEED_CODES
    request = parse("image-v2-tensor", images["v2"])
    assert len(request.inputs[0].contents.fp32_contents) == 784


def test_text_v2_bytes_keeps_unicode(texts: dict[str, Path]) -> None:
    body = json.loads(converted("text-v2", texts["other"], "--name", "t"))
    assert body == {
        "inputs": [
            {
                "name": "t",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["Stocks fell sharply — again"],
            }
        ]
    }


# Bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("image-v1", "{missing}"), "cannot read {missing}: No such file or directory"),
        (("image-v1", "{text}"), "{text}: not an image (no known image format)"),
        (("image-v2-bytes", "{text}"), "{text}: not an image"),
        (("image-v2-tensor", "{truncated}"), "{truncated}: a broken PNG image"),
        (
            ("image-v2-tensor", "{rgb}"),
            "needs a grayscale (mode L) image like MNIST's, got mode RGB",
        ),
        (("image-v2-tensor", "{v2}", "--normalize", "--std", "0"), "--std must not be 0"),
        (("image-v2-tensor", "{v2}", "--decimals", "12"), "--decimals must be between 0 and 8"),
        (("image-v2-tensor", "{v2}", "--grpc"), "--grpc needs --model NAME"),
        (("image-v2-bytes", "{v2}", "--model", "m"), "--model only applies with --grpc"),
        (("image-v2-tensor", "{v2}", "--name", "a", "--name", "b"), "--name was given 2 times"),
        (("text-v1", "{empty}"), "{empty}: the text is empty"),
        (("text-v2", "{latin1}"), "{latin1}: not UTF-8 text (byte 3)"),
        (("text-v2", "{sentence}", "--datatype", "FP32"), "Invalid value for '--datatype'"),
        (("image-v1",), "Missing argument 'FILES...'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    images: dict[str, Path],
    texts: dict[str, Path],
    tmp_path: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    names = {k: str(v) for k, v in {**images, **texts}.items()}
    names["missing"] = str(tmp_path / "missing.png")
    code, output = run(*(arg.format(**names) for arg in args))
    assert code != 0
    assert message.format(**names) in output


def test_library_refuses_an_empty_batch() -> None:
    with pytest.raises(conv.ConvertError, match="no input files given"):
        conv.image_v1([])


def test_unwritable_output_is_an_error(images: dict[str, Path], tmp_path: Path) -> None:
    code, output = run("image-v1", images["v1"], "-o", tmp_path / "no" / "such" / "dir.json")
    assert code == 1 and "cannot write" in output
