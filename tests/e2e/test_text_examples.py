"""The BERT and text-classifier examples served for real: v1, v2 REST, v2 gRPC, explain, bad input.

One ``marserve serve`` holds both models (built by the examples' ``build_store.py``; training and
packing are cached under ``~/.cache/marserve``), with dynamic batching so that concurrent
requests share worker batches. Answers are checked against the same models run in this process,
and explanations against Captum called directly.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image

from marserve.handlers.loader import import_module_file
from marserve.handlers.text import ngrams, words
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

ROOT = Path(__file__).resolve().parents[2]
BERT = ROOT / "examples" / "bert"
TC = ROOT / "examples" / "text_classifier"
SEED_TEXT = "Bloomberg has reported on the economy"
SENTENCES = [
    "A gorgeous, witty, seductive movie that never lets up.",
    "The plot is a dull, predictable mess and the acting is even worse than the script.",
    "An honest, moving film.",
    "Tedious.",
]
NEWS = [
    "The striker scored twice as United won the cup final at Wembley.",
    "Shares fell after the bank reported lower quarterly profits and rising costs.",
    "The new phone has a faster chip, more memory and better software for games.",
    "The prime minister faced questions from MPs about the election campaign.",
]
RTOL = 1e-6


TS_ARCHIVER = f"{sys.executable} -m model_archiver.model_packaging"  # torch-model-archiver 0.12


def build(example: Path, out: Path, *options: str) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(example / "build_store.py"), "--out", str(out), *options]
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=600)
    return out / "model-store"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both archives (cached builds), extracted too, for the in-process references."""
    tmp = tmp_path_factory.mktemp("text-stores")
    store = tmp / "model-store"
    store.mkdir()
    for example, name in ((BERT, "bert"), (TC, "my_tc")):
        built = build(example, tmp / name) / f"{name}.mar"
        os.link(built, store / f"{name}.mar")
        with zipfile.ZipFile(built) as archive:
            archive.extractall(tmp / f"{name}-files")
    by_torchserve = build(TC, tmp / "my_tc_ts", "--archiver", TS_ARCHIVER) / "my_tc.mar"
    os.link(by_torchserve, store / "my_tc_ts.mar")
    return {
        "store": store,
        "bert": tmp / "bert-files",
        "my_tc": tmp / "my_tc-files",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stores: dict[str, Path]) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("text-server")
    batching = {"batchSize": 8, "maxBatchDelay": 50}
    models = snapshot(
        {"name": "bert", "marName": "bert.mar", **batching},
        {"name": "my_tc", "marName": "my_tc.mar", **batching},
        {"name": "my_tc_ts", "marName": "my_tc_ts.mar", **batching},
    )
    config = write_config(tmp / "config.properties", model_snapshot=models)
    running = start_server(tmp, stores["store"], config, env={"OMP_NUM_THREADS": "1"})
    yield running
    assert running.stop() == 0, running.log()


# in-process references -----------------------------------------------------------------------
class BertReference:
    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        self.labels = json.loads((folder / "index_to_name.json").read_text())

    def predict(self, texts: list[str]) -> list[str]:
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            classes = self.model(**encoded).logits.argmax(1).tolist()
        return [self.labels[str(c)] for c in classes]

    def explain(self, text: str, target: int | None = None, n_steps: int = 50) -> dict[str, Any]:
        """TorchServe's recipe, called on one sentence with Captum directly."""
        from captum.attr import LayerIntegratedGradients

        encoded = self.tokenizer(text, return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if target is None:
            with torch.no_grad():
                target = int(self.model(ids, attention_mask=mask).logits.argmax(1))
        baseline = torch.full_like(ids, self.tokenizer.pad_token_id)
        baseline[0, 0], baseline[0, -1] = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id

        def forward(inputs: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
            return self.model(inputs, attention_mask=attention).logits

        explainer = LayerIntegratedGradients(forward, self.model.bert.embeddings)
        attributions, delta = explainer.attribute(
            ids,
            baselines=baseline,
            target=target,
            additional_forward_args=(mask,),
            n_steps=n_steps,
            return_convergence_delta=True,
        )
        summed = attributions.sum(-1)[0].double()
        return {
            "words": self.tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            "importances": (summed / summed.norm()).numpy(),
            "delta": float(delta[0]),
        }


class TextReference:
    def __init__(self, folder: Path) -> None:
        from captum.attr import LayerIntegratedGradients

        module = import_module_file(folder / "model.py", "text_e2e_model")
        self.model = module.TextClassificationModel()
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        vocab = json.loads((folder / "source_vocab.json").read_text())
        self.index = {gram: i for i, gram in enumerate(vocab)}
        self.labels = json.loads((folder / "index_to_name.json").read_text())
        self.lookup = torch.nn.Identity()
        self.lig = LayerIntegratedGradients(self.pooled, self.lookup)

    def grams(self, text: str) -> list[str]:
        return list(ngrams(words(text), 2))

    def ids(self, text: str) -> torch.Tensor:
        return torch.tensor([[self.index.get(g, 0) for g in self.grams(text)]])

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.lookup(torch.nn.functional.embedding(ids, self.model.embedding.weight))
        return self.model.fc(vectors.mean(1))

    def probabilities(self, text: str) -> dict[str, float]:
        ids = self.ids(text)[0]
        with torch.no_grad():
            logits = self.model(ids, torch.tensor([0]))
        return dict(zip(self.labels.values(), torch.softmax(logits, 1)[0].tolist(), strict=True))

    def explain(self, text: str, target: int | None = None) -> dict[str, Any]:
        ids = self.ids(text)
        if target is None:
            with torch.no_grad():
                target = int(self.pooled(ids).argmax(1))
        attributions, delta = self.lig.attribute(
            ids, baselines=torch.zeros_like(ids), target=target, return_convergence_delta=True
        )
        summed = attributions.sum(-1)[0].double()
        return {
            "words": self.grams(text),
            "importances": summed / summed.norm(),
            "delta": float(delta[0]),
            "raw": summed,
        }


@pytest.fixture(scope="module")
def bert_ref(stores: dict[str, Path]) -> BertReference:
    return BertReference(stores["bert"])


@pytest.fixture(scope="module")
def tc_ref(stores: dict[str, Path]) -> TextReference:
    return TextReference(stores["my_tc"])


def assert_explained(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["words"] == expected["words"]
    scores = np.asarray(expected["importances"], dtype=np.float64)
    scale = float(np.abs(scores).max())
    np.testing.assert_allclose(actual["importances"], scores, rtol=RTOL, atol=RTOL * scale)
    if "delta" in expected:
        assert actual["delta"] == pytest.approx(expected["delta"], abs=1e-5)


def top(probabilities: dict[str, float]) -> str:
    return max(probabilities, key=lambda k: probabilities[k])


# the seeds' requests -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "request_file"),
    [("bert", BERT / "requests/v1/bert.json"), ("my_tc", TC / "requests/v1/text_classifier.json")],
)
def test_seed_v1_requests_with_curl(server: RunningServer, model: str, request_file: Path) -> None:
    url = f"{server.url}/v1/models/{model}:predict"
    command = ["curl", "-s", "-H", "Host: torchserve.kserve-test.example.com", url]
    output = subprocess.run([*command, "-d", f"@{request_file}"], check=True, capture_output=True)
    predictions = json.loads(output.stdout)["predictions"]
    if model == "bert":
        assert predictions == ["fresh"]
    else:
        assert top(predictions[0]) == "business"


def test_bert_seed_v2_int64_byte_codes(server: RunningServer, bert_ref: BertReference) -> None:
    body = (BERT / "requests/v2/bert_v2_int64.json").read_bytes()
    response = server.client.post("/v2/models/bert/infer", content=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == ("predict", [2], "BYTES")
    assert list(output["data"]) == bert_ref.predict([SEED_TEXT] * 2)  # labels as themselves


def test_bert_v1_batch_matches_in_process(server: RunningServer, bert_ref: BertReference) -> None:
    instances = [{"data": text} for text in SENTENCES]
    response = server.client.post("/v1/models/bert:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == bert_ref.predict(SENTENCES)
    assert response.json()["predictions"][:2] == ["fresh", "rotten"]


def test_concurrent_requests_share_batches(server: RunningServer, bert_ref: BertReference) -> None:
    texts = SENTENCES * 4

    def one(text: str) -> Any:
        reply = server.client.post("/v1/models/bert:predict", json={"instances": [{"data": text}]})
        return reply.json()["predictions"][0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, texts))
    assert answers == [bert_ref.predict([t])[0] for t in texts]


def test_text_classifier_batch_matches_in_process(
    server: RunningServer, tc_ref: TextReference
) -> None:
    instances = [{"data": text} for text in NEWS]
    response = server.client.post("/v1/models/my_tc:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for text, answer in zip(NEWS, predictions, strict=True):
        expected = tc_ref.probabilities(text)
        assert answer.keys() == expected.keys()
        np.testing.assert_allclose(list(answer.values()), list(expected.values()), rtol=1e-5)
    assert [top(p) for p in predictions] == ["sports", "business", "tech", "politics"]


def test_torchserves_archiver_makes_the_same_model(server: RunningServer) -> None:
    """The example archived by torch-model-archiver 0.12 answers as marserve's archive does."""
    request = {"instances": [{"data": text} for text in NEWS]}
    ours = server.client.post("/v1/models/my_tc:predict", json=request)
    theirs = server.client.post("/v1/models/my_tc_ts:predict", json=request)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json() == ours.json()


def test_v2_rest_bytes_with_tritonclient(server: RunningServer, tc_ref: TextReference) -> None:
    client = triton_http.InferenceServerClient(server.url.split("://", 1)[1])
    for binary in (False, True):
        tensor = triton_http.InferInput("input-0", [len(NEWS)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in NEWS], dtype=object), binary)
        result = client.infer("my_tc", [tensor])
        values = [json.loads(v) for v in result.as_numpy("predict")]
        assert [top(v) for v in values] == [top(tc_ref.probabilities(t)) for t in NEWS]
    client.close()


def test_v2_grpc_bytes_and_byte_codes(server: RunningServer, bert_ref: BertReference) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_target())
    text = triton_grpc.InferInput("input-0", [2], "BYTES")
    text.set_data_from_numpy(np.array([SENTENCES[0].encode(), SENTENCES[1].encode()], dtype=object))
    codes = triton_grpc.InferInput("codes", [len(SEED_TEXT)], "INT64")
    codes.set_data_from_numpy(np.frombuffer(SEED_TEXT.encode(), dtype=np.uint8).astype(np.int64))
    result = client.infer("bert", [text, codes])
    got = [v.decode() for v in result.as_numpy("predict")]
    assert got == bert_ref.predict([SENTENCES[0], SENTENCES[1], SEED_TEXT])
    tc = client.infer("my_tc", [codes])
    assert top(json.loads(tc.as_numpy("predict")[0])) == "business"
    client.close()


def test_torchserve_grpc_predictions(server: RunningServer) -> None:
    """TorchServe's own gRPC API (inference.proto): text in, and a bad row is INVALID_ARGUMENT."""
    import grpc

    from marserve.grpc.protos import inference_pb2, inference_pb2_grpc

    with grpc.insecure_channel(server.grpc_target()) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        request = inference_pb2.PredictionsRequest(
            model_name="my_tc", input={"data": NEWS[2].encode()}
        )
        assert top(json.loads(stub.Predictions(request).prediction)) == "tech"
        bad = inference_pb2.PredictionsRequest(model_name="bert", input={"data": b"\xff\xfe"})
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predictions(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not valid UTF-8" in str(caught.value.details())


def test_torchserve_predictions_endpoint(server: RunningServer) -> None:
    response = server.client.post("/predictions/my_tc", content=NEWS[0].encode())
    assert response.status_code == 200, response.text
    assert top(response.json()) == "sports"
    response = server.client.post("/predictions/bert", content=SENTENCES[1].encode())
    assert response.text == "rotten"  # TorchServe answers a string result as plain text


# explanations --------------------------------------------------------------------------------
def test_bert_seed_explain_equals_captum(server: RunningServer, bert_ref: BertReference) -> None:
    body = (BERT / "requests/v1/bert.json").read_bytes()
    response = server.client.post("/v1/models/bert:explain", content=body)
    assert response.status_code == 200, response.text
    [explanation] = response.json()["explanations"]
    assert explanation.keys() == {"words", "importances", "delta"}
    assert explanation["words"][0] == "[CLS]" and explanation["words"][-1] == "[SEP]"
    assert_explained(explanation, bert_ref.explain(SEED_TEXT, target=0))


def test_bert_explains_a_batch_of_different_lengths(
    server: RunningServer, bert_ref: BertReference
) -> None:
    """Rows padded together in one Captum call still equal Captum on each sentence alone."""
    chosen = [SENTENCES[0], SENTENCES[3]]
    request = {"instances": [{"data": t, "n_steps": 20} for t in chosen]}
    response = server.client.post("/v1/models/bert:explain", json=request)
    assert response.status_code == 200, response.text
    for explanation, text in zip(response.json()["explanations"], chosen, strict=True):
        assert_explained(explanation, bert_ref.explain(text, n_steps=20))


def test_bert_v2_and_torchserve_explain(server: RunningServer, bert_ref: BertReference) -> None:
    body = (BERT / "requests/v2/bert_v2_bytes.json").read_bytes()
    response = server.client.post("/v2/models/bert/explain", content=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("explain", "BYTES", [1])
    expected = bert_ref.explain(SEED_TEXT)
    assert_explained(json.loads(output["data"][0]), expected)
    ts = server.client.post("/explanations/bert", content=SEED_TEXT.encode())
    assert ts.status_code == 200, ts.text
    assert_explained(ts.json(), expected)


def test_text_classifier_explain_lines_up_with_words(
    server: RunningServer, tc_ref: TextReference
) -> None:
    request = {"instances": [{"data": NEWS[0]}, {"data": NEWS[2], "target": 0}]}
    response = server.client.post("/v1/models/my_tc:explain", json=request)
    assert response.status_code == 200, response.text
    first, second = response.json()["explanations"]
    assert_explained(first, tc_ref.explain(NEWS[0]))
    assert_explained(second, tc_ref.explain(NEWS[2], target=0))
    assert len(first["words"]) == len(first["importances"])
    assert first["words"][:3] == ["the", "striker", "scored"] and "the striker" in first["words"]


def test_text_classifier_attributions_have_the_closed_form(tc_ref: TextReference) -> None:
    """After the mean the model is linear, so IG is (E[w] - E[unk]) . W[target] / n exactly."""
    ids = tc_ref.ids(NEWS[1])
    with torch.no_grad():
        bag = tc_ref.model(ids[0], torch.tensor([0]))
        assert torch.allclose(tc_ref.pooled(ids), bag, atol=1e-6)
        target = int(bag.argmax(1))
        weight = tc_ref.model.embedding.weight
        closed = ((weight[ids[0]] - weight[0]) @ tc_ref.model.fc.weight[target]) / ids.shape[1]
    got = tc_ref.explain(NEWS[1])["raw"]
    np.testing.assert_allclose(got.numpy(), closed.double().numpy(), atol=1e-6)


def test_text_classifier_v2_and_torchserve_explain(
    server: RunningServer, tc_ref: TextReference
) -> None:
    body = (TC / "requests/v2/text_classifier_v2_int64.json").read_bytes()
    response = server.client.post("/v2/models/my_tc/explain", content=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["shape"] == [2]
    expected = tc_ref.explain(SEED_TEXT)
    for value in output["data"]:
        assert_explained(json.loads(value), expected)
    ts = server.client.post("/explanations/my_tc", content=SEED_TEXT.encode())
    assert_explained(ts.json(), expected)


def shaded_words_picture(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    reddish = (pixels[:, :, 0] > 150) & (pixels[:, :, 2] < 120)
    blueish = (pixels[:, :, 2] > 150) & (pixels[:, :, 0] < 120)
    assert reddish.any() or blueish.any()  # the strongest word is drawn in full colour
    return pixels


@pytest.mark.parametrize("model", ["bert", "my_tc"])
def test_pictures_on_every_explain_endpoint(server: RunningServer, model: str) -> None:
    one = {"instances": [{"data": SEED_TEXT}]}
    v1 = server.client.post(f"/v1/models/{model}:explain?format=png", json=one)
    assert v1.status_code == 200 and v1.headers["content-type"] == "image/png", v1.text
    single = shaded_words_picture(v1.content)
    two = {"instances": [{"data": SEED_TEXT}, {"data": SENTENCES[0]}]}
    batch = server.client.post(f"/v1/models/{model}:explain?format=png", json=two)
    assert shaded_words_picture(batch.content).shape[0] > single.shape[0]
    body = (BERT / "requests/v2/bert_v2_int64.json").read_bytes()
    v2 = server.client.post(f"/v2/models/{model}/explain?format=png", content=body)
    assert v2.status_code == 200, v2.text
    shaded_words_picture(v2.content)
    headers = {"Accept": "image/png"}
    ts = server.client.post(f"/explanations/{model}", content=SEED_TEXT.encode(), headers=headers)
    assert ts.status_code == 200, ts.text
    shaded_words_picture(ts.content)


def test_marserve_explain_command_draws_texts(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "words.png"
    command = [sys.executable, "-m", "marserve", "explain", "--url", server.url]
    texts = ["--text", SEED_TEXT, "--text", NEWS[0]]
    result = subprocess.run(
        [*command, "--model", "my_tc", *texts, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 texts" in result.stdout
    shaded_words_picture(out.read_bytes())
    nothing = subprocess.run(
        [*command, "--model", "my_tc", "--out", str(out)], capture_output=True, text=True
    )
    assert nothing.returncode == 2 and "--text" in nothing.stderr


# bad input -----------------------------------------------------------------------------------
BAD_INSTANCES = [
    ({"data": ""}, "text is empty"),
    ({"data": "   "}, "text is empty"),
    ({"data": "a" * 1_000_000}, "65536 bytes"),
    ({"data": 42}, "expected text"),
    ({"data": {"nested": True}}, "expected text"),
    ({"data": [[1, 2], [3, 4]]}, "1-D array of byte codes"),
    ({"data": [72, 300]}, "between 0 and 255"),
    ({"data": [0xFF, 0xFE, 0x41]}, "not valid UTF-8"),
    (17, "expected text"),
]


@pytest.mark.parametrize("model", ["bert", "my_tc"])
@pytest.mark.parametrize("verb", ["predict", "explain"])
def test_bad_text_is_a_400_and_the_server_goes_on(
    server: RunningServer, model: str, verb: str
) -> None:
    for instance, message in BAD_INSTANCES:
        response = server.client.post(f"/v1/models/{model}:{verb}", json={"instances": [instance]})
        assert response.status_code == 400, instance if len(str(instance)) < 80 else message
        assert message in response.json()["error"]
    good = server.client.post(f"/v1/models/{model}:predict", json={"instances": [SEED_TEXT]})
    assert good.status_code == 200, good.text


def test_bad_rows_in_a_shared_batch_fail_alone(server: RunningServer) -> None:
    """A bad request batched with good ones gets its 400; the others are answered."""
    bodies = [{"instances": [{"data": SENTENCES[i % 4]}]} for i in range(6)]
    bodies[2] = {"instances": [{"data": ""}]}

    def send(body: dict[str, Any]) -> int:
        return server.client.post("/v1/models/bert:predict", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(send, bodies))
    assert codes == [200, 200, 400, 200, 200, 200]


def test_invalid_utf8_over_v2_binary_bytes(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.url.split("://", 1)[1])
    tensor = triton_http.InferInput("input-0", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"caf\xe9 \xff"], dtype=object), binary_data=True)
    for model in ("bert", "my_tc"):
        with pytest.raises(Exception, match="not valid UTF-8"):
            client.infer(model, [tensor])
    client.close()


def test_bad_explain_options_are_400(server: RunningServer) -> None:
    for model, target in (("bert", 2), ("my_tc", 5)):
        request = {"instances": [{"data": SEED_TEXT, "target": target}]}
        response = server.client.post(f"/v1/models/{model}:explain", json=request)
        assert response.status_code == 400, response.text
        assert "target" in response.json()["error"]
    request = {"instances": [{"data": SEED_TEXT, "n_steps": 0}]}
    assert server.client.post("/v1/models/bert:explain", json=request).status_code == 400
