"""marserve: a maintained, fast and safe drop-in for TorchServe with KServe v1/v2 built in."""

__version__ = "0.1.0"
