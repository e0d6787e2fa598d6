"""``python -m magms`` (also under ``torchrun -m magms``)."""

import sys

from magms.cli import main

sys.exit(main())
