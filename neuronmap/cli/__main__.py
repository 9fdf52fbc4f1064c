"""``python -m neuronmap.cli``: the ``neuronmap`` command."""

import sys

from neuronmap.cli._main import main

if __name__ == "__main__":  # not when a doctest collector imports the module
    sys.exit(main())
