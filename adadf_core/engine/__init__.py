"""The training engine: the data of one run (`loaders`), the loop ``fit(cfg) -> Run`` read top to bottom (`train`), and
evaluation (`evaluate`).
"""
