"""python -m massive_checks.cli"""

import sys

from massive_checks.cli import main

sys.exit(main())
