"""``python -m minivit ...`` is the same as the ``minivit`` command."""
import sys

from .cli import main

sys.exit(main())
