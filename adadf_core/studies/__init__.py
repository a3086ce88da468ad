"""Multi-run studies and what is computed from them: the ablation, sensitivity and label-noise studies
(`experiments`), the protocol card (`protocol`), SynthFER's ground-truth analysis (`groundtruth`), analyses behind
figures (`analysis`), the papers' numbers (`paper`), tables on disk (`tables`), and the SynthFER-pretrained backbone
(`pretrain`).
"""
