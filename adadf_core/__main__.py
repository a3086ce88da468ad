"""``python -m adadf_core <command>``: the ``adadf`` command without its script; torchrun starts every process of a
multi-process run this way (``torchrun --nproc-per-node N -m adadf_core train [options]``)."""
import sys

from adadf_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
