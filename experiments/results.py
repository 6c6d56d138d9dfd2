"""The README's results, generated from the JSON kept in results/.

  python experiments/results.py keep quickstart     # copy a finished run's JSON to results/quickstart.json
  python experiments/results.py readme              # rewrite every generated block of README.md
  python experiments/results.py readme --check      # exit 1 when README.md differs from results/

Every entry of `RESULTS` names the command that makes a JSON file and where that command writes it;
`keep` copies that file, unchanged, into results/. A generated block of the README is delimited by
`<!-- results: NAME/PART -->` and `<!-- /results -->`; `readme` replaces its body by
`RENDER[PART](json of NAME)`, preceded by the command and the file. tests/test_readme.py checks that
the README's blocks equal what results/ gives and that no table with a number stands outside a block.
"""

import json
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / 'results'

# name: (the command that makes the JSON, the file it writes)
RESULTS = {
    'quickstart': ('python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart',
                   'runs/quickstart/metrics.json'),
    'cifar_resnets': ('python experiments/evaluate_cifar_resnets.py '
                      '--config configs/cifar_resnet_import_check.py --workdir runs/cifar_resnets',
                      'runs/cifar_resnets/cifar_resnets.json'),
}

BLOCK = re.compile(r'(<!-- results: (?P<name>[\w.-]+)/(?P<part>[\w.-]+) -->\n)(?P<body>.*?)'
                   r'(<!-- /results -->)', re.S)


def load(name: str) -> dict:
  path = RESULTS_DIR / f'{name}.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: run `{RESULTS[name][0]}`, then '
                            f'`python experiments/results.py keep {name}`')
  return json.loads(path.read_text())


def _f(x, digits: int = 3) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def fallbacks(r: dict) -> int:
  """Boxes of one localisation method that came from a fallback (any status but 'ok')."""
  return sum(n for status, n in r['status'].items() if status != 'ok')


# ----------------------------------------------------------------------------- renderers


def localisation_table(m: dict) -> str:
  """A main-job metrics.json: one row per localisation method (the selected one in bold)."""
  k = m['config']['top_k']
  selected = m.get('selected_method') or ''
  head = '| method | GT-known box accuracy | top-1 loc. error |' + (f' top-{k} loc. error |' if k > 1 else '')
  head += ' fallback boxes |'
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  n = m['num_eval'] * (k + 1)
  for name, r in m['localisation'].items():
    label = f'**{name}** (selected)' if name == selected else name
    row = f"| {label} | {_f(r['gt_known_box_accuracy'])} | {_f(r['top1_loc_error'])} |"
    if k > 1:
      row += f" {_f(r[f'top{k}_loc_error'])} |"
    lines.append(row + f' {fallbacks(r)} of {n} |')
  return '\n'.join(lines)


def main_job_summary(m: dict) -> str:
  """Test accuracy, evaluated images, pointing game of a main-job metrics.json."""
  k = m['config']['top_k']
  out = (f"Test accuracy {_f(m['test_accuracy'])} on {m['num_test']} images; {m['num_eval']} images "
         f"mapped and localised (top-{k} accuracy {_f(m[f'top{k}_accuracy_eval'])}).")
  if 'pointing_game' in m:
    out += (f" Pointing game (true class, tolerance {m['config']['pointing_tolerance']} px): "
            f"{_f(m['pointing_game'])} per image")
    if 'pointing_game_class_mean' in m:
      out += f", {_f(m['pointing_game_class_mean'])} per-class mean"
    out += '.'
  return out


def class_models_table(m: dict) -> str:
  c = m['class_models']
  lines = ['| class | ' + ' | '.join(c['names']) + ' |', '|---' * (len(c['names']) + 1) + '|',
           '| class model score | ' + ' | '.join(f'{v:.1f}' for v in c['score']) + ' |',
           '| best real test image | ' + ' | '.join(f'{v:.1f}' for v in c['best_real_score']) + ' |']
  return '\n'.join(lines)


def cifar_import_table(r: dict) -> str:
  """evaluate_cifar_resnets.py: JAX against PyTorch on the same weights, and accuracy on the mapped images."""
  lines = ['| checkpoint | logits max abs diff, float32 / float64 (max logit) | input gradients, float64: '
           'max abs diff | input gradients, float32: median per image / images over 1e-4 (worst) | '
           'top-1 on mapped images | always the majority class |', '|---|---|---|---|---|---|']
  for name, m in r['models'].items():
    f32, f64, acc = m['torch_vs_jax']['float32'], m['torch_vs_jax']['float64'], m['accuracy']
    lines.append(f"| {name} | {f32['logits_max_abs_diff']:.1e} / {f64['logits_max_abs_diff']:.1e} "
                 f"({f32['logits_max_abs']:.1f}) | {f64['grads_max_abs_diff']:.1e} | "
                 f"{f32['grads_median_image_max_abs_diff']:.1e} / {f32['grads_images_over_0.0001']} "
                 f"({f32['grads_max_abs_diff']:.1e}) | {acc['top1']:.1%} ({acc['correct']}/{acc['n']}) | "
                 f"{acc['majority_class_baseline']:.1%} ({acc['majority_class']}) |")
  return '\n'.join(lines)


RENDER = {
    'localisation': localisation_table,
    'summary': main_job_summary,
    'class_models': class_models_table,
    'import': cifar_import_table,
}


# ----------------------------------------------------------------------------- commands


def render_block(name: str, part: str) -> str:
  if name not in RESULTS:
    raise KeyError(f'README block {name}/{part}: no entry {name!r} in RESULTS of {__file__}')
  if part not in RENDER:
    raise KeyError(f'README block {name}/{part}: no renderer {part!r}, one of {sorted(RENDER)}')
  command = RESULTS[name][0]
  return (f'`{command}` &rarr; [`results/{name}.json`](results/{name}.json)\n\n'
          f'{RENDER[part](load(name))}\n')


def render_readme(text: str) -> str:
  """`text` with the body of every generated block replaced from results/."""
  return BLOCK.sub(lambda m: m.group(1) + render_block(m['name'], m['part']) + m.group(5), text)


def keep(name: str) -> None:
  if name not in RESULTS:
    raise SystemExit(f'unknown result {name!r}: one of {sorted(RESULTS)}')
  command, made = RESULTS[name]
  source = ROOT / made
  if not source.is_file():
    raise SystemExit(f'{source} not found: run `{command}` first')
  RESULTS_DIR.mkdir(exist_ok=True)
  shutil.copyfile(source, RESULTS_DIR / f'{name}.json')
  print(f'{source} -> {RESULTS_DIR / f"{name}.json"}')


def main(argv: list[str]) -> int:
  if len(argv) >= 2 and argv[0] == 'keep':
    for name in argv[1:]:
      keep(name)
    return 0
  if argv and argv[0] == 'readme' and set(argv[1:]) <= {'--check'}:
    path = ROOT / 'README.md'
    text = path.read_text()
    new = render_readme(text)
    if '--check' in argv:
      if new != text:
        print('README.md differs from results/: run `python experiments/results.py readme`')
        return 1
      return 0
    path.write_text(new)
    print(f'{path}: {len(BLOCK.findall(text))} generated blocks')
    return 0
  print(__doc__)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
