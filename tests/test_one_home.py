"""One home per rule: the choice of loss, the (seed, epoch) mixing, the number of classes."""

import inspect

import pytest
import torch

from src.data.idx import NUM_CLASSES
from src.data.mnist import TensorBatches, epoch_seed
from src.instruments.diagnostics import _probe_loss
from src.system.metrics import report_metrics
from src.system.module import MLPClassifier

ARCH = dict(inputs=12, hidden_layers=[9, 7], outputs=NUM_CLASSES)
LOSSES = [
    dict(loss="cross_entropy", output_activation="softmax"),  # fused from the logits
    dict(loss="cross_entropy", output_activation="sigmoid", regularization="l2", alpha=0.01),
    dict(loss="mse", output_activation="softmax", regularization="l1", alpha=0.01),
]


@pytest.mark.parametrize("implementation", ["custom", "sequential"])
@pytest.mark.parametrize("setting", LOSSES, ids=["ce-fused", "ce-sigmoid-l2", "mse-l1"])
def test_the_diagnostics_probe_uses_the_training_loss(implementation, setting):
    """The probe's loss is the module's own training loss, bit for bit, in both implementations."""
    torch.manual_seed(0)
    module = MLPClassifier(**ARCH, implementation=implementation, **setting)
    gen = torch.Generator().manual_seed(1)
    x, labels = torch.randn(16, ARCH["inputs"], generator=gen), torch.randint(NUM_CLASSES, (16,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
    loss, logits = module.compute_loss(x, onehot, labels)
    assert torch.equal(_probe_loss(module, logits, onehot, module.net.weights()), loss)


def test_the_shuffle_is_seeded_by_epoch_seed():
    batches = TensorBatches(torch.zeros(50, 3), torch.zeros(50, dtype=torch.long), 8, shuffle=True, seed=7)
    for epoch in (0, 1, 5):
        expected = torch.randperm(50, generator=torch.Generator().manual_seed(epoch_seed(7, epoch) % 2**63))
        assert torch.equal(batches.order(epoch), expected)
    pairs = {epoch_seed(s, e) for s in range(40) for e in range(40)}
    assert len(pairs) == 40 * 40  # distinct (seed, epoch) pairs, distinct seeds


def test_the_number_of_classes_has_one_home():
    assert inspect.signature(MLPClassifier).parameters["outputs"].default == NUM_CLASSES
    assert inspect.signature(report_metrics).parameters["num_classes"].default == NUM_CLASSES
    assert report_metrics()["confusion"].num_classes == NUM_CLASSES
