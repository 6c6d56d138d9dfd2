"""Docstrings of the core's public API: a summary, then Args / Returns / Raises in Google style.

`ruff check` (pydocstyle's `google` convention, configured in pyproject.toml) checks their form; this
test checks what ruff's stable rules do not: that every argument is documented and that a function
that returns a value says what, and one that raises says what, in every module of the package: the
core a researcher imports (`saliency_jax/`, `saliency_jax/data/`), the protocol and the jobs."""

import ast
import pathlib

import pytest
from conftest import ROOT

CORE = sorted((ROOT / 'saliency_jax').rglob('*.py'))
SECTION = ('Args:', 'Returns:', 'Yields:', 'Raises:', 'Attributes:', 'Example:', 'Examples:', 'Note:')


def public_functions(tree: ast.Module):
  """(qualified name, node) of every public function and method of a module (not nested functions)."""
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith('_'):
      yield node.name, node
    elif isinstance(node, ast.ClassDef) and not node.name.startswith('_'):
      for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith('_'):
          yield f'{node.name}.{item.name}', item


def parameters(node) -> list[str]:
  a = node.args
  names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
  names += [f'*{a.vararg.arg}'] if a.vararg else []
  names += [f'**{a.kwarg.arg}'] if a.kwarg else []
  return [n for n in names if n not in ('self', 'cls')]


def _own_nodes(node):
  """The nodes of a function's own body, not those of a nested function, lambda or class."""
  todo = list(node.body)
  while todo:
    n = todo.pop()
    if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
      yield n
      todo.extend(ast.iter_child_nodes(n))


def _returns_value(node) -> bool:
  """Whether the function's own body returns or yields a value."""
  return any(isinstance(n, (ast.Yield, ast.YieldFrom)) or (
      isinstance(n, ast.Return) and n.value is not None and
      not (isinstance(n.value, ast.Constant) and n.value.value is None)) for n in _own_nodes(node))


def _raises(node) -> bool:
  """Whether the function's own body raises an exception of its own (a bare `raise` re-raises)."""
  return any(isinstance(n, ast.Raise) and n.exc is not None for n in _own_nodes(node))


def _section(doc: str, name: str) -> str:
  """The text of a docstring's section `name` ('Args:'), up to the next section."""
  lines, out, inside = doc.splitlines(), [], False
  for line in lines:
    if line.strip() in SECTION:
      inside = line.strip() == name
      continue
    if inside:
      out.append(line)
  return '\n'.join(out)


def problems(node) -> list[str]:
  """What a public function's docstring lacks."""
  doc = ast.get_docstring(node)
  if not doc:
    return ['no docstring']
  found = []
  if len(doc.split('\n\n')[0].splitlines()) > 1:
    found.append('a summary of more than one line')
  params = parameters(node)
  if params:
    args = _section(doc, 'Args:')
    missing = [p for p in params if not any(line.strip().startswith(f'{p.lstrip("*")}:') or
                                             line.strip().startswith(f'{p}:') for line in args.splitlines())]
    if missing:
      found.append(f'no Args entry for {missing}')
  is_property = any(isinstance(d, ast.Name) and d.id in ('property', 'cached_property')
                    for d in node.decorator_list)
  if _returns_value(node) and not is_property and 'Returns:' not in doc and 'Yields:' not in doc:
    found.append('no Returns section')
  if _raises(node) and 'Raises:' not in doc:
    found.append('no Raises section')
  return found


def test_docstring_checker_known_answers():
  source = '''
def good(x, *, k=1):
  """One line.

  Args:
    x: float32 [B, H, W].
    k: how many.

  Returns:
    [B] int.

  Raises:
    ValueError: when k < 1.
  """
  if k < 1:
    raise ValueError('k')
  return x

def bad(x, y):
  """Two
  lines."""
  def inner():
    return 1
  raise ValueError('no')
'''
  tree = ast.parse(source)
  found = {name: problems(node) for name, node in public_functions(tree)}
  assert found == {'good': [], 'bad': ['a summary of more than one line', "no Args entry for ['x', 'y']",
                                       'no Raises section']}


@pytest.mark.parametrize('path', CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_function_documents_its_args_returns_and_raises(path: pathlib.Path):
  tree = ast.parse(path.read_text())
  found = {name: p for name, node in public_functions(tree) if (p := problems(node))}
  assert not found, f'{path.relative_to(ROOT)}: {found}'
