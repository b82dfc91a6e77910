"""``python -m stream`` is the ``disengage`` command."""

import sys

from stream.cli import main

sys.exit(main())
