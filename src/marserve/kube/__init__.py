"""Kubernetes manifests: KServe CRD schema validation for what marserve ships or exports."""
