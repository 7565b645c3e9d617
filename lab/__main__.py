"""`python -m lab`: the lab's command line (lab/cli/).

    python -m lab --help
"""

import sys

from lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
