"""GHN training with Lightning: the module, the data module pairing architectures with task data, and the CLI."""

from ghn.train.config import OptimConfig
from ghn.train.datamodule import GHNDataModule
from ghn.train.module import GHNModule

__all__ = ["GHNDataModule", "GHNModule", "OptimConfig"]
