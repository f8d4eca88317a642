"""Inference: the Predictor every path uses (evaluation, predict, the app, latency), ONNX export and runtime."""
