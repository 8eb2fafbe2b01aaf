"""slimsearch: find compressed versions of a PyTorch model that meet a latency budget.

    import slimsearch
    result = slimsearch.search(task="digits", latency_budget="0.5x", trials=20)
    result.front                      # the Pareto front, a DataFrame
    result.export(trial=3, out="model/")

The public API is these three functions; everything heavy is imported when first used.
"""

from slimsearch.api import export, load, search

__all__ = ["search", "load", "export"]
__version__ = "0.1.0"
