"""``adadf reproduce``: the notebooks run with papermill (`reproduce`), their parameters (`params`) and budgets
(`budgets`), what a run records (`provenance`), the committed reference (`reference`), and a notebook's own set-up
(`notebook`).
"""
