import pytest
import torch

from models import FIRST, SECOND, FreezableMLP, SimpleNN


def test_architecture_and_halves():
    m = SimpleNN()
    assert [m.fc1.in_features, m.fc1.out_features, m.fc2.out_features, m.fc3.out_features] == [3072, 512, 512, 10]
    assert m.bn1.num_features == 512 and m.bn2.num_features == 512
    first = 3072 * 512 + 512 + 2 * 512          # fc1 + bn1
    second = 512 * 512 + 512 + 2 * 512 + 512 * 10 + 10  # fc2 + bn2 + fc3
    assert sum(p.numel() for p in m.get_first_half_params()) == first
    assert sum(p.numel() for p in m.get_second_half_params()) == second
    assert m.count_parameters() == first + second
    ids = {id(p) for p in m.get_first_half_params()} | {id(p) for p in m.get_second_half_params()}
    assert ids == {id(p) for p in m.parameters()}


def test_init_xavier_and_zero_bias():
    m = SimpleNN()
    for fc in (m.fc1, m.fc2, m.fc3):
        bound = (6 / (fc.in_features + fc.out_features)) ** 0.5
        assert fc.weight.abs().max() <= bound
        assert fc.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(fc.bias) == 0


def test_accepts_images_and_flat_inputs():
    m = SimpleNN().eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(m(x), m(x.flatten(1)))
    assert m(x).shape == (4, 10)


def test_freeze_api_and_counts():
    m = SimpleNN()
    m.freeze_first_half()
    assert m.count_parameters(trainable_only=True) == sum(p.numel() for p in m.get_second_half_params())
    m.unfreeze_first_half()
    m.freeze_second_half()
    assert all(not p.requires_grad for p in m.get_second_half_params())
    assert all(p.requires_grad for p in m.get_first_half_params())
    m.unfreeze_second_half()
    assert m.count_parameters(trainable_only=True) == m.count_parameters()
    m.freeze_first_half(), m.freeze_second_half()
    m.unfreeze_all()
    assert m.count_parameters(trainable_only=True) == m.count_parameters()


def test_general_split_depth_and_widths():
    m = FreezableMLP(input_size=20, hidden_sizes=(16, 8, 4), num_classes=3, split=2)
    assert len(m.group_modules(FIRST)) == 2 and len(m.group_modules(SECOND)) == 2
    assert sum(p.numel() for p in m.group_params(FIRST)) == 20 * 16 + 16 + 32 + 16 * 8 + 8 + 16
    assert m(torch.randn(5, 20)).shape == (5, 3)
    with pytest.raises(ValueError):
        FreezableMLP(split=0)


def _measured_gemm_flops(model, groups, batch=4):
    """Count GEMM FLOPs by hooking torch's matmul kernels during one forward+backward pass."""
    from torch.utils.flop_counter import FlopCounterMode
    model.set_trainable(groups)
    x = torch.randn(batch, model.blocks[0][0].in_features)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.set_trainable((FIRST, SECOND))
    return counter.get_total_flops() / batch


@pytest.mark.parametrize("groups", [(FIRST, SECOND), (FIRST,), (SECOND,)])
def test_flop_model_matches_torch_flop_counter(groups):
    """The analytic count (which skips fc1's backward when the first half is frozen)
    agrees with what PyTorch actually executes."""
    m = SimpleNN()
    assert m.train_flops_per_sample(groups) == _measured_gemm_flops(m, groups)


def test_flop_ratios():
    m = SimpleNN()
    std = m.train_flops_per_sample((FIRST, SECOND))
    assert m.train_flops_per_sample((SECOND,)) / std == pytest.approx(0.535, abs=0.01)
    assert m.train_flops_per_sample((FIRST,)) / std == pytest.approx(0.932, abs=0.01)
    assert m.eval_flops_per_sample() == 2 * (3072 * 512 + 512 * 512 + 512 * 10)
