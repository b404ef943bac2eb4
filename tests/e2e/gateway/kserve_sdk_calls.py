"""KServe SDK clients against a gateway: ``python kserve_sdk_calls.py URL ADDRESS HOST GRPC_HOST
REQUESTS_DIR``; prints one line per call that answered right, exits non-zero on the first wrong."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest


def request(requests: Path) -> InferRequest:
    document = json.loads((requests / "v2" / "mnist_v2_tensor.json").read_text())
    image = np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(1, 28, 28)
    tensor = InferInput("input-0", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(image)
    return InferRequest(model_name="mnist", infer_inputs=[tensor])


async def calls(url: str, address: str, host: str, grpc_host: str, requests: Path) -> None:
    v1 = json.loads((requests / "v1" / "mnist.json").read_text())
    headers = {"Host": host}
    rest = InferenceRESTClient(RESTConfig(protocol="v1"))
    answer = await rest.infer(url, v1, model_name="mnist", headers=headers)
    assert answer == {"predictions": [2]}, answer
    await rest.close()
    print("v1-rest", flush=True)
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    result = await rest.infer(url, request(requests), model_name="mnist", headers=headers)
    assert result.outputs[0].data == [0], result
    await rest.close()
    print("v2-rest", flush=True)
    client = InferenceGRPCClient(address, channel_args=[("grpc.default_authority", grpc_host)])
    reply = await client.infer(request(requests))
    assert reply.outputs[0].as_numpy().tolist() == [0], reply
    await client.close()
    print("v2-grpc", flush=True)


if __name__ == "__main__":
    url, address, host, grpc_host, requests = sys.argv[1:6]
    asyncio.run(calls(url, address, host, grpc_host, Path(requests)))
