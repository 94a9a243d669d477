"""The private descriptor pool of streamlearn's `inference` (KServe V2 / Triton) contract.

Hand-written, not generated. tritonclient registers Triton's `inference.*` messages in
protobuf's default pool; ours live here, so both can be imported by one process. Messages of
the two pools are wire-compatible (same names and field numbers) but are distinct classes.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
