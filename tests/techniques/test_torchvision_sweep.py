"""Every torchvision classification model passes through the whole space, or leaves out with the
reason the layers a family cannot take; none crashes (tests/techniques/model_sweep.py says how).

The sweep itself is slow (minutes per model on 2 CPU cores): `pytest -m slow -k sweep`. Which
models it skips, and why, is checked on every run.
"""

import pytest

from tests.techniques.model_sweep import (LARGEST_INPUT, PARAM_LIMIT, _meta, input_size, skip_reason, sweep_model,
                                         sweep_models)


def test_the_sweep_skips_only_models_too_big_for_a_cpu_and_says_why():
    models = sweep_models()
    skipped = {name: skip_reason(name) for name in models if skip_reason(name)}
    for name in models:
        too_many = _meta(name)["num_params"] > PARAM_LIMIT
        assert (name in skipped) == (too_many or input_size(name) > LARGEST_INPUT), name
        if too_many:
            assert skipped[name].startswith(f"{_meta(name)['num_params'] / 1e6:.1f}M parameters (torchvision's "
                                            f"count) > {PARAM_LIMIT / 1e6:.0f}M"), skipped[name]
    # MaxViT's 7 x 7 partitions need 224 x 224; Swin's stated minimum is its weights', it runs at 64.
    assert skipped["maxvit_t"].startswith("runs only at 224 x 224 inputs and up")
    assert input_size("swin_t") == 64 and input_size("inception_v3") == 75
    # ViT's builder takes the image size it is made for: it is swept at 64, or the next multiple of its patch.
    assert input_size("vit_b_16") == 64 and input_size("vit_h_14") == 70 and "vit_b_32" not in skipped
    # The architectures issue 15 was about are swept, not skipped.
    assert not {"shufflenet_v2_x0_5", "regnet_x_400mf", "squeezenet1_0", "convnext_tiny", "resnet18"} & set(skipped)
    assert len(skipped) < len(models)


@pytest.mark.slow
@pytest.mark.parametrize("name", sweep_models())
def test_a_torchvision_model_passes_or_leaves_layers_out_with_reasons(name):
    reason = skip_reason(name)
    if reason is not None:
        pytest.skip(reason)
    record = sweep_model(name)
    failed = {label: result["error"] for label, result in record["candidates"].items() if not result["ok"]}
    assert not failed, f"{name}: {failed}"
    if "exit_stages" in record:
        assert record["exit_stages"].get("substituted") == record["exit_stages"]["teacher"], record["exit_stages"]
    assert all(reason for _family, _target, reason in record["left_out_by_probe"])
    assert record["status"] == "pass"
