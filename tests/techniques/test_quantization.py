import pytest
import torch

from slimsearch.config import SpaceConfig
from slimsearch.errors import ConfigError
from slimsearch.evaluators.accuracy import accuracy, accuracy_from_logits
from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
from slimsearch.evaluators.quantized_deploy import export_deployed, module_name_of
from slimsearch.evaluators.size import packed_size_bytes
from slimsearch.spaces import Space
from slimsearch.spaces.quant import decode_choice
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques import build_student
from slimsearch.techniques.quantization import calibrate, calibrate_one_layer, input_ranges, quantized_layers

QUANT = SpaceConfig(families=("quant",))
EXAMPLE = torch.randn(1, 1, 24, 24)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32, 64)).eval()


@pytest.fixture(scope="module")
def digits():
    from slimsearch.tasks import create_task

    return create_task("digits")


def everywhere(space: Space, value: str):
    return space.candidate({p.name: value for p in space.parameters() if p.name.startswith("quant:")})


def quantize(teacher, example, value: str, calibration: torch.Tensor, settings=QUANT):
    student = build_student(everywhere(Space.discover(teacher, example, settings), value), teacher, example, settings)
    return calibrate(student, calibration)


def test_choices_decode_and_reach_the_candidate_as_bit_widths(model):
    assert decode_choice("8-uniform") == (8, "uniform")
    assert decode_choice({"bits": 4, "mode": "kmeans"}) == (4, "kmeans")
    assert decode_choice("16-uniform") == (16, "float")
    with pytest.raises(ConfigError, match="'3-uniform'.*32, 16, 8, 4, 2"):
        decode_choice("3-uniform")
    space = Space.discover(model, EXAMPLE, QUANT)
    assert {"32-float", "16-float", "8-uniform", "8-kmeans", "2-kmeans"} <= set(space.knobs[0].domain.options)
    assert space.default_candidate().family("quant")["stem.0"] == "32-float"
    assert set(space.extreme_candidate().family("quant").values()) == {"2-uniform"}


def test_one_quantized_layer_takes_the_range_its_own_calibration_pass_would_set(model):
    space = Space.discover(model, EXAMPLE, QUANT)
    inputs = torch.randn(200, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    layers = [knob.target for knob in space.knobs if knob.family == "quant"]
    ranges = input_ranges(model, inputs, layers)
    assert set(ranges) == set(layers)
    for layer in layers:
        candidate = space.candidate({f"quant:{layer}": "4-uniform"})
        calibrated = calibrate(build_student(candidate, model, EXAMPLE, QUANT), inputs)
        preset = build_student(candidate, model, EXAMPLE, QUANT)
        assert calibrate_one_layer(preset, ranges)
        (expected,), (got,) = quantized_layers(calibrated).values(), quantized_layers(preset).values()
        assert (got.input_quant.low, got.input_quant.high) == (expected.input_quant.low, expected.input_quant.high)
        assert torch.equal(preset(inputs[:8]), calibrated(inputs[:8]))  # the same modes too: no range moves
    # Two quantized layers: the second one's input passes through the first, so it must be calibrated.
    assert not calibrate_one_layer(build_student(everywhere(space, "4-uniform"), model, EXAMPLE, QUANT), ranges)


def test_stage_granularity_ties_layers_of_one_resolution(model):
    space = Space.discover(model, EXAMPLE, SpaceConfig(families=("quant",), granularity="stage"))
    names = [p.name for p in space.parameters()]
    assert names == ["quant:@stage1", "quant:@stage2", "quant:@stage3", "quant:@head"]


def test_bad_bits_and_unknown_pinned_layer_are_refused_with_what_is_allowed(model):
    with pytest.raises(ConfigError, match=r"space.bits may only hold 32, 16, 8, 4, 2, but got bits=3"):
        SpaceConfig(bits=(8, 3))
    with pytest.raises(ConfigError, match=r"space.pin_float names 'stem.9'.*allowed: module names such as 'stem.0'"):
        Space.discover(model, EXAMPLE, SpaceConfig(families=("quant",), pin_float=("stem.9",)))
    space = Space.discover(model, EXAMPLE, SpaceConfig(families=("quant",), pin_float=("stem.0", "head")))
    assert {"stem.0", "head"} == {u.target for u in space.untouched}
    assert {"stem.0", "head"}.isdisjoint(k.target for k in space.knobs)


def test_weights_take_only_their_grid_or_codebook_values(model):
    for value, levels in (("8-uniform", 129), ("4-uniform", 15), ("4-kmeans", 16), ("2-kmeans", 4)):
        student = quantize(model, EXAMPLE, value, torch.rand(64, 1, 24, 24))
        for layer in quantized_layers(student).values():
            weight = layer.quantized_weight()
            per_channel = weight.flatten(1) if value.endswith("uniform") else weight.flatten()[None]
            assert max(len(row.unique()) for row in per_channel) <= levels


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_grids_take_each_channels_clip_ratio_with_the_least_error_in_chunks_or_at_once(bits, monkeypatch):
    from slimsearch.techniques import quantization

    torch.manual_seed(0)
    weight = torch.randn(24, 8, 3, 3) * torch.rand(24, 1, 1, 1)
    weight[0, 0, 0, 0] = 9.0  # an outlier: the max-abs grid is not always the best
    qmax = 2 ** (bits - 1) - 1
    flat = weight.flatten(1)
    peak = flat.abs().amax(dim=1)
    best = []
    for channel in range(len(flat)):  # the definition, one channel and one ratio at a time
        errors = [float(((torch.clamp(torch.round(flat[channel] / s), -qmax, qmax) * s - flat[channel]) ** 2).sum())
                  for s in peak[channel] * quantization.CLIP_RATIOS / qmax]
        best.append(float(peak[channel] * quantization.CLIP_RATIOS[errors.index(min(errors))] / qmax))
    at_once = quantization.channel_scales(weight, bits)
    monkeypatch.setattr(quantization, "CLIP_CHUNK_ELEMENTS", 1)  # one ratio per chunk
    assert at_once.tolist() == pytest.approx(best, rel=1e-6)
    assert quantization.channel_scales(weight, bits).tolist() == pytest.approx(best, rel=1e-6)


def test_quantization_aware_training_reaches_weights_and_codebooks(model):
    student = quantize(model, EXAMPLE, "8-uniform", torch.rand(64, 1, 24, 24))
    clustered = quantize(model, EXAMPLE, "4-kmeans", torch.rand(64, 1, 24, 24))
    for net, trained in ((student, "layer.weight"), (clustered, "codebook")):
        net.train()
        net(torch.rand(8, 1, 24, 24)).sum().backward()
        grads = [p.grad for name, p in net.named_parameters() if name.endswith(trained)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_rebuilt_student_with_stored_weights_computes_the_same(model):
    student = quantize(model, EXAMPLE, "4-kmeans", torch.rand(64, 1, 24, 24))
    candidate = everywhere(Space.discover(model, EXAMPLE, QUANT), "4-kmeans")
    rebuilt = build_student(candidate, model, EXAMPLE, QUANT)
    rebuilt.load_state_dict(student.state_dict())
    batch = torch.rand(4, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(batch), student.eval()(batch))


def test_packed_size_at_8_bits_is_a_quarter_and_int8_onnx_is_smaller(model, tmp_path):
    calibration = torch.rand(128, 1, 24, 24)
    float_bytes = packed_size_bytes(model)
    int8 = quantize(model, EXAMPLE, "8-uniform", calibration)
    half = quantize(model, EXAMPLE, "16-float", calibration)
    assert 0.24 < packed_size_bytes(int8) / float_bytes < 0.30
    assert 0.48 < packed_size_bytes(half) / float_bytes < 0.52
    assert packed_size_bytes(quantize(model, EXAMPLE, "2-kmeans", calibration)) < packed_size_bytes(int8) / 3
    float_file = export_onnx(model, EXAMPLE, tmp_path / "float.onnx").stat().st_size
    int8_file = export_deployed(int8, EXAMPLE, tmp_path / "int8.onnx", calibration_inputs=calibration)
    half_file = export_deployed(half, EXAMPLE, tmp_path / "half.onnx", calibration_inputs=calibration)
    assert int8_file.stat().st_size < 0.4 * float_file
    assert half_file.stat().st_size < 0.6 * float_file
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    batch = torch.rand(16, 1, 24, 24)
    with torch.no_grad():
        expected = half(batch)
    assert torch.allclose(onnx_predict(onnx_session(half_file, threads=1), batch), expected, atol=1e-4)


def test_int8_weights_leave_no_pair_of_products_that_saturates_an_x86_cpu_without_vnni(model, tmp_path):
    """Without VNNI, ONNX Runtime's x86 kernels sum pairs of uint8 x int8 products in 16 bits
    (VPMADDUBSW), which clamps past 32767: weights within -64..64 keep 255 x (64 + 64) below that.
    With full-range weights (127) the digits teacher's int8 model lost 5 points on such a CPU."""
    import onnx
    from onnx import numpy_helper

    calibration = torch.rand(128, 1, 24, 24)
    deployed = export_deployed(quantize(model, EXAMPLE, "8-uniform", calibration), EXAMPLE, tmp_path / "int8.onnx",
                               calibration_inputs=calibration)
    weights = [numpy_helper.to_array(init) for init in onnx.load(str(deployed)).graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2]
    assert weights and max(int(abs(w.astype(int)).max()) for w in weights) == 64


def test_node_names_map_back_to_module_names():
    assert module_name_of("/stages/stages.1/stages.1.0/shortcut/shortcut.0/Conv") == "stages.1.0.shortcut.0"
    assert module_name_of("/stem/stem.0/Conv") == "stem.0"
    assert module_name_of("/head/Gemm") == "head"


def test_8_bits_keep_digits_accuracy_and_2_bits_lose_more(digits, tmp_path):
    """Post-training, calibrated on training inputs: 8 bits everywhere (head and stem included)
    stays within a point of float, in torch and in the deployed int8 ONNX; 2 bits does not."""
    teacher, example, calibration = digits.teacher, digits.example_input, digits.train.tensors[0]
    inputs, labels = digits.test.tensors
    float_accuracy = accuracy(teacher, digits.test)
    int8 = quantize(teacher, example, "8-uniform", calibration)
    two_bits = quantize(teacher, example, "2-uniform", calibration)
    int8_accuracy, two_bit_accuracy = accuracy(int8, digits.test), accuracy(two_bits, digits.test)
    assert abs(int8_accuracy - float_accuracy) <= 0.01
    deployed = export_deployed(int8, example, tmp_path / "int8.onnx", calibration_inputs=calibration)
    onnx_accuracy = accuracy_from_logits(onnx_predict(onnx_session(deployed, threads=1), inputs), labels)
    assert abs(onnx_accuracy - float_accuracy) <= 0.01
    assert two_bit_accuracy < int8_accuracy - 0.02


@pytest.mark.parametrize("value", ["32-float", "16-float", "8-uniform"])
def test_weights_past_the_onnx_file_limit_go_beside_the_model(model, value, tmp_path, monkeypatch):
    """Above 2 GB (protobuf's limit on one file) the weights are saved as ONNX external data in
    `<name>.data`; here the limit is lowered so that a small model takes that path."""
    import onnx

    from slimsearch.evaluators import deploy
    from slimsearch.evaluators.size import file_size_bytes

    calibration = torch.rand(64, 1, 24, 24)
    student = quantize(model, EXAMPLE, value, calibration)
    with torch.no_grad():
        expected = student(calibration)
    inline = export_deployed(student, EXAMPLE, tmp_path / "inline" / "model.onnx", calibration_inputs=calibration)
    monkeypatch.setattr(deploy, "ONNX_FILE_LIMIT", 1)
    path = export_deployed(student, EXAMPLE, tmp_path / "model.onnx", calibration_inputs=calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inline", "model.onnx", "model.onnx.data"]
    weights = path.with_name("model.onnx.data").stat().st_size
    assert path.stat().st_size < weights and file_size_bytes(path) == path.stat().st_size + weights
    assert abs(file_size_bytes(path) - file_size_bytes(inline)) < 0.1 * file_size_bytes(inline)
    assert deploy.exporter_of(path) == "torchscript"
    onnx.checker.check_model(str(path))
    got = onnx_predict(onnx_session(path, threads=1), calibration)
    reference = onnx_predict(onnx_session(inline, threads=1), calibration)
    assert torch.equal(got, reference)
    if value != "8-uniform":
        assert torch.allclose(got, expected, atol=1e-4)
    # Saved again under the limit, the stale weights file goes.
    monkeypatch.setattr(deploy, "ONNX_FILE_LIMIT", 2**31)
    export_deployed(student, EXAMPLE, tmp_path / "model.onnx", calibration_inputs=calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inline", "model.onnx"]
