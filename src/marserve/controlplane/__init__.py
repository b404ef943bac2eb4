"""marserve's local KServe control plane; the data plane never imports this package."""
