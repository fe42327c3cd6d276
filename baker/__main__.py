import sys

from baker.cli import main

sys.exit(main())
