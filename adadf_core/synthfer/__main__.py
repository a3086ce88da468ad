"""``python -m adadf_core.synthfer`` = ``adadf generate-synthfer``."""
import sys

from .writer import cli_main

sys.exit(cli_main())
