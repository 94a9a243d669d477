"""What the inference service says beyond the Triton protocol, agreed with its clients."""

from __future__ import annotations

# The RepositoryIndex `reason` of the loaded version that answers requests naming no version
# (Triton leaves `reason` free text; the other loaded versions carry an empty one).
CURRENT_REASON = "serving"
