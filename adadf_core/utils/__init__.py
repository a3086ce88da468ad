"""Helpers every layer may use: atomic file writes and the project root (`fileio`), progress lines (`progress`), and
safe tensor files (`checkpoints`: read with ``weights_only``, so no file runs code when loaded).
"""
