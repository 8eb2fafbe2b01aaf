"""The genome: a dozen genes that decode to full per-layer candidates shaped by sensitivity."""

import numpy as np
import pytest

from slimsearch.config import SpaceConfig
from slimsearch.spaces import Space
from slimsearch.spaces.encoding import Encoding
from slimsearch.spaces.genome import Genome
from slimsearch.spaces.quant import decode_choice
from slimsearch.tasks import create_task


@pytest.fixture(scope="module")
def setup():
    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig())
    encoding = Encoding(space)
    prune = [k.target for k in space.knobs if k.family == "prune"]
    quant = [k.target for k in space.knobs if k.family == "quant"]
    separable = [k.target for k in space.knobs if k.family == "separable"]
    # Made-up probes with a known order: later layers are more robust.
    probes = {"prune": {t: {"0.5": 0.5 + 0.05 * i} for i, t in enumerate(prune)},
              "quant": {t: {'"2-uniform"': 0.5 + 0.04 * i} for i, t in enumerate(quant)},
              "separable": {t: {"true": 0.3 + 0.05 * i} for i, t in enumerate(separable)}}
    return space, encoding, Genome(encoding, {"probes": probes}), prune, quant, separable


def test_no_genes_is_the_teacher_and_genes_cover_the_families(setup):
    space, encoding, genome, *_ = setup
    assert np.array_equal(genome.decode({}), encoding.default)
    names = {gene.name for gene in genome.genes}
    assert {"prune.level", "prune.shape", "quant.base", "quant.low", "quant.share", "separable.share",
            "lowrank.share", "exits.first", "exits.threshold", "distill.temperature"} <= names
    assert len(genome.genes) < len(space.knobs) / 2


def test_pruning_is_spread_by_robustness(setup):
    space, encoding, genome, prune, *_ = setup
    uniform = encoding.decode(genome.decode({"prune.level": 0.4, "prune.shape": 0.0})[None, :])[0]
    assert set(uniform.family("prune").values()) == {0.4}
    shaped = encoding.decode(genome.decode({"prune.level": 0.4, "prune.shape": 1.0})[None, :])[0].family("prune")
    ratios = [shaped[t] for t in prune]
    assert ratios == sorted(ratios) and ratios[0] < 0.4 < ratios[-1]  # the most robust (last) pruned hardest
    assert abs(np.mean(ratios) - 0.4) < 0.06


def test_the_most_robust_share_of_layers_goes_to_the_low_width(setup):
    space, encoding, genome, _, quant, separable = setup
    candidate = encoding.decode(genome.decode({"quant.base": 8, "quant.low": 2, "quant.share": 0.5,
                                               "separable.share": 0.3})[None, :])[0]
    bits = [decode_choice(candidate.family("quant")[t])[0] for t in quant]
    assert bits == [8] * (len(quant) - bits.count(2)) + [2] * bits.count(2)  # robust layers last
    assert bits.count(2) == len(quant) // 2
    on = [candidate.family("separable")[t] for t in separable]
    assert on == sorted(on) and 0 < sum(on) < len(on)


def test_exits_from_the_first_chosen_on(setup):
    space, encoding, genome, *_ = setup
    stages = [k.target for k in space.knobs if k.family == "exits" and k.stage is not None]
    candidate = encoding.decode(genome.decode({"exits.first": stages[1], "exits.threshold": 0.9})[None, :])[0]
    exits = candidate.family("exits")
    assert exits[stages[0]] == "off" and all(exits[s] == 0.9 for s in stages[1:])


def test_random_genomes_decode_to_valid_distinct_candidates(setup):
    space, encoding, genome, *_ = setup
    rows = genome.random_rows(300, np.random.default_rng(0))
    assert np.array_equal(encoding.snap(rows), rows)
    assert len(set(encoding.keys(rows))) > 250
    candidates = encoding.decode(rows[:20])
    assert all(space.canonical(c) == c for c in candidates)


def test_execution_precision_is_a_gene_on_gpu_targets_and_decodes_as_chosen():
    from slimsearch.config import TargetConfig

    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig(families=("prune", "precision", "distill")),
                           target=TargetConfig(runtime="cudagraph", device="cuda"))
    encoding = Encoding(space)
    genome = Genome(encoding, None)
    assert "precision.dtype" in {gene.name for gene in genome.genes}
    for dtype in ("float16", "bfloat16", "float32"):
        candidate = encoding.decode(genome.decode({"precision.dtype": dtype, "prune.level": 0.3})[None, :])[0]
        assert candidate.family("precision") == {"dtype": dtype}
    columns = genome.random_columns(60, np.random.default_rng(0))
    drawn = {c.family("precision")["dtype"] for c in encoding.decode(genome.decode_columns(columns, 60))}
    assert drawn == {"float32", "float16", "bfloat16"}  # the sampler's draws reach every precision
