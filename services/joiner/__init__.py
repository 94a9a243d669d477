"""Joiner: pairs the prediction log with delayed feedback into training samples.

`core` is the transport-free state machine (no Kafka, no gRPC); the service that feeds it
from the prediction-log and feedback topics wraps it.
"""
