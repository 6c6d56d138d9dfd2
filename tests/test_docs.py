"""The README and the documentation in docs/: every code block runs (or is named here with why not) and
gives the shapes it states; every number is generated from results/, cited with its source, or a setting
checked against the code."""

import ast
import importlib.util
import inspect
import io
import json
import re
import shlex
import tokenize

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, load_config


def _results_module():
  spec = importlib.util.spec_from_file_location('results', ROOT / 'experiments' / 'results.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


results = _results_module()
PAGES = results.pages()
FENCE = re.compile(r'^```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$', re.S | re.M)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


def page_id(path) -> str:
  return str(path.relative_to(ROOT))


def code_blocks(text: str, lang: tuple[str, ...]) -> list[dict]:
  """The fenced blocks of a markdown text in one of the languages `lang`, in order: lang, title (from
  `title="..."` in the fence's info string, '' without one) and body."""
  blocks = []
  for m in FENCE.finditer(text):
    if m['lang'] in lang:
      title = TITLE.search(m['info'])
      blocks.append({'lang': m['lang'], 'title': title['title'] if title else '', 'body': m['body']})
  return blocks


# ----------------------------------------------------------------------------- python blocks

# A comment that states a shape: `# [4, 64, 64]`, or `# name: [4, 64, 64]` for one of several targets.
SHAPE = re.compile(r'(?:(?P<name>[A-Za-z_][\w.]*):\s*)?\[(?P<dims>\d+(?:,\s*\d+)*)\]')


def _comments(source: str) -> dict[int, str]:
  """{line number: the comment on it} of python source."""
  found = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      found[tok.start[0]] = tok.string
  return found


def stated_shapes(source: str) -> list[tuple[int, str, tuple[int, ...]]]:
  """(statement index, the expression whose shape is stated, the shape) of every shape comment of a block:
  the named target, or the statement's single assignment target."""
  tree, comments, out = ast.parse(source), _comments(source), []
  for i, stmt in enumerate(tree.body):
    for line in range(stmt.lineno, stmt.end_lineno + 1):
      m = SHAPE.search(comments.get(line, ''))
      if not m:
        continue
      name = m['name']
      if name is None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        assert len(targets) == 1 and isinstance(targets[0], ast.Name), (
            f'shape comment {comments[line]!r} on a statement without one target: name it (`# name: [...]`)')
        name = targets[0].id
      out.append((i, name, tuple(int(d) for d in m['dims'].split(','))))
  return out


def test_stated_shapes_are_found_known_answer():
  source = ('maps = f(x)  # [4, 64, 64]\n'
            'a, top = g(x)  # top: [4, 5, 64, 64]\n'
            'r = h(\n  x)  # r.objective: [2, 50], of each class\n'
            'print(a)  # (x0, y0, x1, y1)\n')
  assert stated_shapes(source) == [(0, 'maps', (4, 64, 64)), (1, 'top', (4, 5, 64, 64)),
                                   (2, 'r.objective', (2, 50))]
  with pytest.raises(AssertionError, match='without one target'):
    stated_shapes('print(x)  # [4]\n')


def _shape_of(value):
  if isinstance(value, dict):  # a dict of arrays: each has the stated shape
    shapes = {tuple(np.shape(v)) for v in value.values()}
    assert len(shapes) == 1, shapes
    return shapes.pop()
  return tuple(np.shape(value))


# Python blocks not run by the tests, by page and title, with why (none today).
PYTHON_NOT_RUN: dict[tuple[str, str], str] = {}
OPTIONAL_IMPORTS = {'equinox': 'the test extra (Equinox)', 'haiku': 'the test extra (dm-haiku)',
                    'torch': 'the torch extra'}


def run_python_blocks(path, blocks: list[dict], monkeypatch) -> int:
  """Runs a page's python blocks in order in one namespace, from the repository root (they name
  ../shared/data), checking every stated shape; returns how many shapes were checked."""
  text = ''.join(b['body'] for b in blocks)
  for folder in sorted(set(re.findall(r"\.\./shared/data/([\w.-]+)", text))):
    if not (SHARED_DATA / folder).exists():
      pytest.skip(f'{page_id(path)} reads ../shared/data/{folder}, not found here')
  for module, extra in OPTIONAL_IMPORTS.items():
    if re.search(rf'^\s*import {module}\b', text, re.M):
      pytest.importorskip(module, reason=f'{page_id(path)} imports {module}: {extra}')
  monkeypatch.chdir(ROOT)
  scope, checked = {'__name__': '__docs__'}, 0
  for number, block in enumerate(blocks):
    if (page_id(path), block['title']) in PYTHON_NOT_RUN:
      continue
    shapes = stated_shapes(block['body'])
    tree = ast.parse(block['body'])
    for i, stmt in enumerate(tree.body):
      code = compile(ast.Module([stmt], type_ignores=[]), f'{page_id(path)} block {number + 1}', 'exec')
      exec(code, scope)
      for _, name, shape in (s for s in shapes if s[0] == i):
        got = _shape_of(eval(name, scope))
        assert got == shape, f'{page_id(path)} block {number + 1}: {name} is {got}, the page says {shape}'
        checked += 1
  return checked


PYTHON_PAGES = [p for p in PAGES if code_blocks(p.read_text(), ('python',))]


@pytest.mark.parametrize('path', PYTHON_PAGES, ids=page_id)
def test_every_python_block_runs_as_written_with_the_shapes_it_states(path, monkeypatch):
  """Each page's python blocks run in order, in one namespace, as a reader who runs them one after another;
  every shape a comment states is the shape the code gives."""
  blocks = code_blocks(path.read_text(), ('python',))
  checked = run_python_blocks(path, blocks, monkeypatch)
  assert checked >= 1, f'{page_id(path)}: no block states a shape'


def test_the_pages_with_python_blocks():
  """The examples the docs promise are there: the README's tour and every user-guide page."""
  names = {page_id(p) for p in PYTHON_PAGES}
  assert {'README.md', 'docs/getting-started.md'} <= names
  assert {f'docs/guide/{p.stem}.md' for p in (ROOT / 'docs' / 'guide').glob('*.md')} <= names


# ----------------------------------------------------------------------------- shell blocks

# Shell blocks that the tests do not run, by page and title, with why; their commands are checked.
SHELL_NOT_RUN = {
    ('README.md', 'Main job'): 'minutes on 2 CPU cores (trains a net); the tests run the job on tiny data',
    ('README.md', 'Test suite'): 'the test suite itself',
    ('docs/getting-started.md', 'Install'): 'installs packages',
    ('docs/getting-started.md', 'Main job'): 'minutes on 2 CPU cores (trains a net)',
    ('docs/getting-started.md', 'Test suite'): 'the test suite itself',
    ('docs/getting-started.md', 'Your photos'): 'a folder of photos; tests/test_images_job.py runs the job',
    ('docs/experiments.md', 'A config and an override'): 'minutes on 2 CPU cores (the ImageNet protocol)',
    ('docs/guide/deconvnet.md', 'The proof'): 'tens of minutes on 2 CPU cores (six networks, float64)',
    ('docs/scaling.md', 'GPU and TPU'): 'needs a GPU or TPU',
    ('docs/scaling.md', 'Two processes'): 'minutes on 2 CPU cores; tests/test_multihost.py runs two',
    ('docs/architecture.md', 'The checks'): 'installs packages and runs the test suite itself',
}
EXTRAS = set(re.findall(r'^(\w+) = \[', (ROOT / 'pyproject.toml').read_text().split(
    '[project.optional-dependencies]')[1].split('\n[')[0], re.M))


def shell_commands(body: str) -> list[list[str]]:
  """The commands of a shell block: continuation lines joined, split at `&&`, `;`, `&` and newlines,
  comments and shell keywords dropped."""
  body = re.sub(r'\\\n\s*', ' ', body)
  commands = []
  for line in body.splitlines():
    for part in re.split(r'&&|;|&(?!&)', line.split(' #')[0]):
      words = shlex.split(part, comments=True)
      while words and words[0] in ('for', 'do', 'done', 'wait', 'then', 'fi'):
        words = [] if words[0] == 'for' else words[1:]
      if words:
        commands.append(words)
  return commands


def _override_exists(config, key: str) -> bool:
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return True


def check_command(words: list[str]) -> None:
  """A documented command names what exists: pip extras of pyproject.toml; an entry point of experiments/
  (or a script of the repository), its config file and variant, and fields of that config for every
  `--config.*` override."""
  if words[:2] == ['pip', 'install']:
    for spec in words[2:]:
      extras = re.fullmatch(r"\.\[([\w,]+)\]", spec.strip("'"))
      if extras:
        assert set(extras[1].split(',')) <= EXTRAS, f'{spec}: pyproject.toml has the extras {sorted(EXTRAS)}'
    return
  if words[0] == 'bash':
    assert (ROOT / words[1]).is_file(), words[1]
    return
  if words[0] != 'python' or words[1] == '-m':
    return
  script = ROOT / words[1]
  assert script.is_file(), f'{words[1]} does not exist'
  config = None
  for i, word in enumerate(words):
    if word == '--config':
      file, _, variant = words[i + 1].partition(':')
      assert (ROOT / file).is_file(), f'{file} does not exist'
      config = load_config(pathlib_stem(file), variant or None)
    elif word.startswith('--config.'):
      key = word[len('--config.'):].split('=')[0]
      assert config is not None and _override_exists(config, key), f'{" ".join(words)}: no setting {key}'


def pathlib_stem(file: str) -> str:
  return file.rsplit('/', 1)[-1].removesuffix('.py')


def test_shell_commands_are_parsed_and_checked_known_answer():
  assert shell_commands('pip install -e . && python a.py --x 1 \\\n    --y=2  # note\nfor i in 0 1; do\n'
                        '  python b.py --p=$i &\ndone; wait\n') == [
      ['pip', 'install', '-e', '.'], ['python', 'a.py', '--x', '1', '--y=2'], ['python', 'b.py', '--p=$i']]
  check_command(['python', 'experiments/reproduce.py', '--config', 'configs/quickstart.py:gpu',
                 '--config.data.image_size=32'])
  with pytest.raises(AssertionError, match='no setting data.imagesize'):
    check_command(['python', 'experiments/reproduce.py', '--config', 'configs/quickstart.py',
                   '--config.data.imagesize=32'])
  with pytest.raises(AssertionError, match='extras'):
    check_command(['pip', 'install', '-e', "'.[nothing]'"])


SHELL_BLOCKS = [(p, b) for p in PAGES for b in code_blocks(p.read_text(), ('bash', 'sh', 'shell'))]


@pytest.mark.parametrize('path,block', SHELL_BLOCKS,
                         ids=[f"{page_id(p)}:{b['title']}" for p, b in SHELL_BLOCKS])
def test_every_shell_block_is_named_and_its_commands_exist(path, block):
  """Every shell block has a title and is named in SHELL_NOT_RUN with why the tests do not run it; its
  scripts, configs, variants, overrides and extras exist."""
  assert block['title'], f'{page_id(path)}: a shell block without a title (```bash title="...")'
  assert (page_id(path), block['title']) in SHELL_NOT_RUN, (
      f'{page_id(path)}: shell block {block["title"]!r} is neither run nor named in SHELL_NOT_RUN')
  commands = shell_commands(block['body'])
  assert commands
  for words in commands:
    check_command(words)


def test_every_block_not_run_is_on_its_page():
  found = {(page_id(p), b['title']) for p, b in SHELL_BLOCKS}
  assert set(SHELL_NOT_RUN) <= found, set(SHELL_NOT_RUN) - found


# ----------------------------------------------------------------------------- generated numbers


@pytest.mark.parametrize('path', PAGES, ids=page_id)
def test_results_are_generated_from_results_json(path):
  """Every generated block and value of the page equals what `python experiments/results.py readme` makes
  from results/."""
  text = path.read_text()
  for block in results.BLOCK.finditer(text):
    assert block['name'] == 'all' or (ROOT / 'results' / f"{block['name']}.json").is_file(), block['name']
  assert results.render_page(text, path) == text, (
      f'{page_id(path)} is stale: run `python experiments/results.py readme`')


def test_results_pages_hold_every_block_the_readme_held():
  """The README's former blocks live on in docs/results (and the README holds the key results)."""
  blocks = {(m['name'], m['part']) for p in PAGES for m in results.BLOCK.finditer(p.read_text())}
  assert ('all', 'key_results') in {(m['name'], m['part']) for m in results.BLOCK.finditer(
      (ROOT / 'README.md').read_text())}
  for name in results.RESULTS:
    if name != 'compare_attributions':
      assert any(b[0] == name for b in blocks), f'no page shows results/{name}.json'


@pytest.mark.parametrize('path', PAGES, ids=page_id)
def test_tables_with_numbers_are_generated(path):
  """A table row holding a measured number (a decimal, a percentage, a ratio; code spans aside) stands
  inside a generated block: no hand-copied numbers."""
  outside = results.BLOCK.sub('', path.read_text())
  outside = re.sub(r'```.*?```', '', outside, flags=re.S)  # code examples
  measured = re.compile(r'\d\.\d|\d\s*%|\d+\s*/\s*\d+')  # decimals, percentages, ratios: measurements
  rows = [line for line in outside.splitlines()
          if line.startswith('|') and measured.search(re.sub(r'`[^`]*`', '', line))]
  assert not rows, f'{page_id(path)}: table rows with numbers outside generated blocks: {rows[:3]}'


def test_localisation_table_known_answer():
  """The localisation table of a made-up metrics.json, checked by hand (the selected method in bold)."""
  from saliency_jax.jobs import pipeline
  m = {'config': {'top_k': 2}, 'num_eval': 3, 'selected_method': 'b',
       'localisation': {'a': {'gt_known_box_accuracy': 0.5, 'top1_loc_error': 0.25, 'top2_loc_error': 0.125,
                              'fallbacks': {'true': 1, 'top': 2, 'total': 3}},
                        'b': {'gt_known_box_accuracy': 1.0, 'top1_loc_error': 0.0, 'top2_loc_error': 0.0,
                              'fallbacks': {'true': 0, 'top': 0, 'total': 0}}}}
  assert pipeline.table(m).splitlines()[2:] == ['| a | 0.500 | 0.250 | 0.125 | 1 / 2 |',
                                                '| **b** (selected) | 1.000 | 0.000 | 0.000 | 0 / 0 |']


# Names that hold digits and are not numbers: paper sections, versions, a model's name, an address.
NOT_NUMBERS = re.compile(r'Sect\. \d(?:\.\d)?|Python 3\.\d+|v1 0\.75|127\.0\.0\.1|License 2\.0|'
                         r'version 1\.5')
# A measured-looking number: a decimal, a percentage, a ratio (2.3x), a duration or a size (a range too).
PROSE_NUMBER = re.compile(r'\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?x\b|\d+\.\d+|'
                          r'\b\d+(?:\s?-\s?\d+)?\s?(?:s|ms|seconds|minutes|hours|GiB|MiB|GB|MB)\b')


def _settings() -> dict:
  """The settings the pages' prose names, each phrase with the number it states and the value the code
  holds (a percentage states a fraction)."""
  from saliency_jax import attribution, class_models, defaults, localise, metrics, stats
  from saliency_jax.data import synthetic
  s, standard = localise.Settings(), defaults.localise_methods()
  quickstart, ilsvrc = load_config('quickstart'), load_config('ilsvrc_mobilenet_sample')
  default = {f.__name__: {k: p.default for k, p in inspect.signature(f).parameters.items()}
             for f in (attribution.smoothgrad, class_models.visualise, attribution.blur_ig,
                       attribution.guided_ig, attribution.xrai, attribution.rise, attribution.gradient_shap)}
  return {
      "above the map's 95% quantile": (0.95, s.fg_quantile),
      'below its 30% quantile': (0.30, s.bg_quantile),
      'at 15% and 20%': ((0.15, 0.2), (standard['threshold_15']['threshold'],
                                       standard['threshold_20']['threshold'])),
      'with its 95% interval': (0.95, stats.LEVEL),
      'IoU 0.3, 0.5 and 0.7': ((0.3, 0.5, 0.7), metrics.IOU_THRESHOLDS),
      'IoU >= 0.5': (0.5, 0.5),  # the ILSVRC rule, `metrics.localisation_correct`'s default
      # the quickstart's settings and `class_models.visualise`'s defaults
      'learning rate 0.1, lambda 0.3': ((0.1, 0.3, 0.1, 0.3), (
          quickstart.class_models.learning_rate, quickstart.class_models.l2_weight,
          default['visualise']['learning_rate'], default['visualise']['l2_weight'])),
      '20-60% of the side': ((0.2, 0.6), synthetic.SyntheticSource.scale),
      'at the 90% quantile': (0.9, ilsvrc.localise[ilsvrc.selected_method].fg_quantile),
      'a foreground quantile of 90%': (0.9, ilsvrc.localise[ilsvrc.selected_method].fg_quantile),
      "(the paper's 95%)": (0.95, s.fg_quantile),
      'Gaussian noise of std (0.15)': (0.15, default['smoothgrad']['noise']),  # `noise` (0.15)
      'adds Gaussian noise of std (0.0)': (0.0, default['gradient_shap']['stdev']),  # `stdev` (0.0)
      # the attribution page's settings, written `name` (value) there, checked against the defaults
      'finite-difference step (0.01)': (0.01, default['blur_ig']['grad_step']),
      'the (0.25) of the features': (0.25, default['guided_ig']['fraction']),
      'kept within (0.02) of the straight line': (0.02, default['guided_ig']['max_dist']),
      'until (1.0) of the image is covered': (1.0, default['xrai']['area_threshold']),
      'probability (0.5)': (0.5, default['rise']['p']),
  }


def _prose(text: str) -> str:
  """A page less its generated blocks, values, code blocks and code spans."""
  text = results.BLOCK.sub('', text)
  text = results.VALUE.sub('', text)
  text = re.sub(r'```.*?```', '', text, flags=re.S)
  text = re.sub(r'`[^`]*`', '', text)
  return ' '.join(text.split())


def test_prose_numbers_are_generated_cited_or_checked_settings():
  """A decimal, percentage or ratio in the prose of any page comes from results/ (a value or a block), from
  results/cited.json (numbers of papers, with their sources), or is a setting checked here against the
  code; any other fails (no hand-copied measurement)."""
  cited = json.loads((ROOT / 'results' / 'cited.json').read_text())
  for key, c in cited.items():
    assert key == 'about' or (c['value'] and c['source'] and c['what']), key
  prose = {page_id(p): _prose(p.read_text()) for p in PAGES}
  for path in PAGES:
    for m in results.VALUE.finditer(path.read_text()):  # each value names a number its JSON holds
      assert (ROOT / 'results' / f"{m['name']}.json").is_file(), m['name']
  for phrase, (stated, code) in _settings().items():
    phrase = ' '.join(phrase.split())
    assert any(phrase in text for text in prose.values()), f'the setting {phrase!r} is on no page: drop it'
    np.testing.assert_allclose(stated, code, err_msg=f'the docs say {phrase!r}; the code holds {code}')
    prose = {page: text.replace(phrase, '') for page, text in prose.items()}
  found = {page: [m.group(0) for m in PROSE_NUMBER.finditer(NOT_NUMBERS.sub('', text))]
           for page, text in prose.items()}
  found = {page: numbers for page, numbers in found.items() if numbers}
  assert not found, f'numbers in the prose with no source: {found}'


def test_prose_numbers_are_found_and_values_render_from_their_json():
  prose = _prose('a 2.26x speed-up, 17% of cuts, 0.344, 44-47 s per run, 3 GiB `0.5` and VGG16 `dict`s '
                 '<!-- value: cited/x/value s -->1%<!-- /value --> ```\n0.9\n```')
  found = [m.group(0) for m in PROSE_NUMBER.finditer(NOT_NUMBERS.sub('', prose))]
  assert found == ['2.26x', '17%', '0.344', '44-47 s', '3 GiB']
  names = 'Sect. 3.2 on Python 3.11 with MobileNet v1 0.75'
  assert not PROSE_NUMBER.search(NOT_NUMBERS.sub('', names))
  text = 'error <!-- value: cited/paper_top5_loc_error/value s -->?<!-- /value --> here'
  assert results.render_page(text) == text.replace('?', '46.4%')
  with pytest.raises(KeyError, match="has no 'nothing' there"):
    results.render_page('<!-- value: cited/nothing/value s -->?<!-- /value -->')


def test_every_kept_result_reruns_under_the_backward_options_it_was_made_under():
  """A kept JSON's config names the backward passes' compiler options it was made under (none: made before
  they could be chosen, under 'ynn_convolutions', bit for bit); the config of its command names the same."""
  from saliency_jax import defaults, xla
  assert defaults.main_job().backward_options == xla.DEFAULT_BACKWARD_OPTIONS
  checked = 0
  for name, (_, spec, *_) in results.RESULTS.items():
    kept = json.loads((ROOT / 'results' / f'{name}.json').read_text()).get('config')
    if kept is None:
      continue
    file, _, arg = spec.partition(':')
    config = load_config(file.removesuffix('.py'), arg or None)
    made = kept.get('backward_options', 'ynn_convolutions')
    assert config.get('backward_options', xla.DEFAULT_BACKWARD_OPTIONS) == made, (
        f'{name}: kept under {made!r}; `{results.command(name)}` would run under other options')
    checked += 1
  assert checked >= 15
