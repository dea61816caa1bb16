#!/usr/bin/env bash
# One call for a session lent a GPU: every GPU check, printed for RESULTS.md.
#
# The device machine reaches no package registry: it has its own Python 3.12 with torch,
# torchvision, timm, onnxruntime, OpenCV, Pillow, pandas and scikit-image, and lacks pydantic.
# So, here first (once per session; the wheels stay ignored by git):
#     bash benchmarks/gpu_wheels.sh
# then the device call, from the repository root, carrying the wheels:
#     run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=540)
# Output goes to stdout and, when $OUT is set, to $OUT/gpu.md.
#
# A dry run of the plumbing on this CPU machine, small and quick:
#     DEVICE=cpu SCALE=small bash benchmarks/gpu.sh
# Each step has its own time limit; a failing step is reported and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-full}
STEP_S=${STEP_S:-150}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

if [ -n "${PY:-}" ]; then
  :
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import audit" 2>/dev/null; then
  PY=.venv/bin/python
else
  PY=python3
  if ls .whl/*.whl >/dev/null 2>&1; then
    # pandas is ours only when the machine's is missing or 3.x (the code pins pandas<3)
    skip='^$'
    if $PY -c "import pandas, sys; sys.exit(int(pandas.__version__.split('.')[0]) >= 3)" 2>/dev/null; then
      skip='pandas-|pytz-|tzdata-|python_dateutil-'
    fi
    wheels=$(ls .whl/*.whl | grep -Ev "$skip")
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/faceage-site $wheels || echo "WARNING: the carried wheels did not install"
    export PYTHONPATH=/tmp/faceage-site
  else
    echo "WARNING: no .whl folder carried (bash benchmarks/gpu_wheels.sh here first)"
  fi
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

if [ "$SCALE" = small ]; then
  N_CHECK=300 N_INFER=300 N_ROB=32 N_SAL=8 ROUNDS=1
else
  N_CHECK=4000 N_INFER=4000 N_ROB=1000 N_SAL=256 ROUNDS=3
fi

log=${OUT:+$OUT/gpu.md}
log=${log:-/dev/null}
say() { echo "$@" | tee -a "$log"; }
step() {  # step TITLE COMMAND...
  local title=$1; shift
  say ""
  say "## $title"
  say ""
  local t0=$SECONDS
  timeout "$STEP_S" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  say ""
  say "(step took $((SECONDS - t0)) s, exit status $rc)"
}

say "# GPU checks ($(date -u +%Y-%m-%d), device $DEVICE, scale $SCALE)"
say ""
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log" || true
$PY - <<'PYEOF' 2>&1 | tee -a "$log"
import os, platform, sys
import numpy, pandas, torch, torchvision, timm
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}, timm {timm.__version__}, numpy {numpy.__version__}, "
      f"pandas {pandas.__version__}, {os.cpu_count()} CPUs, CUDA {torch.cuda.is_available()}")
PYEOF

step "CPU vs $DEVICE agreement, throughput by batch size and decoder (gpu_check.py)" \
  $PY benchmarks/gpu_check.py --n "$N_CHECK" --device "$DEVICE"
step "Inference side by side on $DEVICE (inference.py): demo FaceAge" \
  $PY benchmarks/inference.py --device "$DEVICE" --n "$N_INFER" --rounds "$ROUNDS"
$PY - <<'PYEOF'
import timm, torch
torch.save(timm.create_model("resnet18", num_classes=1).state_dict(), "/tmp/r18.pth")
open("/tmp/r18.yaml", "w").write("name: resnet18-random\nkind: timm\narch: resnet18\n"
    "arch_kwargs: {num_classes: 1}\ncheckpoint: /tmp/r18.pth\ninput_size: 112\n"
    "outputs: {faceage: 0}\n")
PYEOF
step "Inference side by side on $DEVICE (inference.py): timm resnet18, random weights" \
  $PY benchmarks/inference.py --device "$DEVICE" --n "$N_INFER" --rounds "$ROUNDS" --model /tmp/r18.yaml
step "Robustness suite on $DEVICE (robustness.py): each perturbation, and the default suite vs the clean pass" \
  $PY benchmarks/robustness.py --device "$DEVICE" --n "$N_ROB"
step "Saliency methods on $DEVICE (saliency.py)" \
  $PY benchmarks/saliency.py --device "$DEVICE" --n "$N_SAL"
say ""
say "(all steps: $SECONDS s)"
