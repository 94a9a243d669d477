"""What the inference service says beyond the Triton protocol, agreed with its clients."""

from __future__ import annotations

# The served graph's numeric input and its output (P(1), class probabilities or the value):
# the names every exported version uses, read by clients, the prediction log and the joiner.
INPUT = "features"
OUTPUT = "score"
# A byte language model's graph (`services/trainer/text/export.py`): uint8 byte ids in,
# next-byte natural-log probabilities out, and the context in the model's metadata.
TEXT_INPUT = "text"
LOGPROBS_OUTPUT = "logprobs"
TEXT_CONTEXT_KEY = "streamlearn.text.context"
# A multi-task language model's second output: class log-probabilities (batch, seq, classes)
# of the text up to each position.
CLASS_LOGPROBS_OUTPUT = "class_logprobs"

# The RepositoryIndex `reason` of the loaded version that answers requests naming no version
# (Triton leaves `reason` free text; the other loaded versions carry an empty one).
CURRENT_REASON = "serving"
