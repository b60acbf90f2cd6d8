"""``python -m models``: see :mod:`models.cli` (the NIR commands: :mod:`models.nir`)."""
import sys

from .cli import main

sys.exit(main())
