"""``ts.metrics``: TorchServe's handler metrics API, re-exported from marserve."""
