import sys

from rapidloop.cli import main

sys.exit(main())
