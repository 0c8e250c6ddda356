"""The tooling around the model and the op: the ``swin-fused`` command and what benchmarks and reports share.

- ``cli.py``: the command (``swin-fused``, ``python -m swin_fused``), one module per subcommand:
  ``results_table.py`` (``table``), ``compare.py`` (``bench``), ``profiling.py`` (``profile``),
  ``roofline.py`` (``roofline``), ``plots.py`` (``plot``); ``options.py``, what they share.
- ``benchmarking.py``: timing, environment records, training / inference steps (``bench/`` uses it too).
- ``baselines.py``: what the kernels are benchmarked against (PyTorch path, reference, SDPA, FlexAttention;
  timm and torchvision models).
- ``bench_results.py``: benchmark JSON -> Markdown tables; ``costs.py``: the op's analytic FLOPs and bytes.

Nothing here is imported by the package itself.
"""
