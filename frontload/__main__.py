import sys

from frontload.cli import main

sys.exit(main())
