import sys

from voicetrio.cli import main

sys.exit(main())
