"""marserve's stand-in for TorchServe's ``ts`` package: re-exports of ``marserve.handlers``."""
