"""One-line captions of the figures the notebooks write, for the results index (``provenance.write_index``):
what is drawn, over which runs, and what to look at. A figure without an entry is listed by its name."""
from __future__ import annotations

CAPTIONS: dict[str, str] = {
    "00_loss_weight_ramps": "§3: the weights of the auxiliary CE and the target KL loss over epochs, crossing at ê.",
    "00_class_distributions": "§4: class distributions D mined from a hand-made batch; a row whose own-class mean "
                              "stays below t falls back to the threshold row.",
    "00_fusion_sample": "§2.6: one hand-made sample's label distribution d, class row D[y] and fused target f.",
    "02_learning_curves": "Ada-DF, first seed: train and test accuracy per epoch (best and last marked), the loss "
                          "parts, the ramp weights and the learning rate.",
    "02_confusion_matrix": "Ada-DF, first seed, last epoch: the test confusion matrix (rows: true class).",
    "02_per_class_accuracy": "Ada-DF: test accuracy per class at the last epoch.",
    "02_synthfer_samples": "SynthFER training faces by majority label, with the share of annotators who chose it.",
    "03_ablation": "Table 2: best, last and mean-of-last-k accuracy per variant (mean over seeds, 95 % interval; each "
                   "seed's last epoch a hollow dot); middle: the paired difference to the baseline (an interval "
                   "that crosses 0 resolves nothing); right: the paper's numbers on their own axis.",
    "04_tsne_features": "Fig. 3: t-SNE of the target branch's test features, coloured by true class.",
    "05_class_distributions": "Fig. 4: the class distributions D at the last epoch; a fallback row was not mined.",
    "05_class_distributions_evolution": "D at a few epochs (top) and each class's diagonal over epochs against t "
                                        "(below); an x marks an epoch where the class fell back.",
    "06_fusion_over_epochs_0": "Fig. 6: a tracked training face's d, D[y] and fused f over epochs.",
    "06_fusion_over_epochs_1": "Fig. 6: a second tracked training face's d, D[y] and fused f over epochs.",
    "06_fusion_sample_0": "Fig. 5: one tracked face's d, D[y] and f at the last epoch.",
    "06_fusion_sample_1": "Fig. 5: a second tracked face's d, D[y] and f at the last epoch.",
    "06_divergence_to_ground_truth": "One run: mean KL and JS divergence of d, D[y] and f to SynthFER's annotator "
                                     "votes per epoch; lower is closer to the annotators.",
    "06_ground_truth": "SynthFER's ground truth: JS divergence of d, D[y] and f to the votes per group of faces "
                       "(95 % intervals over seeds) and the attention against the votes' entropy.",
    "07_noise": "Table 4: accuracy under symmetric label noise, last epoch mean with its 95 % interval and each seed "
                "a hollow dot, best epoch dashed; right: the paper's numbers on their own axis.",
    "07_noise_curves": "Table 4 over epochs, one panel per noise rate: test accuracy on the curve split (solid) and "
                       "accuracy on the labels trained on (dashed), mean over seeds; dashed above the grey line (the "
                       "share of clean labels) is memorisation of flipped labels.",
    "07_sensitivity": "Table 1: accuracy against each hyper-parameter, one factor at a time around the preset.",
    "09_photographs": "Predictions on sample photographs after alignment; a SynthFER model has seen only synthetic "
                      "faces, so these show the chain works, not real expressions.",
    "09_synthfer_votes": "SynthFER test faces from clear to ambiguous: predicted probabilities beside the "
                         "annotators' vote shares.",
    "alignment_template": "The five-point template every face is aligned to.",
    "alignment_before_after": "SynthFER's unaligned images with their recorded landmarks, above the aligned crops.",
    "alignment_detections": "MTCNN on sample photographs: every detected box with its score and the five landmarks.",
    "alignment_photos_aligned": "The same photographs aligned to the template.",
    "comparison": "Every method on the same data, backbone and budget, drawn as Table 2 (left: mean over seeds with "
                  "95 % intervals and each seed; middle: paired difference to the baseline; right: published "
                  "numbers, hollow where the backbone is not stated).",
}
