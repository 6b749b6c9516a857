"""``python -m mentor``: the same command as ``mentor`` (and what ``accelerate launch -m mentor`` runs)."""

import sys

from mentor.cli import main

sys.exit(main())
