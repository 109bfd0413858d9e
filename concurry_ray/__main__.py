"""``python -m concurry_ray``: the ``concurry-ray`` command line (see ``cli.py``)."""

import sys

from .cli import main

sys.exit(main())
