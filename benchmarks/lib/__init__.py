"""The benchmarks' shared library; the entry points are the ``benchmarks/*.py`` scripts beside this folder.

* ``common``: tables, clocks, memory probes, report output (``emit_report``);
* ``bench_models``: the restorers and ReFL models the step benchmarks build (tiny or SD 2.1 sizes, on meta);
* ``step_parts`` / ``step_report``: one ReFL step measured part by part, and its report;
* ``prefix_speed``: whole steps over micro-batches with and without the batched no-grad prefix (``refl_step.py``);
* ``budget_counting`` / ``budget_sharding``: the memory budget's counts (``memory_budget.py``);
* ``label_load_clients``: the simulated annotators of ``label_load.py``;
* ``smoke``: the ``--smoke`` flag every entry point has (seconds, the test suite's run).
"""
