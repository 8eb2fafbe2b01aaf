"""The model card shipped with an export: what the model is, how it was made, how it measures."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from slimsearch.search.environment import int8_kernels_note

# Characters Markdown would read as formatting, links or table cells when they appear in text.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_text(value: Any) -> str:
    """A user string (task or machine name) as literal Markdown text: HTML and formatting escaped."""
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(text, quote=False))


def md_code(value: Any) -> str:
    """A user string (a layer name) as an inline code span, whose content Markdown shows verbatim.

    The fence is one backtick longer than any run of backticks inside, as CommonMark requires.
    (Code spans are kept out of the card's table, where GitHub would split cells on a `|`.)
    """
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def model_card(result, trial, verification: dict[str, Any]) -> dict[str, Any]:
    attrs = trial.user_attrs
    teacher, config = result.teacher, result.config
    accuracy, latency_ms, size_bytes = trial.values
    from slimsearch.reports.data import full_evaluations

    # With a search-time validation subset: the full splits' figures of a re-evaluated front model.
    full = full_evaluations(result.study).get(trial.number, {})
    search_accuracy, accuracy = accuracy, full.get("val_accuracy", accuracy)
    return {
        "task": config.task,
        "trial": trial.number,
        "teacher": {key: teacher.get(key) for key in ("name", "val_accuracy", "test_accuracy", "latency_ms",
                                                      "size_bytes", "params_count")},
        "knobs": attrs["candidate"],
        # For a quantized or early-exit model, validation and test are the deployed form's (what
        # ships); the torch model's figures (fake-quant arithmetic, exits in one batch) beside them.
        "accuracy": {"validation": accuracy, "validation_search_subset": search_accuracy if full else None,
                     "test": attrs.get("test_accuracy", full.get("test_accuracy", verification.get("reported_test_accuracy"))),
                     "test_exported_onnx": verification.get("onnx_test_accuracy"),
                     "torch_model": attrs.get("torch_accuracy")},
        "onnx_exporter": verification.get("onnx_exporter"),
        "size": {"packed_bytes": int(size_bytes), "onnx_bytes": attrs.get("onnx_bytes"),
                 "params_count": attrs.get("params_count")},
        "latency": {"search_median_ms": latency_ms, "search_speedup": attrs.get("speedup"),
                    "export_median_ms": verification.get("latency_ms"),
                    "export_speedup": verification.get("speedup"),
                    "budget": str(config.latency_budget)},
        # Runs made before environments were recorded still know their target from the config.
        "conditions": result.environment or config.to_dict()["target"],
        "verification": verification,
    }


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _torch_model(card: dict[str, Any]) -> str:
    figures = card["accuracy"].get("torch_model")
    return f"; the torch model as fine-tuned: {_percent(figures.get('test'))}" if figures else ""


def _exporter(verification: dict[str, Any]) -> str:
    """Which of torch's ONNX exporters wrote the file(s): TorchScript, or dynamo where it could not."""
    exporter = verification.get("onnx_exporter")
    return f", written by torch's {' and '.join(exporter.split('+'))} ONNX exporter" if exporter else ""


def _deployable_files(verification: dict[str, Any]) -> str:
    shares = verification.get("exit_shares_test")
    if shares is None:
        return (f"- `model.onnx` — for ONNX Runtime (input `input`, output `logits`, dynamic batch){_exporter(verification)}\n"
                "- `model.pt2` — `torch.export` program (`torch.export.load(path).module()`)")
    leaving = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    return (f"- `exits/` — the early-exit model: one ONNX file per segment{_exporter(verification)}, `exits.json`\n"
            "  (the exits and their thresholds) and `runner.py` (numpy + onnxruntime only): `python exits/runner.py exits inputs.npy`,\n"
            "  or `EarlyExitRunner(\"exits\").run(x)` for one sample. Latency is the mean over test-like samples\n"
            f"  run one at a time; on the test set samples leave at: {leaving}")


def write_model_card(result, trial, verification: dict[str, Any], markdown_path: Path, json_path: Path) -> None:
    card = model_card(result, trial, verification)
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    teacher, size, latency = card["teacher"], card["size"], card["latency"]
    conditions = card["conditions"]
    choices = card["knobs"]["choices"]
    # Every string that can come from user code (task, teacher and layer names) goes through
    # md_text / md_code: a layer called `<script>` must show as text wherever the card is rendered.
    knob_lines = "\n".join(f"- **{md_text(family)}**: " + ", ".join(f"{md_code(target)} = {md_text(value)}"
                                                                   for target, value in sorted(values.items()))
                           for family, values in sorted(choices.items()))
    teacher_size = teacher.get("size_bytes") or 0
    markdown = f"""# Model card: {md_text(card['task'])}, trial {card['trial']}

Compressed by slimsearch from the {md_code(teacher.get('name'))} teacher; fine-tuned with distillation.

| | this model | teacher |
|---|---|---|
| test accuracy | {_percent(card['accuracy']['test'])} (exported ONNX: {_percent(card['accuracy']['test_exported_onnx'])}{_torch_model(card)}) | {_percent(teacher.get('test_accuracy'))} |
| validation accuracy | {_percent(card['accuracy']['validation'])} | {_percent(teacher.get('val_accuracy'))} |
| latency ({verification.get('latency_statistic', 'median')}) | {latency['search_median_ms']:.3f} ms in the search, {latency['export_median_ms']:.3f} ms at export | {teacher.get('latency_ms', 0):.3f} ms |
| speed-up | {latency['search_speedup']:.2f}x (export: {latency['export_speedup']:.2f}x) | 1.00x |
| packed size | {size['packed_bytes'] / 1024:.1f} KiB ({size['packed_bytes'] / max(teacher_size, 1):.1%} of the teacher) | {teacher_size / 1024:.1f} KiB |
| parameters | {size['params_count']} | {teacher.get('params_count')} |

Latency budget: {md_text(latency['budget'])}. Latency conditions: {md_text(conditions.get('runtime'))} on
{md_text(conditions.get('device'))}, batch {conditions.get('batch_size')}, {conditions.get('threads')} thread(s),
CPU {md_text(conditions.get('cpu'))} ({conditions.get('cpu_count')} cores{md_text(int8_kernels_note(conditions))}); versions
{md_code(json.dumps(conditions.get('versions', {})))}.

## Knobs

{knob_lines}

## Files

{_deployable_files(verification)}
- `weights.pt` — the fine-tuned state dict (`torch.load(path, weights_only=True)`); with `candidate.json`
  and the teacher it rebuilds the model
- `verification.json` — what export checked, with the tolerances
"""
    markdown_path.write_text(markdown)
