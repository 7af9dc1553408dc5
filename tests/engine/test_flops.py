"""The FLOP count of one training step against a hand count, and the paired forward pass."""

import json

import pytest
import torch

from worker.engine.bench_flops import NetworkSetup, step_flops
from worker.engine.model import SiameseNetwork

SIZE, BATCH = 16, 4


def hand_count(size: int) -> tuple[int, int]:
    """FLOPs per pair of one training step (2 per multiply-add): (linear layers, convolutions).

    Each image passes forward once; backward computes each layer's weight gradient (as many
    FLOPs as its forward) and its input gradient (as many again), except the first convolution,
    whose input needs none.
    """
    pixels = size * size
    linear_forward = 2 * (8 * pixels * 500 + 500 * 100 + 100 * 20)
    conv_forward = [2 * cin * cout * 9 * pixels for cin, cout in ((1, 4), (4, 8), (8, 8))]
    conv_step = sum(3 * f for f in conv_forward) - conv_forward[0]
    return 2 * 3 * linear_forward, 2 * conv_step  # two images per pair


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_flops_match_the_hand_count(precision):
    counted = step_flops(NetworkSetup("test", SIZE, BATCH, None, False), torch.device("cpu"), precision)
    linear, conv = hand_count(SIZE)
    per_op = {op.split(".")[-1]: flops / BATCH for op, flops in counted["per_operator"].items()}
    matrix_products = per_op.get("mm", 0) + per_op.get("addmm", 0)
    assert matrix_products == pytest.approx(linear, rel=0.01)
    assert per_op["convolution"] + per_op["convolution_backward"] == pytest.approx(conv, rel=0.01)
    # Nothing else is counted: the linear layers carry 79 % of the step's FLOPs at 16 px.
    assert counted["flops_per_pair"] == pytest.approx(linear + conv, rel=0.01)
    assert 0.75 < linear / counted["flops_per_pair"] < 0.85


def test_paired_forward_matches_two_forward_passes():
    torch.manual_seed(0)
    network = SiameseNetwork(SIZE).to(memory_format=torch.channels_last)
    twin = SiameseNetwork(SIZE).to(memory_format=torch.channels_last)
    twin.load_state_dict(network.state_dict())
    first, second = torch.randn(2, 6, 1, SIZE, SIZE)
    second = second * 3 + 1  # other batch statistics, so a shared normalisation would show
    paired = network.forward_pair(first, second)
    separate = twin(first), twin(second)
    for a, b in zip(paired, separate, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(network.modules(), twin.modules(), strict=True):
        if isinstance(a, torch.nn.BatchNorm2d):  # running statistics updated as by two passes
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
            assert a.num_batches_tracked == b.num_batches_tracked == 2
    (sum(o.square().sum() for o in paired)).backward()
    (sum(o.square().sum() for o in separate)).backward()
    for a, b in zip(network.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_flops_bench_measures_each_thread_count_asked_for(tmp_path, capsys):
    from cryoclust.cli import parse_args
    from worker.engine.commands import bench

    argv = ["bench", "--flops", "-g", "cpu", "--quick", "--networks", "pose", "--precision", "fp32"]
    assert bench.main(parse_args(argv + ["--threads", "1", "2", "-o", str(tmp_path)])) == 0
    report = json.loads((tmp_path / "flops-cpu-quick.json").read_text())
    assert [run["threads"] for run in report["runs"]] == [1, min(2, torch.get_num_threads())]
    assert all(run["step_gflops"] > 0 and 0 < run["ratio"] for run in report["runs"])
    assert set(report["profiles"]) == {"pose-fp32-1-threads", "pose-fp32-2-threads"}
    assert "| pose | 24 | 32 | fp32 | 1 |" in capsys.readouterr().out


def test_channels_last_network_computes_what_the_contiguous_one_does():
    """fresh_network is channels-last on every device (faster there, train.py); the layout must
    leave the embedding and the gradients as they are."""
    from worker.engine.train import fresh_network

    network = fresh_network(SIZE, torch.device("cpu"), 0)
    plain = SiameseNetwork(SIZE)
    plain.load_state_dict(network.state_dict())
    assert network.features[5].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.features[5].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = network(images.contiguous(memory_format=torch.channels_last))
    reference = plain(images)
    # float32 sums in another order (one thread picks other kernels): differences of a few 1e-6
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    reference.square().sum().backward()
    for a, b in zip(network.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
