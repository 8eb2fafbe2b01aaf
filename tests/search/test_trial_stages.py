"""A trial's time per stage: compiling or capturing a model is its own stage, not latency."""

import time

from slimsearch.search.trial import _Stages


def test_compile_seconds_move_out_of_the_stage_that_contained_them():
    stage = _Stages()
    with stage("latency"):
        time.sleep(0.3)
        stage.move("compile", 0.2)  # of which 0.2 s compiled the model
    assert stage.seconds["compile"] == 0.2
    assert 0.05 < stage.seconds["latency"] < 0.3
    stage.move("compile", 0.0)
    assert stage.seconds["compile"] == 0.2
