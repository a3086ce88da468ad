"""The pure tensor functions of each method, with no state and no training loop: Ada-DF (`adadf_ops`, docs/METHOD.md
§2-§5), SCN (`scn_ops`, §12) and SLM (`slm_aea_ops`, §11). Each function is tested on hand-computed tensors.
"""
