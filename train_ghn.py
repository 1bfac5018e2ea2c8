"""Train a graph hypernetwork: `python train_ghn.py --config configs/digits_logah_tiny.yaml`.

With no arguments it runs the embedded default (logah-tiny on scikit-learn's digits). Every config field can be
overridden on the command line; `python train_ghn.py --help` lists them.
"""

import sys

from ghn.train.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
