"""``python -m radscale.trainer.evaluate --cell CELL``: see :mod:`radscale.trainer.evaluate.job`."""

import sys

from radscale.trainer.evaluate.job import main

sys.exit(main())
