#!/usr/bin/env bash
# The checks to run on a machine with a GPU (or a TPU), writing one JSON:
#
#   bash experiments/accelerator_check.sh [OUT_DIR]      (default runs/accelerator)
#
# 1. JAX's accelerator build: kept when JAX already sees a GPU / TPU, else installed for the JAX
#    version installed (jax[cuda12] where nvidia-smi lists a GPU, jax[tpu] where /dev has TPU chips;
#    on a machine with neither it stops, writing nothing);
# 2. the scale-out saliency benchmark (configs/benchmark.py, JAX only: --config.external=False);
# 3. the quickstart's :gpu config, trained from an empty workdir (configs/quickstart.py:gpu);
# 4. the tests that put arrays on devices (sharding, saliency, attribution, training, class models);
# then OUT_DIR/accelerator_check.json: the devices, each step's exit status and seconds, the benchmark's
# images/s, the quickstart's accuracy and localisation errors, the tests' pass / fail counts.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/accelerator}
mkdir -p "$out"
log() { echo "[accelerator_check] $*" >&2; }

has_accelerator() { python -c 'import jax, sys; sys.exit(jax.default_backend() == "cpu")' 2>/dev/null; }
if ! has_accelerator; then
  version=$(python -c 'import jax; print(jax.__version__)')
  extra=
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then extra=cuda12;
  elif ls /dev/accel* /dev/vfio/[0-9]* >/dev/null 2>&1; then extra=tpu; fi
  if [ -n "$extra" ]; then
    log "installing jax[$extra]==$version"
    python -m pip install --quiet "jax[$extra]==$version" || log "install failed"
  fi
fi
if ! has_accelerator; then
  log "JAX sees no GPU or TPU here: nothing to check"
  exit 1
fi
python -m pip install --quiet -e '.[test]' || log "pip install -e .[test] failed"

step() {  # step NAME COMMAND...: runs it, logs to OUT/NAME.log, records status and seconds
  local name=$1; shift
  local start=$SECONDS
  log "$name: $*"
  "$@" >"$out/$name.log" 2>&1
  echo "$name $? $((SECONDS - start))" >>"$out/steps.txt"
}
rm -f "$out/steps.txt"
step benchmark python experiments/benchmark.py --config configs/benchmark.py --config.external=False \
  --workdir "$out/benchmark"
step quickstart_gpu python experiments/reproduce.py --config configs/quickstart.py:gpu \
  --workdir "$out/quickstart_gpu"
step tests python -m pytest -q tests/test_parallel.py tests/test_saliency.py tests/test_attribution.py \
  tests/test_train.py tests/test_class_models.py --junitxml "$out/tests.xml"

python - "$out" <<'PY'
import json, pathlib, sys, xml.etree.ElementTree as ET
import jax
out = pathlib.Path(sys.argv[1])
steps = {}
for line in (out / 'steps.txt').read_text().splitlines():
  name, status, seconds = line.split()
  steps[name] = {'exit_status': int(status), 'seconds': int(seconds)}
def load(path):
  return json.loads(path.read_text()) if path.is_file() else None
bench, quick = load(out / 'benchmark' / 'benchmark.json'), load(out / 'quickstart_gpu' / 'metrics.json')
tests = None
if (out / 'tests.xml').is_file():
  suite = ET.parse(out / 'tests.xml').getroot()
  suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
  tests = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
result = {
    'devices': [str(d) for d in jax.devices()], 'backend': jax.default_backend(), 'jax': jax.__version__,
    'steps': steps, 'benchmark': bench,
    'quickstart_gpu': None if quick is None else {
        'test_accuracy': quick['test_accuracy'], 'num_test': quick['num_test'],
        'localisation': {k: {m: v[m] for m in ('gt_known_box_accuracy', 'top1_loc_error', 'top5_loc_error')}
                         for k, v in quick['localisation'].items()},
        'seconds': quick['seconds']},
    'tests': tests,
}
(out / 'accelerator_check.json').write_text(json.dumps(result, indent=2) + '\n')
print(json.dumps({k: result[k] for k in ('devices', 'steps', 'tests')}, indent=2))
PY
