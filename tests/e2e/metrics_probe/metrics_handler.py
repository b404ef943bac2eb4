"""A TorchServe-style handler that records custom metrics; each request chooses its behaviour."""

import logging
import os
import time

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.utils.util import PredictionException


class MetricsProbe:
    def initialize(self, context):
        self.context = context
        context.metrics.add_counter("ProbeInitialized", 1)  # outside a request: Level=Error
        logging.getLogger("mprobe").warning("probe handler ready")

    def preprocess(self, data):
        rows = []
        for row in data:
            command = row.get("body") or row.get("data") or row  # v1 instances are the row
            rows.append(command if isinstance(command, dict) else {})
        return rows

    def inference(self, rows):
        for row in rows:
            if row.get("sleep"):
                time.sleep(float(row["sleep"]))
            if row.get("exit"):
                os._exit(3)
            if row.get("reject"):
                raise PredictionException("the probe rejects this input", int(row["reject"]))
        return rows

    def postprocess(self, rows):
        return [{"echo": row.get("echo"), "pid": os.getpid()} for row in rows]

    def handle(self, data, context):
        start = time.perf_counter()
        metrics = context.metrics
        rows = self.preprocess(data)
        for index, row in enumerate(rows):
            metrics.add_counter(
                "ProbeRows", 1, index, [Dimension("Color", row.get("color", "none"))]
            )
        metrics.add_size("ProbeBatchBytes", float(len(str(data))), None, "B")
        metrics.add_percent("ProbeFullness", 100.0 * len(rows) / 4)
        sizes = metrics.get_metric("ProbeBatchSize", MetricTypes.HISTOGRAM)
        sizes.add_or_update(len(rows), [context.model_name])
        output = self.postprocess(self.inference(rows))
        # what TorchServe's BaseHandler records (the metric metrics.yaml declares)
        metrics.add_time("HandlerTime", round((time.perf_counter() - start) * 1000, 2), None, "ms")
        return output
