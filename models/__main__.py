"""``python -m models``: see :mod:`models.cli`; ``nir-import|nir-export``: :mod:`models.nir`."""
import sys

if len(sys.argv) > 1 and sys.argv[1] in ("nir-import", "nir-export"):
    from .nir import main
else:
    from .cli import main

sys.exit(main())
