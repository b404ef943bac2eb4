"""``ts.torch_handler``: marserve's built-in handlers under TorchServe's module names."""
