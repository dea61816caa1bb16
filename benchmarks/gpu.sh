#!/usr/bin/env bash
# One call for a session lent a GPU: install, then every GPU check, printed for RESULTS.md.
#   bash benchmarks/gpu.sh     (from the repository root, on the device machine)
set -euo pipefail
cd "$(dirname "$0")/.."
make install >/dev/null
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
echo
echo "## CPU vs CUDA agreement and throughput by batch size (gpu_check.py)"
$PY benchmarks/gpu_check.py
echo
echo "## Inference side by side on CUDA (inference.py): demo FaceAge, then resnet18"
$PY benchmarks/inference.py --device cuda --n 4000
$PY - <<'PYEOF'
import timm, torch
torch.save(timm.create_model("resnet18", num_classes=1).state_dict(), "/tmp/r18.pth")
open("/tmp/r18.yaml", "w").write("name: resnet18-random\nkind: timm\narch: resnet18\n"
    "arch_kwargs: {num_classes: 1}\ncheckpoint: /tmp/r18.pth\ninput_size: 112\n"
    "outputs: {faceage: 0}\n")
PYEOF
$PY benchmarks/inference.py --device cuda --n 4000 --model /tmp/r18.yaml
echo
echo "## Robustness suite on CUDA (robustness.py): each perturbation, and the default suite vs the clean pass"
$PY benchmarks/robustness.py --device cuda --n 1000
echo
echo "## Saliency methods on CUDA (saliency.py)"
$PY benchmarks/saliency.py --device cuda --n 256
