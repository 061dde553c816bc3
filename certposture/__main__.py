import sys

from certposture.cli import main

sys.exit(main())
