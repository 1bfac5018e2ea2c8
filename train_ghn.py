"""Train a graph hypernetwork: `python train_ghn.py --config configs/digits_logah_tiny.yaml`.

With no arguments it runs the embedded default (logah-tiny on scikit-learn's digits). Every config field can be
overridden on the command line; `python train_ghn.py --help` lists them. A configuration error prints one line and
exits with code 2; `--debug` shows its traceback.
"""

import sys

from ghn.train.cli import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
