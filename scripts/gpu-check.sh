#!/usr/bin/env bash
# The GPU check (README, "On a GPU"): the gpu-marked tests, the side-by-side figures of
# scripts/gpu_check.py, and a 3-minute CUDA search with --runtime torch-compile at batch 256 on
# torchvision:resnet18, whose front must hold a float16 / bfloat16 model. About 5-6 minutes on one
# H200. Runs from the repository root on a machine with a CUDA GPU, its own PyTorch (2.11 or
# later), torchvision, onnx, onnxruntime, numpy, pandas, scikit-learn, typer and rich, and no
# network: the other dependencies come as wheels in .whl/ (scripts/gpu-wheels.sh fetches them).
#
#   bash scripts/gpu-wheels.sh          # where there is network: fills .whl/ (16 MB)
#   bash scripts/gpu-check.sh           # on the GPU machine
#
# Set OUT to a folder to keep the logs and figures (gpu-micro.json, front.json, logs).
set -uo pipefail
python=${PYTHON:-python3}
repo=$PWD
out=${OUT:-$(mktemp -d)}
work=$(mktemp -d /tmp/slimsearch-gpu-check.XXXXXX)
search_time=${GPU_CHECK_SEARCH_TIME:-3m}
began=$(date +%s)
phase() { echo; echo "== $1 (at $(( $(date +%s) - began )) s)"; }

phase "install: carried wheels and slimsearch, no dependencies"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run scripts/gpu-wheels.sh where there is network"; exit 2; }
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl || exit 2
"$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$work/site" . || exit 2
export PYTHONPATH="$work/site" SLIMSEARCH_CACHE="$work/cache" PYTHONUNBUFFERED=1
cd "$work"  # slimsearch is imported from the install, not from the checkout
"$python" -c "import torch, slimsearch; print('slimsearch from', slimsearch.__file__); print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
echo "CPU cores: $(nproc); date: $(date -u +%Y-%m-%dT%H:%MZ)"
status=0

phase "gpu-marked tests"
# The files that hold them: collecting the whole suite would import what this machine lacks (ray, playwright).
(cd "$repo" && timeout 200 "$python" -m pytest -m gpu -q tests/evaluators/test_latency.py \
    tests/evaluators/test_runtimes.py tests/evaluators/test_gpu_sharing.py) 2>&1 | tee "$out/gpu-tests.log" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

phase "side by side: runtimes against a plain CUDA-graph replay, pruned and half precision, a fine-tune epoch"
OUT="$out" timeout 240 "$python" "$repo/scripts/gpu_check.py" 2>&1 | tee "$out/gpu-micro.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

phase "a $search_time CUDA search: torch-compile, batch 256, resnet18"
cat > search.toml <<TOML
task = "torchvision:resnet18"
name = "gpu-check"
latency_budget = "0.8x"
trials = 60
time_budget = "$search_time"
runs_dir = "$work/runs"
# The sampler's trials (its genome has a precision gene), not the warm start's float32 hand points
# nor the predictor's, whose latency model does not know precision yet.
warm_start = false
proposers = ["sampler"]
[target]
runtime = "torch-compile"
device = "cuda"
batch_size = 256
[finetune]
epochs = 2.0
[space]
families = ["prune", "precision", "distill"]
TOML
timeout 330 "$python" -m slimsearch.cli run search.toml --quiet 2>&1 | tail -20 | tee "$out/search.log"
"$python" -m slimsearch.cli front "$work/runs/gpu-check" --json > "$out/front.json" || status=1
"$python" - "$out/front.json" "$work/runs/gpu-check" <<'PY' || status=1
import json, sys
import slimsearch
front = json.load(open(sys.argv[1]))
trials = slimsearch.load(sys.argv[2]).trials
done = trials[trials.state == "complete"]
print(f"{len(done)} trials completed, front of {len(front)}; compile s per trial (median): "
      f"{done.seconds_compile.median():.1f}; flagged (MACs fell, latency did not): {int((done['flags'] != '').sum())}")
half = [r for r in front if r["candidate"]["choices"].get("precision", {}).get("dtype", "float32") != "float32"]
for r in front:
    dtype = r["candidate"]["choices"].get("precision", {}).get("dtype", "float32")
    print(f"  trial {r['trial']:>3}: {dtype:<9} acc {r['accuracy']:.2%}  {r['latency_ms']:.3f} ms  "
          f"{r['speedup']:.2f}x  MACs x{r['macs_ratio']:.2f}  {','.join(r['flags'])}")
ok = bool(half)
print(f"{'PASS' if ok else 'FAIL'}  the front holds a float16/bfloat16 model at batch 256 ({len(half)})")
sys.exit(0 if ok else 1)
PY

phase "done: status $status; logs in $out"
exit $status
