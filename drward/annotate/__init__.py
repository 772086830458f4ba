"""The hybrid SVM labelling pipeline of the Face Reward Model's training data (DESIGN.md §1, "FRM pre-training").

Modules: :mod:`~drward.annotate.pairs` (the JSONL pairs format), :mod:`~drward.annotate.quality` (the per-image
quality metrics and their presets), :mod:`~drward.annotate.cache` (metric values on disk, so a rerun recomputes
nothing), :mod:`~drward.annotate.features` (the 12-D pair feature), :mod:`~drward.annotate.svm` (fit, held-out
agreement, labels with confidence), :mod:`~drward.annotate.pipeline` (all of it in one call; ``tools/annotate.py``
is its command line) and :mod:`~drward.annotate.demo` (synthetic pairs from the bundled demo faces).

Nothing is imported here, so reading a pairs file does not import scikit-learn.
"""
