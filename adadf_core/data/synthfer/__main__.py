"""``python -m adadf_core.data.synthfer`` = ``adadf generate-synthfer``."""
import sys

from adadf_core.data.synthfer.files import cli_main

sys.exit(cli_main())
