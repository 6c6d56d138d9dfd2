"""MkDocs hook: the figures kept in results/figures are served at figures/ (one copy, in results/)."""

import pathlib

from mkdocs.structure.files import File

FIGURES = pathlib.Path(__file__).resolve().parents[1] / 'results' / 'figures'


def on_files(files, config):
  """Adds every file of results/figures to the site as figures/NAME.

  Args:
    files: the site's files (`mkdocs.structure.files.Files`).
    config: the MkDocs config.

  Returns:
    `files`, with the figures.
  """
  for path in sorted(FIGURES.iterdir()):
    files.append(File.generated(config, f'figures/{path.name}', abs_src_path=str(path)))
  return files
