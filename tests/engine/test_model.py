"""The Siamese network's shape and the contrastive loss against a hand computation."""

import math

import pytest
import torch

from worker.engine.model import ContrastiveLoss, SiameseNetwork


@pytest.mark.parametrize("size", [32, 64])
def test_network_layers_and_output_shape(size):
    network = SiameseNetwork(size)
    convs = [m for m in network.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 4, (3, 3)),
        (4, 8, (3, 3)),
        (8, 8, (3, 3)),
    ]
    linears = [m for m in network.head if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [
        (8 * size * size, 500),
        (500, 100),
        (100, 20),
    ]
    assert network(torch.randn(3, 1, size, size)).shape == (3, 20)


def test_contrastive_loss_matches_hand_computation():
    first = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    second = torch.tensor([[3.0, 4.0], [1.0, 0.5], [0.0, 3.0]])
    unlike = torch.tensor([0, 1, 1])
    # distances 5, 0.5, 3 (pairwise_distance adds eps=1e-6 to the difference)
    d = [
        math.dist([0, 0], [3 + 1e-6, 4 + 1e-6]),
        math.dist([1, 0], [1 + 1e-6, 0.5 + 1e-6]),
        math.dist([0, 0], [1e-6, 3 + 1e-6]),
    ]
    expected = (d[0] ** 2 + (2 - d[1]) ** 2 + max(2 - d[2], 0) ** 2) / 3
    loss = ContrastiveLoss(margin=2.0)(first, second, unlike)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx((25 + 2.25 + 0) / 3, rel=1e-4)


def test_contrastive_loss_is_zero_for_identical_like_pairs_and_far_unlike_pairs():
    a = torch.randn(8, 20)
    loss = ContrastiveLoss(2.0)(a, a.clone(), torch.zeros(8))
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    far = ContrastiveLoss(2.0)(a, a + 10, torch.ones(8))
    assert far.item() == 0.0


def test_cpu_threads_limits_the_block_and_restores_the_count():
    from worker.engine.train import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    try:
        with cpu_threads(torch.device("cpu"), 1):
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
