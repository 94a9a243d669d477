"""Trainer: per-event gradient updates from the training topic, checkpoints, ONNX versions."""
