"""``python -m neuronmap.cli``: the ``neuronmap`` command."""

import sys

from neuronmap.cli._main import main

sys.exit(main())
