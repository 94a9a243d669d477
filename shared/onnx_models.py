"""Small ONNX graphs built directly with `onnx.helper`: linear and logistic models.

Used where a real, servable model is needed without a trainer: tests, benchmarks and the
demo before the first trained version exists.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.serving import INPUT, OUTPUT

__all__ = ["INPUT", "OUTPUT", "linear_model"]


def linear_model(
    weights: np.ndarray, bias: float = 0.0, *, sigmoid: bool = True, opset: int = 17
) -> bytes:
    """`score = sigmoid(features @ weights + bias)` (or without the sigmoid), batch axis free.

    Args:
        weights: Shape (features,).
        bias: Added to every row.
        sigmoid: Logistic output when True, linear regression when False.
        opset: ONNX opset of the graph.

    """
    w = np.asarray(weights, np.float32).reshape(-1, 1)
    nodes = [
        helper.make_node("MatMul", [INPUT, "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logit" if sigmoid else OUTPUT]),
    ]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logit"], [OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([bias], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
