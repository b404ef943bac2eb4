"""Local KServe control plane: autoscaling, traffic and admission components."""
