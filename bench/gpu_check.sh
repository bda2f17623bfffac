#!/usr/bin/env bash
# The GPU checks of issue #18 (step 4), in one command, on a machine with a CUDA GPU:
#
#   bash bench/gpu_check.sh                      # every step below, in this order
#   bash bench/gpu_check.sh attention tests      # only some: attention vit tests pretrain
#   SWEEP=1 bash bench/gpu_check.sh attention    # also time every candidate tile (a few minutes more)
#
#   attention  bench/attention.py: TFLOP/s of our kernel and every SDPA backend, fwd/bwd/fwd+bwd, at
#              B*H = 64*12, N = 257 and 1370, d = 64, bf16, and packed multi-crop (64 x (2x257 + 8x50))
#              against two SDPA calls; then the registers/spills/shared memory the GPU's JIT compiled.
#              Targets: fwd+bwd >= 1.15x the best SDPA at both N; packed >= 1.4x the two calls.
#   vit        bench/attention.py --vit-step: a ViT-B/14 518-px multi-crop pretraining step (2x518 +
#              8x98 px crops per image, bf16 autocast, AdamW), images/s/GPU, ours packed vs timm SDPA.
#   tests      the GPU-only tests: pytest tests/unit/test_attention.py on CUDA (fp16/bf16 tolerances,
#              and every interpreter test, now on the GPU).
#   pretrain   bench/pretrain.py (Ray Train overhead against a plain loop; it needs ray and the
#              shards of `make demo`, or PRETRAIN_SHARDS=URI): skipped, and said so, where it cannot run.
#
# Results go to $OUT (the device tool's folder) or a new /tmp/gpu-check.*: gpu_check.log, env.txt,
# attention.json, vit_step.json, pretrain.json and summary.txt (the targets, met or not). Python: $PYTHON,
# else the repo's .venv if it sees a GPU, else python3. radscale need not be installed: a
# sitecustomize on PYTHONPATH maps radscale.trainer to ./trainer (PYTHON needs torch, triton, timm).
# Exit status: non-zero if a step failed.
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
STEPS=${*:-attention vit tests pretrain}
echo "results in $OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0  # tests/conftest.py turns the interpreter on without /dev/nvidiactl

say() { echo "== $*" | tee -a "$LOG"; }

if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
if ! "$PYTHON" -c 'import radscale.trainer.kernels.attention' 2>/dev/null; then
  # Not installed: a meta-path finder (a sitecustomize on PYTHONPATH) maps radscale to ./radscale
  # and radscale.trainer to ./trainer, as the editable install does.
  SHIM=$(mktemp -d)
  cat >"$SHIM/sitecustomize.py" <<PYEOF
import importlib.abc, importlib.util, sys
_ROOTS = {"radscale": "$REPO/radscale", "radscale.trainer": "$REPO/trainer"}
class _RadscaleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in _ROOTS:
            return importlib.util.spec_from_file_location(
                name, _ROOTS[name] + "/__init__.py", submodule_search_locations=[_ROOTS[name]])
        return None
sys.meta_path.append(_RadscaleFinder())
PYEOF
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  date -u
  nvidia-smi -L 2>&1 || true
  "$PYTHON" -c 'import sys, torch, triton; print(sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")'
} >"$OUT/env.txt" 2>&1
tee -a "$LOG" <"$OUT/env.txt"
if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "no CUDA GPU visible to $PYTHON: nothing to check here"
  exit 2
fi

FAILED=""
run() {  # run NAME TIMEOUT CMD...: log it, time it, keep going on failure
  local name=$1 limit=$2 start rc
  shift 2
  say "$name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  say "$name: exit $rc after $(( $(date +%s) - start )) s"
  [ "$rc" -eq 0 ] || FAILED="$FAILED $name"
}

for step in $STEPS; do
  case $step in
    attention)
      run attention 600 "$PYTHON" bench/attention.py --json "$OUT/attention.json" ${SWEEP:+--sweep} ;;
    vit)
      run vit 420 "$PYTHON" bench/attention.py --vit-step --images "${VIT_IMAGES:-32}" --json "$OUT/vit_step.json" ;;
    tests)
      # -c /dev/null: the repo's pytest settings name plugins (pytest-asyncio) a GPU image may lack
      run tests 600 "$PYTHON" -m pytest -c /dev/null --rootdir "$REPO" -p no:cacheprovider -q -rs \
        tests/unit/test_attention.py ;;
    pretrain)
      if "$PYTHON" -c 'import ray, pyarrow, pydicom' 2>/dev/null; then
        run pretrain 420 "$PYTHON" bench/pretrain.py --steps 30 --json "$OUT/pretrain.json" \
          ${PRETRAIN_SHARDS:+--shards "$PRETRAIN_SHARDS"}
      else
        say "pretrain: skipped: $PYTHON lacks ray/pyarrow/pydicom (bench/pretrain.py needs them and make demo's shards)"
      fi ;;
    *) say "unknown step $step (attention vit tests pretrain)"; FAILED="$FAILED $step" ;;
  esac
done

"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.txt" | tee -a "$LOG"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None

def best_sdpa(rows):
    vals = [r["fwd+bwd"] for n, r in rows.items() if not n.startswith("radscale") and "error" not in r]
    return max(vals) if vals else float("nan")

a = load("attention.json")
if a:
    print(f"device: {a['device']}")
    for key, target in (("dense_N257", 1.15), ("dense_N1370", 1.15), ("multicrop", 1.4)):
        rows = a.get(key)
        if not rows:
            continue
        ours = next(r for n, r in rows.items() if n.startswith("radscale"))
        ratio = ours["fwd+bwd"] / best_sdpa(rows)
        print(f"{key:<12} fwd+bwd {ours['fwd+bwd']:7.1f} TFLOP/s, {ratio:5.2f}x best SDPA "
              f"(target >= {target}x): {'met' if ratio >= target else 'NOT met'}")
    for r in a.get("jit_resources", []):
        if r.get("n_spills"):
            print(f"SPILLS on the GPU: {r}")
v = load("vit_step.json")
if v:
    ours, timm = v["radscale-triton packed"], v["timm-sdpa per crop size"]
    print(f"vit step     {ours['images_per_s']:7.1f} images/s/GPU vs timm SDPA {timm['images_per_s']:7.1f}: "
          f"{v['speedup']:.2f}x")
p = load("pretrain.json")
if p:
    print(f"pretrain     Ray/plain steps/s ratio {p['ratio']:.2f} (target >= 0.9)")
EOF

if [ -n "$FAILED" ]; then
  say "failed:$FAILED"
  exit 1
fi
say "all steps ran"
