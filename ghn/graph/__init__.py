"""Computation graphs of PyTorch models: `build_graph(model)`, the op vocabulary, and graph views."""

from ghn.graph.build import build_graph
from ghn.graph.graph import ComputationGraph, Coverage, Node, ParamInfo
from ghn.graph.inputs import derive_example_inputs
from ghn.graph.ops import OPS, ROLES, OpSpec, ParamList, ParamSlot, register_op, unregister_op
from ghn.graph.views import MAX_DISTANCE, shortest_paths

__all__ = [
    "OPS",
    "ROLES",
    "MAX_DISTANCE",
    "ComputationGraph",
    "Coverage",
    "Node",
    "OpSpec",
    "ParamInfo",
    "ParamList",
    "ParamSlot",
    "build_graph",
    "derive_example_inputs",
    "register_op",
    "shortest_paths",
    "unregister_op",
]
