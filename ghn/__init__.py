"""ghn: predict the parameters of any PyTorch model with graph hypernetworks.

    >>> import ghn
    >>> model = ghn.zoo.create("zoo:resnet18-cifar")
    >>> ghn.predict(model, ghn.GHN.from_preset("logah-tiny"))
"""

from ghn import hub, zoo  # importing hub lets predict(model) find a shipped GHN when given none
from ghn._logging import set_verbosity
from ghn._version import __version__
from ghn.errors import GHNError
from ghn.export import export, export_predicted
from ghn.graph import ComputationGraph, build_graph, register_op
from ghn.hub import from_pretrained
from ghn.meta import empty_weights
from ghn.nn import GHN, GHNConfig
from ghn.predict import PredictionReport, predict, predict_params

__all__ = [
    "__version__",
    "GHN",
    "ComputationGraph",
    "GHNConfig",
    "GHNError",
    "PredictionReport",
    "build_graph",
    "empty_weights",
    "export",
    "export_predicted",
    "from_pretrained",
    "hub",
    "predict",
    "predict_params",
    "register_op",
    "set_verbosity",
    "zoo",
]
