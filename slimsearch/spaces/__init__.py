"""The joint search space: knob families, Space.discover, and the Candidate format.

Importing this package registers the built-in families. Nothing here imports Optuna or Ray
except `optuna_adapter`, which converts a Space for Optuna's samplers.
"""

from slimsearch.spaces import distill, exits, lowrank, precision, pruning, quant, separable  # noqa: F401  (registers the families)
from slimsearch.spaces.candidate import CANDIDATE_VERSION, Candidate
from slimsearch.spaces.knobs import Choice, FloatRange, Knob, KnobFamily, Untouched, create_family, list_families, register_family
from slimsearch.spaces.space import Parameter, Space

__all__ = [
    "CANDIDATE_VERSION", "Candidate", "Choice", "FloatRange", "Knob", "KnobFamily", "Parameter", "Space",
    "Untouched", "create_family", "list_families", "register_family",
]
