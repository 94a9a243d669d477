"""Byte-level language models that learn online (issue #18): config, model, learner, export.

Transport-free like `services.trainer.learner`: the caller hands it the bytes of each event's
text; nothing here reads Kafka. No tokenizer and no downloaded weights: the vocabulary is the
256 byte values.
"""
