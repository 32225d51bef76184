"""`python -m facedapt` (what torchrun launches)."""

import sys

from facedapt.cli import main

sys.exit(main())
