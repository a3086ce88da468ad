"""adadf_core: a reproducibility companion for Ada-DF (adaptive label distribution fusion for FER).

See docs/ARCHITECTURE.md for the modules and the contracts between them.
"""
__version__ = "0.1.0"
