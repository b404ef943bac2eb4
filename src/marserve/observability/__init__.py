"""Observability: metrics, handler metrics, host metrics and the access log, told what happened."""
