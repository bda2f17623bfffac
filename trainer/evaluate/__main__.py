"""``python -m radscale.trainer.evaluate --cell CELL``: see :mod:`radscale.trainer.evaluate.stage`."""

import sys

from radscale.trainer.evaluate.stage import main

sys.exit(main())
