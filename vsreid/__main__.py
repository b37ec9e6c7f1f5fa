import sys

from vsreid.cli import main

sys.exit(main())
