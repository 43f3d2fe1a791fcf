"""``python -m poochlab.serving``: the same as ``tensorflow_model_server``."""

import sys

from poochlab.serving.main import main

sys.exit(main())
