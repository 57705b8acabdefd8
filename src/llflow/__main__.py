"""``python -m llflow`` (also what ``torchrun -m llflow`` runs)."""
import sys

from .cli import main

sys.exit(main())
