"""``python -m jaxspeech`` == the ``jaxspeech`` command."""

import sys

from jaxspeech.cli import main

sys.exit(main())
