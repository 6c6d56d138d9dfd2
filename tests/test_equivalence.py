"""The Sect. 4 report end to end, on a tiny configuration (seconds, not the experiment's minutes)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from conftest import load_config
from flax import nnx

from saliency_jax import deconvnet, faithfulness, metrics, models
from saliency_jax.jobs import equivalence


def _tiny_config(tmp_path):
  config = load_config('deconvnet_vs_gradient')
  config.data_dir = str(tmp_path / 'no-data')  # the pretrained ResNet is skipped: test_deconvnet covers it
  config.synthetic.image_size = 32
  config.synthetic.num_train = 64
  config.synthetic.num_test = 16
  config.synthetic.stages = ((4,), (8,))
  config.synthetic.steps = 5
  config.proof.num_images = 2
  config.proof.paper_size = 32
  config.proof.paper_classes = 10
  config.proof.networks = ('small_random', 'small_trained')
  config.proof.scores_only = True
  config.num_maps = 4
  config.num_sanity = 2
  config.num_figure = 1
  return config


def test_report_confirms_every_claim_and_writes_its_files(tmp_path):
  result = equivalence.run(_tiny_config(tmp_path), str(tmp_path / 'out'), log=lambda *_: None)
  assert result['all_confirmed'], [r for r in result['rows'] if not r['confirmed']]
  claims = {r['claim'] for r in result['rows']}
  assert len(claims) == 9  # 4 layer types + 5 whole-network claims
  assert {r['precision'] for r in result['rows']} == {'float64', 'float32'}
  gates = [r for r in result['rows'] if r['claim'].startswith('gradient and DeconvNet differ only')]
  assert all(r['differ'] == r['disagree'] > 0 for r in gates)
  for name in ('equivalence.json', 'equivalence.md', 'relu_gates.md', 'reconstructions.png', 'sanity.png'):
    assert (tmp_path / 'out' / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / 'out' / 'equivalence.json').read_text())
  assert saved['all_confirmed'] and len(saved['rows']) == len(result['rows'])
  assert set(saved['sanity_check']) == {'small_convnet'}  # no pretrained ResNet without the data
  for check in saved['sanity_check'].values():
    assert len(check['gradient']) == len(check['layers'])


def _rule(backward):
  """A ReLU whose backward pass is backward(x, g): a deliberately wrong rule."""
  relu = jax.custom_vjp(lambda x: jnp.maximum(x, 0))
  relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (backward(x, g),))
  return relu


def test_relu_row_fails_for_wrong_rules():
  rng = np.random.default_rng(0)
  x, g = rng.normal(size=(4, 64)), rng.normal(size=(4, 64))
  assert equivalence.relu_row(x, g)['confirmed']
  wrong = {'gates at x >= 0': {'gradient': _rule(lambda x, g: jnp.where(x >= 0, g, 0))},
           'passes the signal': {'gradient': _rule(lambda x, g: g)},
           'DeconvNet gates by x': {'deconvnet': deconvnet.gradient_relu},
           'DeconvNet doubles': {'deconvnet': _rule(lambda x, g: 2 * jnp.maximum(g, 0))}}
  for name, rules in wrong.items():
    row = equivalence.relu_row(x, g, rules={**deconvnet.RULES, **rules})
    assert not row['confirmed'], name


def test_wrong_deconvnet_rule_fails_the_network_rows():
  """Guided backprop passed as the DeconvNet rule: the rows that involve that rule fail, the others hold."""
  model = models.CifarResNet(8, 4, rngs=nnx.Rngs(0))
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  rules = {'gradient': deconvnet.gradient_relu, 'deconvnet': deconvnet.guided_relu}
  rows, _ = equivalence.network_rows('resnet8', model, x, ('scores',), 1e-4, rules=rules)
  confirmed = {r['claim']: r['confirmed'] for r in rows}
  assert confirmed == {'explicit DeconvNet = VJP with deconvnet_relu': False,
                       'VJP with gradient_relu = jax.grad (exactly)': True,
                       'explicit backprop (gradient gates) = jax.grad': True,
                       'gradient and DeconvNet differ only at ReLU gate disagreements': False,
                       'DeconvNet depends on the image only through max-pool switches (and relu6 clips)':
                           False}


def test_randomise_replaces_only_the_named_layers():
  model = models.SmallConvNet(3, stages=((4,), (8,)), batch_norm=True, rngs=nnx.Rngs(0))
  fresh = models.SmallConvNet(3, stages=((4,), (8,)), batch_norm=True, rngs=nnx.Rngs(1))
  groups = [name for name, _ in faithfulness.randomisation_groups(model)]
  assert groups == ['classifier', 'conv2', 'conv1']
  out = faithfulness.randomise(model, fresh, {'classifier', 'conv2'})
  np.testing.assert_array_equal(out.classifier.kernel[...], fresh.classifier.kernel[...])
  np.testing.assert_array_equal(out.convs[1].kernel[...], fresh.convs[1].kernel[...])
  np.testing.assert_array_equal(out.convs[0].kernel[...], model.convs[0].kernel[...])
  assert not jnp.array_equal(out.convs[0].kernel[...], fresh.convs[0].kernel[...])
  np.testing.assert_array_equal(out.norms[1].mean[...], model.norms[1].mean[...])  # statistics kept
  assert model.classifier.kernel[...] is not out.classifier.kernel[...]  # the original is untouched
  assert not jnp.array_equal(model.classifier.kernel[...], fresh.classifier.kernel[...])


def test_spearman_known_answers():
  a = np.arange(12.0).reshape(3, 4)
  assert metrics.spearman(a, a ** 3) == 1.0
  assert metrics.spearman(a, -a) == -1.0
  assert metrics.spearman(a, np.ones_like(a)) == 0.0  # constant map: defined as 0, not NaN
