"""slimsearch: find compressed versions of a PyTorch model that meet a latency budget.

    import slimsearch
    result = slimsearch.search(task="digits", latency_budget="0.5x", trials=20)
    result.front                      # the Pareto front, a DataFrame
    result.export(trial=3, out="model/")

The public API is these three functions; everything heavy is imported when first used.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # OpenMP reads its wait policy once, when torch loads: sleeping rather than spinning waits keep
    # a search from slowing tenfold beside another job (search/threads.py). A user's setting wins.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
OPENMP_PASSIVE = _os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"

from slimsearch.api import export, load, search  # noqa: E402

__all__ = ["search", "load", "export"]
__version__ = "0.1.0"
