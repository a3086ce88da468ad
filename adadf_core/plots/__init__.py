"""Every figure the notebooks show, one module per subject; each function returns a matplotlib Figure and
``save_figure`` writes it. Functions take either a ``Run`` or the plain arrays the run folder holds
(docs/ARCHITECTURE.md, run folder contract). Figure numbers refer to the paper. The analyses behind some figures
(separability, fallback rows, which samples to track) are computed in `studies.analysis`.

The names below are re-exported so that a notebook writes ``plots.learning_curves(run)``.
"""
from adadf_core.plots.common import save_figure, show, DPI  # noqa: F401
from adadf_core.plots.training import learning_curves, per_class_accuracy, confusion_matrix, LOSS_LABELS  # noqa: F401
from adadf_core.plots.samples import synthfer_samples, prediction_panel, plot_manifest_examples, plot_detections, plot_template, plot_before_after  # noqa: F401
from adadf_core.plots.features import tsne_comparison  # noqa: F401
from adadf_core.plots.distributions import class_distribution_heatmap, class_distribution_evolution, fusion_sample, fusion_over_epochs, divergence_curves  # noqa: F401
from adadf_core.plots.comparisons import ablation_bars, sensitivity_lines, noise_plot, noise_curves, ground_truth_panels, SELECTION_STYLE  # noqa: F401
