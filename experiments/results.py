"""The results of the README and of the documentation in docs/, generated from the JSON kept in results/.

  python experiments/results.py keep quickstart     # copy a finished run's JSON to results/quickstart.json
  python experiments/results.py readme              # rewrite every generated block of README.md and docs/
  python experiments/results.py readme --check      # exit 1 when a page differs from results/

Every entry of `RESULTS` names the command that makes a JSON file and where that command writes it;
`keep` copies that file, unchanged, into results/. A generated block of the README is delimited by
`<!-- results: NAME/PART -->` and `<!-- /results -->`; `readme` replaces its body by
`RENDER[PART](json of NAME)`, preceded by the command and the file; the name `all` gives the renderers
of `RENDER_ALL` every kept result at once. A number in prose is a value:
`<!-- value: NAME/POINTER FORMAT -->TEXT<!-- /value -->`, TEXT being `format(x, FORMAT)` of the value x
at the JSON pointer POINTER (RFC 6901: keys joined by '/', a '/' in a key written '~1') of
results/NAME.json; results/cited.json holds the numbers cited from papers, each with its source.
tests/test_docs.py checks that the blocks and values of every page (`pages()`) equal what results/ gives
and that no decimal, percentage or ratio stands in their prose otherwise (settings they name are checked
against the code).
"""

import functools
import importlib.util
import json
import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / 'results'

# name: (entry point in experiments/, config in configs/, workdir in runs/, the JSON file it writes there,
# extra flags)
RESULTS = {
    'quickstart': ('reproduce', 'quickstart.py', 'quickstart', 'metrics.json', ''),
    'cifar_resnets': ('evaluate_cifar_resnets', 'cifar_resnet_import_check.py', 'cifar_resnets',
                      'cifar_resnets.json', ''),
    'deconvnet_vs_gradient': ('deconvnet_vs_gradient', 'deconvnet_vs_gradient.py', 'deconvnet_vs_gradient',
                              'equivalence.json', ''),
    'localisation_sweep_synthetic': ('sweep_localisation', 'localisation_sweep.py',
                                     'localisation_sweep_synthetic', 'sweep.json', ''),
    'localisation_sweep_imagenet': ('sweep_localisation', 'localisation_sweep.py:imagenet',
                                    'ilsvrc_mobilenet_sample', 'sweep.json', ''),
    'ilsvrc_mobilenet_report': ('reproduce', 'ilsvrc_mobilenet_sample.py', 'ilsvrc_mobilenet_report',
                                'metrics.json', '--config.data.part=report'),
    'benchmark_any_model': ('benchmark_any_model', 'benchmark_any_model.py', 'benchmark',
                            'benchmark_any_model.json', ''),
    'benchmark_protocol': ('benchmark_protocol', 'benchmark_protocol.py', 'benchmark',
                           'benchmark_protocol.json', ''),
    'benchmark_memory': ('benchmark_memory', 'benchmark_memory.py', 'benchmark_memory',
                         'benchmark_memory.json', ''),
    'localisation_study': ('sweep_localisation', 'localisation_sweep.py:study', 'ilsvrc_mobilenet_study',
                           'sweep.json', ''),
    'localisation_cuts': ('sweep_localisation', 'localisation_sweep.py:cuts', 'ilsvrc_mobilenet_cuts',
                          'sweep.json', ''),
    'localisation_methods': ('sweep_localisation', 'localisation_sweep.py:methods',
                             'ilsvrc_mobilenet_methods', 'sweep.json', ''),
    'localisation_costly': ('sweep_localisation', 'localisation_sweep.py:costly', 'ilsvrc_mobilenet_costly',
                            'sweep.json', ''),
    'localisation_masked': ('sweep_localisation', 'localisation_sweep.py:masked', 'ilsvrc_mobilenet_masked',
                            'sweep.json', ''),
    'localisation_shap': ('sweep_localisation', 'localisation_sweep.py:shap', 'ilsvrc_mobilenet_shap',
                          'sweep.json', ''),
    'localisation_rise_softmax': ('sweep_localisation', 'localisation_sweep.py:rise_softmax',
                                  'ilsvrc_mobilenet_rise_softmax', 'sweep.json', ''),
    'compare_attributions': ('compare_attributions', 'compare_attributions.py', 'quickstart',
                             'comparison.json', ''),
    'benchmark_methods': ('benchmark_methods', 'benchmark_methods.py', 'benchmark', 'benchmark_methods.json',
                          ''),
}
# figures kept in results/figures: (the file a command writes in runs/, the figure's name in results/figures)
FIGURES = {'compare_attributions': ('comparison.png', 'attributions_synthetic.png')}


def command(name: str) -> str:
  script, config, workdir, _, flags = RESULTS[name]
  return f'python experiments/{script}.py --config configs/{config} --workdir runs/{workdir} {flags}'.strip()


def made_by(name: str) -> pathlib.Path:
  _, _, workdir, file, _ = RESULTS[name]
  return ROOT / 'runs' / workdir / file


BLOCK = re.compile(r'(<!-- results: (?P<name>[\w.-]+)/(?P<part>[\w.-]+) -->\n)(?P<body>.*?)'
                   r'(<!-- /results -->)', re.S)


VALUE = re.compile(r'<!-- value: (?P<name>[\w.-]+)/(?P<pointer>\S+) (?P<format>\S+) -->(?P<body>.*?)'
                   r'<!-- /value -->', re.S)


def pages() -> list[pathlib.Path]:
  """The pages whose blocks and values are generated: README.md and every page of docs/."""
  return [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def load(name: str) -> dict:
  path = RESULTS_DIR / f'{name}.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: run `{command(name)}`, then '
                            f'`python experiments/results.py keep {name}`')
  return json.loads(path.read_text())


def _f(x, digits: int = 3) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


# ----------------------------------------------------------------------------- renderers


def localisation_table(m: dict) -> str:
  """A main-job metrics.json: one row per localisation method (`pipeline.table`)."""
  from saliency_jax.jobs import pipeline
  return pipeline.table(m)


def wsol_table(m: dict) -> str:
  """A main-job metrics.json: MaxBoxAccV2 (and PxAP with masks) of each map (`pipeline.wsol_table`)."""
  from saliency_jax.jobs import pipeline
  return pipeline.wsol_table(m)


def comparisons(m: dict) -> str:
  """A main-job metrics.json with a selected method: the pick against the paper's cut, the best other and
  the best baseline on the same images, paired (`pipeline.comparison_lines`)."""
  from saliency_jax.jobs import pipeline
  if 'comparisons' not in m:
    return 'Kept without paired comparisons: rerun the command.'
  return '\n'.join(pipeline.comparison_lines(m)).strip()


def failures_table(r: dict) -> str:
  """A main-job metrics.json with failure_analysis: why the guesses fail (`pipeline.failures_table`)."""
  from saliency_jax.jobs import pipeline
  return pipeline.failures_table(r)


def sweep_table(r: dict) -> str:
  """A localisation sweep's sweep.json: every setting on both parts (`jobs.sweep.table`)."""
  from saliency_jax.jobs import sweep
  return sweep.table(r)


def sweep_pick(r: dict) -> str:
  """A sweep.json: how stable the pick is, and the pick against the paper's setting on the report part."""
  from saliency_jax.jobs import sweep
  return '\n'.join(sweep.pick_lines(r)).strip() or 'Kept without per-image results: rerun the command.'


def sweep_wsol(r: dict) -> str:
  """A sweep.json: MaxBoxAccV2 of every map, its thresholds chosen on the selection part
  (`jobs.sweep.wsol_table`)."""
  from saliency_jax.jobs import sweep
  return sweep.wsol_table(r) if 'wsol' in r else 'Kept without MaxBoxAccV2: rerun the command.'


def _study_matrix(r: dict, part: str) -> str:
  """Top-k localisation error of every map x cut of the study's first run with its 95% interval (the
  later rows, `_later_rows`, are the cuts sweep's table)."""
  from saliency_jax import report
  k = r['config']['top_k']
  metric = f'top{k}_loc_error'
  later = _later_rows(r)
  names = [name for name in r['settings'] if '/' in name and name not in later]
  maps = list(dict.fromkeys(name.split('/')[0] for name in names))
  cuts = list(dict.fromkeys(name.split('/')[1] for name in names))
  lines = ['| map \\ cut | ' + ' | '.join(c.replace('_', ' ') for c in cuts) + ' |',
           '| --- |' + ' --- |' * len(cuts)]
  for m in maps:
    cells = []
    for c in cuts:
      name = f'{m}/{c}'
      if name not in r['settings']:
        cells.append('')
        continue
      v = report.cell(r['settings'][name][part], metric)
      cells.append(f'**{v}**' if name == r['selected'] else f'*{v}*' if name == r['paper'] else v)
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  rest = [name for name in r['settings'] if '/' not in name]
  lines.append('')
  without = [f"{n.replace('_', ' ')} {report.cell(r['settings'][n][part], metric)}" for n in rest]
  lines.append('Without a map: ' + ', '.join(without) + '.')
  if later:
    lines.append(f'The {len(later)} GraphCut settings on the grad_cam_pw12 maps added later: the cuts '
                 "sweep's table below.")
  return '\n'.join(lines)


def study_report(r: dict) -> str:
  """The study's sweep.json: top-k localisation error of every map x cut on the report part with its 95%
  interval (the pick in bold, the paper's pair in italics), the pick against the paper's, and the pick of
  the study's first run."""
  from saliency_jax.jobs import sweep
  k = r['config']['top_k']
  sel, paper = r['settings'][r['selected']], r['settings'][r['paper']]
  metric = f'top{k}_loc_error'
  head = (f"Report part ({r['parts']['report']['num_images']} images), top-{k} localisation error. Picked on "
          f"the selection part ({r['parts']['selection']['num_images']} images): **{r['selected']}**, "
          f"{_f(sel['selection'][metric])} there; on the report part {_f(sel['report'][metric])} "
          f"(GT-known {_f(sel['report']['gt_known_box_accuracy'])}, top-1 "
          f"{_f(sel['report']['top1_loc_error'])}) "
          f"against the paper's *{r['paper']}* {_f(paper['report'][metric])} (GT-known "
          f"{_f(paper['report']['gt_known_box_accuracy'])}, top-1 {_f(paper['report']['top1_loc_error'])}).")
  later = _later_rows(r)
  if later:
    table = {name: row['selection'] for name, row in r['settings'].items() if name not in later}
    first = sweep.choose(table, [tuple(c) for c in r['criterion']], r['config']['sweep']['grid'])
    row = r['settings'][first]
    head += (f' Without the {len(later)} GraphCut settings on the grad_cam_pw12 maps added after its first '
             f"run (`PW12_GRAPHCUTS`), the pick is **{first}**, {_f(row['selection'][metric])} there and "
             f"{_f(row['report'][metric])} on the report part: the study's held-out pick.")
  return head + '\n\n' + _study_matrix(r, 'report')


def _later_rows(r: dict) -> set[str]:
  """The study's rows added after its first run: `PW12_GRAPHCUTS` of configs/localisation_sweep.py."""
  path = ROOT / 'configs' / 'localisation_sweep.py'
  spec = importlib.util.spec_from_file_location('localisation_sweep', path)
  config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config)
  return {f'grad_cam_pw12/graphcut_{c}' for c in config.PW12_GRAPHCUTS} & set(r['settings'])


def study_selection(r: dict) -> str:
  """The study's sweep.json: the same matrix on the selection part, where the pick was made."""
  k = r['config']['top_k']
  return (f"Selection part ({r['parts']['selection']['num_images']} images), top-{k} localisation error:\n\n"
          + _study_matrix(r, 'selection'))


def rules_speed(r: dict) -> str:
  """benchmark_any_model.json: seconds per call with the rule injected (`relu=`) and found by program
  transformation, per rule, and their ratio."""
  lines = ['| rule | injected `relu=` (s) | by transformation (s) | ratio |', '| --- | --- | --- | --- |']
  for name, row in r['rules'].items():
    m = row['median_seconds']
    ratio = row['transformed_over_injected']
    lines.append(f"| {name} | {m['injected']:.3f} | {m['transformed']:.3f} | {ratio:.3f} |")
  found = r['rectifications_found']
  return '\n'.join(lines) + (f"\n\nMedians of {r['config']['repeats']} alternating runs; "
                             f"{r['num_images']} images, top-5 maps of 10 crops each; rectifications found "
                             f"in the traced program: {found['relu']} ReLU, {found['relu6']} relu6.")


def protocol_speed(r: dict) -> str:
  """benchmark_protocol.json: the ILSVRC protocol's images/s before and after, and the stages."""
  lines = ['| config | images/s (median) | seconds per run |', '| --- | --- | --- |']
  for name, runs in r['runs'].items():
    lines.append(f"| {name} | {r['median_images_per_s'][name]:.3f} | "
                 + ', '.join(f"{x['seconds']:.0f}" for x in runs) + ' |')
  out = '\n'.join(lines) + f"\n\nSpeed-up after / before: {r['speedup']:.2f}x"
  others = {name: v for name, v in r.get('speedups', {}).items() if name != 'after'}
  if others:
    out += ' (' + ', '.join(f'{name} {v:.2f}x' for name, v in others.items()) + ')'
  return out + f" on {r['num_images']} images, {r['repeats']} alternating runs of each."


def protocol_stages(r: dict) -> str:
  """benchmark_protocol.json: each run's seconds of maps and of localisation per repeat, and whether the
  localisation errors of the methods it shares with the before run are the before run's."""
  def maps(stages):
    return stages['saliency'] + sum(v for k, v in stages.items() if k.startswith('maps_'))
  before = r['runs']['before'][0]['top5_loc_error']
  lines = ['| run | maps, s per repeat | localisation, s per repeat | top-5 loc. error as before '
           '(shared methods) |', '| --- | --- | --- | --- |']
  for name, runs in r['runs'].items():
    errors = runs[0]['top5_loc_error']
    shared = sorted(set(errors) & set(before))
    same = sum(errors[m] == before[m] for m in shared)
    cells = [', '.join(f"{maps(x['stages']):.0f}" for x in runs),
             ', '.join(f"{x['stages']['localisation']:.0f}" for x in runs), f'{same} of {len(shared)}']
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def memory(r: dict) -> str:
  """benchmark_memory.json: the main job's peak RSS against the number of test images, per malloc."""
  lines = ['| malloc | test images | peak RSS (MiB) | ratio to the smallest | seconds | evaluation chunk |',
           '| --- | --- | --- | --- | --- | --- |']
  for x in r['runs']:
    malloc = x.get('malloc', 'default')
    ratios = r['peak_rss_ratio'].get(malloc, r['peak_rss_ratio'])  # older files: one malloc, no level
    lines.append(f"| {malloc} | {x['num_test']} | {x['peak_rss_mib']:.0f} | {ratios[str(x['num_test'])]:.2f} "
                 f"| {x['seconds']:.0f} | {x['eval_chunk']} |")
  return '\n'.join(lines)


def main_job_summary(m: dict) -> str:
  """Test accuracy, evaluated images, pointing game and seconds per stage of a main-job metrics.json; the
  accuracies with their exact binomial 95% intervals where the file has them."""
  from saliency_jax.jobs import pipeline
  k, accuracy = m['config']['top_k'], functools.partial(pipeline.accuracy_text, m)
  out = (f"Test accuracy {accuracy('test_accuracy')} on {m['num_test']} images; {m['num_eval']} images "
         f"mapped and localised (top-1 / top-{k} accuracy {accuracy('top1_accuracy_eval')} / "
         f"{accuracy(f'top{k}_accuracy_eval')}).")
  if 'pointing_game' in m:
    out += (f" Pointing game (true class, tolerance {m['config']['pointing_tolerance']} px): "
            f"{_f(m['pointing_game'])} per image, {_f(m['pointing_game_class_mean'])} per-class mean.")
  if m.get('bad_records'):
    out += f" {len(m['bad_records'])} bad records skipped (listed in the JSON)."
  out += ' Seconds: ' + ', '.join(f'{stage} {s:.0f}' for stage, s in m['seconds'].items()) + '.'
  return out


def class_models_table(m: dict) -> str:
  c = m['class_models']
  lines = ['| class | ' + ' | '.join(c['names']) + ' |', '|---' * (len(c['names']) + 1) + '|',
           '| class model score | ' + ' | '.join(f'{v:.1f}' for v in c['score']) + ' |',
           '| best real test image | ' + ' | '.join(f'{v:.1f}' for v in c['best_real_score']) + ' |']
  return '\n'.join(lines)


def cifar_import_table(r: dict) -> str:
  """evaluate_cifar_resnets.py: JAX against PyTorch on the same weights, and accuracy on the mapped images
  with its 95% interval."""
  from saliency_jax import report
  lines = ['| checkpoint | logits max abs diff, float32 / float64 (max logit) | input gradients, float64: '
           'max abs diff | input gradients, float32: median per image / images over 1e-4 (worst) | '
           'top-1 on mapped images [95% interval] | always the majority class |', '|---|---|---|---|---|---|']
  for name, m in r['models'].items():
    f32, f64, acc = m['torch_vs_jax']['float32'], m['torch_vs_jax']['float64'], m['accuracy']
    lines.append(f"| {name} | {f32['logits_max_abs_diff']:.1e} / {f64['logits_max_abs_diff']:.1e} "
                 f"({f32['logits_max_abs']:.1f}) | {f64['grads_max_abs_diff']:.1e} | "
                 f"{f32['grads_median_image_max_abs_diff']:.1e} / {f32['grads_images_over_0.0001']} "
                 f"({f32['grads_max_abs_diff']:.1e}) | "
                 f"{report.with_interval(acc['top1'], acc.get('top1_interval'), '.1%')} "
                 f"({acc['correct']}/{acc['n']}) | "
                 f"{acc['majority_class_baseline']:.1%} ({acc['majority_class']}) |")
  return '\n'.join(lines)


def _worst(rows: list[dict], key: str, precision: str) -> float:
  return max(abs(r[key]) for r in rows if r['precision'] == precision)


def proof_table(r: dict) -> str:
  """deconvnet_vs_gradient.py: one row per claim of Sect. 4, the worst measurement over every network and
  start layer, float64 (float32)."""
  claims: dict[str, list[dict]] = {}
  for row in r['rows']:
    claims.setdefault(row['claim'], []).append(row)
  lines = ['| claim (paper Sect. 4) | checks confirmed | measured, float64 (float32), worst case |',
           '|---|---|---|']
  for claim, rows in claims.items():
    keys = set(rows[0]) - {'precision', 'claim', 'setting', 'measured', 'confirmed'}
    if 'same_set' in keys and 'units' in keys:  # the ReLU layer
      r64 = next(x for x in rows if x['precision'] == 'float64')
      measured = (f"{r64['differ']} of {r64['units']} units differ, {r64['disagree']} gates disagree, "
                  f"same set: {r64['same_set']}")
    elif 'other_steps_max_rel_diff' in keys:
      differ = sum(x['differ'] for x in rows if x['precision'] == 'float64')
      disagree = sum(x['disagree'] for x in rows if x['precision'] == 'float64')
      measured = (f'{differ} units where the rules differ, {disagree} gate disagreements (summed); '
                  f"every other step max rel diff {_worst(rows, 'other_steps_max_rel_diff', 'float64'):.1e} "
                  f"({_worst(rows, 'other_steps_max_rel_diff', 'float32'):.1e})")
    elif 'has_max_pool' in keys:
      pooled = [x for x in rows if not x['has_max_pool'] and not x.get('has_clip')]
      measured = ('without max-pooling, DeconvNet maps of one class differ between images by '
                  f"{max(x['max_rel_diff_between_images'] for x in pooled):.1e} (gradient maps: at least "
                  f"{min(x['gradient_max_rel_diff_between_images'] for x in pooled):.1e})" if pooled else '-')
      clipped = [x for x in rows if x.get('has_clip') and not x['has_max_pool']]
      if clipped:
        measured += ('; with relu6 clips and no max-pooling (MobileNet), by at least '
                     f"{min(x['max_rel_diff_between_images'] for x in clipped):.1e}")
    else:
      key = 'max_rel_diff' if 'max_rel_diff' in keys else 'max_abs_diff'
      measured = (f"{key.replace('_', ' ')} {_worst(rows, key, 'float64'):.1e} "
                  f"({_worst(rows, key, 'float32'):.1e})")
    lines.append(f"| {claim} | {sum(x['confirmed'] for x in rows)} of {len(rows)} | {measured} |")
  return '\n'.join(lines)


def similarity_table(r: dict) -> str:
  """deconvnet_vs_gradient.py: Spearman of the three rules' maps and the cascading randomisation check."""
  lines = ['| trained network (test accuracy) | images | gradient vs DeconvNet | gradient vs guided | '
           'DeconvNet vs guided | rho after re-drawing the top layer: gradient / DeconvNet / guided | '
           '... every layer |',
           '|---|---|---|---|---|---|---|']
  for name, s in r['similarity'].items():
    rho, c = s['mean_spearman'], r['sanity_check'][name]
    top = ' / '.join(f'{c[m][0]:.2f}' for m in ('gradient', 'deconvnet', 'guided'))
    every = ' / '.join(f'{c[m][-1]:.2f}' for m in ('gradient', 'deconvnet', 'guided'))
    lines.append(f"| {name} ({r['accuracy'][name]:.3f}) | {s['num_images']} | "
                 f"{rho['gradient vs deconvnet']:.2f} | {rho['gradient vs guided']:.2f} | "
                 f"{rho['deconvnet vs guided']:.2f} | {top} | {every} |")
  return '\n'.join(lines)


def clips_table(r: dict) -> str:
  """deconvnet_vs_gradient.py: per network with relu6 clips, the units whose input reaches the clip."""
  lines = ['| network | clip layers | units | units at or above 6 (no signal back under any rule) | '
           'most clipped layer |', '|---|---|---|---|---|']
  for name, clips in r.get('relu6_clips', {}).items():
    units = sum(c['units'] for c in clips.values())
    clipped = sum(c['clipped'] for c in clips.values())
    worst = max(clips, key=lambda k: clips[k]['clipped'] / clips[k]['units'])
    lines.append(f"| {name} | {len(clips)} | {units} | {clipped} ({_f(clipped / units, 4)}) | {worst} "
                 f"({_f(clips[worst]['clipped'] / clips[worst]['units'], 4)}) |")
  return '\n'.join(lines)


def anchor_speed(r: dict) -> str:
  """benchmark_methods.json: seconds per call of each method and of its anchor, medians, and the ratio;
  the gradient's bare jitted VJP and a forward pass under three sets of compiler options."""
  before = 'jax_ynn_convolutions' in next(iter(r['methods'].values()))['median_seconds']
  lines = ['| method | package (s) | anchor (s) | anchor / package | rounds |' + (
               ' package under `ynn_convolutions` (s) | that / package |' if before else ''),
           '| --- | --- | --- | --- | --- |' + (' --- | --- |' if before else '')]
  for name, m in r['methods'].items():
    s = m['median_seconds']
    lines.append(f"| {name} | {s['jax']:.4f} | {s['anchor']:.4f} | {m['speedup']:.2f}x | "
                 f"{len(m['seconds']['jax'])} |" + (
                     f" {s['jax_ynn_convolutions']:.4f} | {s['jax_ynn_convolutions'] / s['jax']:.2f}x |"
                     if before else ''))
  out = '\n'.join(lines)
  c = r['config']
  medium = f", those under {c['medium_below']} s {c['medium_repeats']} rounds" if 'medium_below' in c else ''
  out += (f"\n\nMedians of alternating rounds after untimed calls; the millisecond methods (both sides under "
          f"{c.get('fast_below', 0)} s) {c.get('fast_repeats', r['repeats'])} rounds, each timed call after "
          f"{c.get('settle', 0)} untimed ones{medium}, the others {r['repeats']}; {r['num_images']} images "
          f"at {r['image_size']} px; PyTorch on {r['torch_threads']} threads.")
  g = r['methods'].get('gradient', {}).get('median_seconds', {})
  if 'bare_ynn_convolutions' in g:
    default, ynn, no_ynn = g['bare_default'], g['bare_ynn_convolutions'], g['bare_no_ynn_convolutions']
    out += (f" Where the gradient's time goes, in the same rounds: the same VJP jitted bare (no checks) "
            f"takes {default:.4f} s with XLA's default options ({g['anchor'] / default:.2f}x the anchor's "
            f"speed), {ynn:.4f} s with the package's (XLA:CPU's older fusion emitters; "
            f"`ynn_convolutions`, as before) and {no_ynn:.4f} s with those and YNNPACK's convolutions off "
            f"(`no_ynn_convolutions`, the package's default for its backward passes; "
            f"{g['anchor'] / no_ynn:.2f}x); the package's call takes {g['jax']:.4f} s, "
            f"{g['jax'] - no_ynn:.4f} s more than its bare VJP: its checks.")
  if 'forward_options' in r:
    f = r['forward_options']['median_seconds']
    out += (f" A forward pass of {r['forward_options']['batch']} images, alternating: {f['default']:.4f} s "
            f"with XLA's default options, {f['ynn_convolutions']:.4f} s with the package's (its forward "
            f"passes' options), {f['no_ynn_convolutions']:.4f} s with YNNPACK's convolutions off as well.")
  return out


def method_costs(r: dict) -> str:
  """comparison.json: milliseconds per image of each method's maps (median of the timing runs)."""
  lines = ['| method | ms per image |', '| --- | --- |']
  lines += [f"| {name} | {m['ms_per_image']:.2f} |" for name, m in r['methods'].items()]
  return '\n'.join(lines) + (f"\n\n{r['num_images']} images; the median of "
                             f"{r['config']['compare']['timing_repeats']} runs after compilation.")


# ----------------------------------------------------------------------------- every result at once


def _stages(seconds) -> str:
  """A run's recorded seconds: its total, or its largest stages."""
  if not isinstance(seconds, dict):
    return f'{seconds:.0f} in all'
  top = sorted(seconds.items(), key=lambda kv: -kv[1])[:4]
  return ', '.join(f'{stage} {s:.0f}' for stage, s in top)


def costs(kept: dict, docs: str = 'docs/') -> str:
  """Every kept run that recorded its seconds: its command and its largest stages."""
  lines = ['| result | command | seconds the kept run recorded |', '| --- | --- | --- |']
  for name, r in kept.items():
    if isinstance(r, dict) and 'seconds' in r:
      lines.append(f'| {name} | `{command(name)}` | {_stages(r["seconds"])} |')
  return '\n'.join(lines)


def key_results(kept: dict, docs: str = 'docs/') -> str:
  """The headline numbers, each with its 95% interval and the page that has the rest (under `docs`)."""
  from saliency_jax import report
  q, im, proof = kept['quickstart'], kept['ilsvrc_mobilenet_report'], kept['deconvnet_vs_gradient']
  cited, protocol = kept['cited'], kept['benchmark_protocol']

  def loc(m, method, key='top5_loc_error'):
    x = m['localisation'][method]
    return report.with_interval(x[key], x['intervals'][key])

  pick = im['selected_method']
  confirmed = sum(x['confirmed'] for x in proof['rows'])
  quick, imagenet = 'results/quickstart.md', 'results/imagenet.md'
  rows = [
      ('Synthetic set (quickstart), SmallConvNet: test accuracy', q['num_test'],
       report.with_interval(q['test_accuracy'], q['accuracy_intervals']['test_accuracy']), quick),
      ("Synthetic set: top-5 localisation error, the paper's GraphCut", q['num_eval'], loc(q, 'graphcut'),
       quick),
      ("ImageNet val sample, MobileNet v1 (report half): top-5 localisation error, the paper's pair",
       im['num_eval'], loc(im, 'graphcut'), imagenet),
      ('... the full-image box (baseline)', im['num_eval'], loc(im, 'full_image'), imagenet),
      (f'... the pair picked on the selection half, `{pick}` (a second look, see its page)', im['num_eval'],
       loc(im, pick), imagenet),
      ("... the paper's own net on ILSVRC-2013 test (cited, not measured here)", '-',
       cited['paper_top5_loc_error']['value'], imagenet),
      ('Sect. 4: checks of the gradient / DeconvNet proof confirmed', '-',
       f'{confirmed} of {len(proof["rows"])}', 'results/deconvnet.md'),
      ('ILSVRC protocol on 2 CPU cores: images/s against the starting code (medians of '
       f"{protocol['repeats']} runs)", protocol['num_images'], f"{protocol['speedup']:.2f}x",
       'results/speed.md'),
  ]
  lines = ['| result | images | value [95% interval] | details |', '| --- | --- | --- | --- |']
  lines += [f'| {what} | {n} | {value} | [{page}]({docs}{page}) |' for what, n, value, page in rows]
  return '\n'.join(lines)


RENDER_ALL = {'costs': costs, 'key_results': key_results}


RENDER = {
    'localisation': localisation_table,
    'sweep': sweep_table,
    'pick': sweep_pick,
    'sweep_wsol': sweep_wsol,
    'summary': main_job_summary,
    'class_models': class_models_table,
    'import': cifar_import_table,
    'proof': proof_table,
    'similarity': similarity_table,
    'clips': clips_table,
    'failures': failures_table,
    'comparisons': comparisons,
    'wsol': wsol_table,
    'study': study_report,
    'rules_speed': rules_speed,
    'protocol_speed': protocol_speed,
    'protocol_stages': protocol_stages,
    'memory': memory,
    'study_selection': study_selection,
    'method_costs': method_costs,
    'anchor_speed': anchor_speed,
}


# ----------------------------------------------------------------------------- commands


def render_block(name: str, part: str, *, page: pathlib.Path | None = None) -> str:
  """A generated block's body: the command and file, then `RENDER[part]` of results/NAME.json; with the name
  `all`, `RENDER_ALL[part]` of every kept result. page: where the block stands (None: the README), for its
  links: the README links the JSON files, the docs (built by MkDocs, which serves docs/ alone) name them."""
  page = page or ROOT / 'README.md'
  link = page.name == 'README.md'
  docs = 'docs/' if link else os.path.relpath(ROOT / 'docs', page.parent).replace(os.sep, '/') + '/'
  if name == 'all':
    if part not in RENDER_ALL:
      raise KeyError(f'block all/{part}: no renderer {part!r}, one of {sorted(RENDER_ALL)}')
    kept = {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS_DIR.glob('*.json'))}
    return f'Generated from every JSON kept in `results/`.\n\n{RENDER_ALL[part](kept, docs)}\n'
  if name not in RESULTS:
    raise KeyError(f'block {name}/{part}: no entry {name!r} in RESULTS of {__file__}')
  if part not in RENDER:
    raise KeyError(f'block {name}/{part}: no renderer {part!r}, one of {sorted(RENDER)}')
  file = f'[`results/{name}.json`](results/{name}.json)' if link else f'`results/{name}.json`'
  return f'`{command(name)}` &rarr; {file}\n\n{RENDER[part](load(name))}\n'


def value(name: str, pointer: str):
  """The value at a JSON pointer ('settings/a~1b/report') of results/NAME.json."""
  x = load(name)
  for key in pointer.split('/'):
    key = key.replace('~1', '/').replace('~0', '~')
    try:
      x = x[int(key)] if isinstance(x, list) else x[key]
    except (KeyError, IndexError, ValueError):
      raise KeyError(f'README value {name}/{pointer}: results/{name}.json has no {key!r} there') from None
  return x


def render_value(m: re.Match) -> str:
  return (f"<!-- value: {m['name']}/{m['pointer']} {m['format']} -->"
          f"{format(value(m['name'], m['pointer']), m['format'])}<!-- /value -->")


def render_page(text: str, page: pathlib.Path | None = None) -> str:
  """`text` with the body of every generated block and every value replaced from results/; page: as
  `render_block` takes it."""
  text = BLOCK.sub(lambda m: m.group(1) + render_block(m['name'], m['part'], page=page) + m.group(5), text)
  return VALUE.sub(render_value, text)


def keep(name: str) -> None:
  if name not in RESULTS:
    raise SystemExit(f'unknown result {name!r}: one of {sorted(RESULTS)}')
  source = made_by(name)
  if not source.is_file():
    raise SystemExit(f'{source} not found: run `{command(name)}` first')
  RESULTS_DIR.mkdir(exist_ok=True)
  shutil.copyfile(source, RESULTS_DIR / f'{name}.json')
  print(f'{source} -> {RESULTS_DIR / f"{name}.json"}')
  if name in FIGURES:
    figure, kept = FIGURES[name]
    (RESULTS_DIR / 'figures').mkdir(exist_ok=True)
    shutil.copyfile(source.with_name(figure), RESULTS_DIR / 'figures' / kept)
    print(f'{source.with_name(figure)} -> {RESULTS_DIR / "figures" / kept}')


def main(argv: list[str]) -> int:
  if len(argv) >= 2 and argv[0] == 'keep':
    for name in argv[1:]:
      keep(name)
    return 0
  if argv and argv[0] == 'readme' and set(argv[1:]) <= {'--check'}:
    texts = {path: path.read_text() for path in pages()}  # every page rendered before any is written
    new = {path: render_page(text, path) for path, text in texts.items()}
    stale = [path for path in texts if new[path] != texts[path]]
    for path, text in texts.items():
      counts = f'{len(BLOCK.findall(text))} generated blocks, {len(VALUE.findall(text))} values'
      print(f'{path.relative_to(ROOT)}: {counts}' + (', stale' if path in stale else ''))
    if '--check' in argv:
      if stale:
        print(f'{", ".join(str(p.relative_to(ROOT)) for p in stale)} differ from results/: run '
              '`python experiments/results.py readme`')
      return int(bool(stale))
    for path in stale:
      path.write_text(new[path])
    return 0
  print(__doc__)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
