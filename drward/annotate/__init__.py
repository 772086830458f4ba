"""The hybrid SVM labelling pipeline of the Face Reward Model's training data (docs/design.md §1, "FRM pre-training").

They read and write the JSONL pairs format of :mod:`drward.data.pairs_file`. Modules:
:mod:`~drward.annotate.quality` (the per-image quality metrics and their presets), :mod:`~drward.annotate.cache`
(metric values on disk, so a rerun recomputes nothing), :mod:`~drward.annotate.features` (the 12-D pair feature),
:mod:`~drward.annotate.svm` (fit, held-out agreement, labels with confidence), :mod:`~drward.annotate.pipeline`
(all of it in one call; ``tools/annotate.py`` is its command line) and :mod:`~drward.annotate.demo` (synthetic
pairs from the bundled demo faces).

The human half (docs/labelling.md): :mod:`~drward.annotate.candidates` (``tools/make_candidates.py``),
:mod:`~drward.annotate.label_log` (the append-only label log), :mod:`~drward.annotate.label_store` (resume,
assignment, overlap), :mod:`~drward.annotate.label_page` (the Gradio page of ``tools/label_pairs.py``),
:mod:`~drward.annotate.active` (uncertainty order), :mod:`~drward.annotate.label_report` and
:mod:`~drward.annotate.label_studio`.

Nothing is imported here, so reading a pairs file does not import scikit-learn.
"""
