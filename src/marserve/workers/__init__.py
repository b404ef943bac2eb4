"""Worker processes that hold a model: the pool in the front process, the child entry point."""
