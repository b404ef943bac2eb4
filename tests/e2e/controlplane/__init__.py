"""End-to-end tests of the local KServe controller with real clients."""
