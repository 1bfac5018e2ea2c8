"""ghn: predict the parameters of any PyTorch model with graph hypernetworks."""

from ghn._logging import set_verbosity
from ghn.errors import GHNError
from ghn.graph import ComputationGraph, build_graph, register_op

__version__ = "0.1.0"

__all__ = ["__version__", "ComputationGraph", "GHNError", "build_graph", "register_op", "set_verbosity"]
