"""Development tooling, not part of the product: benchmarks of the app (start-up, filters, comparisons; the Chromium
driver and the README's screenshots), of memory layouts and sliding windows, and analyses such as the val/test gap.
Each module runs as ``python -m segbench.bench.NAME``; ``python -m segbench.bench`` lists them. No product module
imports this package (``tests/test_product_imports.py``); ``segbench speed`` lives in ``segbench.analysis.baselines``.
"""
