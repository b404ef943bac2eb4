"""A test handler whose behaviour each request chooses: sleep, crash, raise, misbehave."""

import os
import time

from ts.utils.util import PredictionException


def handle(data, context):
    if data is None:  # TorchServe initialises function handlers with a None call
        return None
    results = []
    for index, row in enumerate(data):
        command = row.get("body") or row.get("data") or {}
        if not isinstance(command, dict):
            command = {}
        if command.get("sleep"):
            time.sleep(float(command["sleep"]))
        if command.get("exit"):
            os._exit(3)
        if command.get("raise"):
            raise ValueError("/secret/path/in/a/message")
        if command.get("prediction_exception"):
            raise PredictionException("the probe refuses this input", 422)
        if command.get("wrong_length"):
            return results
        if command.get("status"):
            context.set_response_status(int(command["status"]), "chosen by the probe", index)
        results.append(
            {
                "batch_size": len(data),
                "pid": os.getpid(),
                "header": context.get_request_header(index, "x-probe"),
                "echo": command.get("echo"),
                "kind": type(row.get("data", row.get("body"))).__name__,
                "request_id": context.get_request_id(index),
            }
        )
    return results
