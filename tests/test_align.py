"""Align before fuse with ALBEF's momentum encoders: moving averages, the key queue, the loss."""

import pytest

torch = pytest.importorskip("torch", reason="alignment tests need the train extra (torch)")

from tests.test_model import _tiny_net  # noqa: E402
from urbanfusion.models.training.align import MomentumAlign, alignment_loss  # noqa: E402
from urbanfusion.models.training.network import FusionNet  # noqa: E402


def _model() -> FusionNet:
    torch.manual_seed(0)
    # No dropout: the copies, like ALBEF's, run in training mode, and equal keys need equal draws.
    return FusionNet(_tiny_net(align_dim=8, dropout=0.0)).train()


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randn(n, 7, 24, generator=g)


def test_the_momentum_encoders_take_one_moving_average_step_towards_the_model():
    model = _model()
    momentum = MomentumAlign(model, momentum=0.9, queue=8, alpha=0.4)
    before = [p.clone() for p in momentum.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    momentum.update(model)
    online = [
        p
        for m in (model.image_encoder, model.activity_encoder, model.align)
        for p in m.parameters()
    ]
    assert len(online) == len(before) > 0
    for old, new, now in zip(before, online, momentum.parameters(), strict=True):
        torch.testing.assert_close(now, 0.9 * old + 0.1 * new)
        assert not now.requires_grad  # never trained by gradients


def test_with_no_queue_yet_and_no_distillation_the_loss_is_the_plain_contrastive_loss():
    # At the start the copies equal the model, so its keys are the model's own projections.
    model = _model()
    image, activity = _batch()
    flags = torch.ones(len(image), 1)
    vi, va = model.image_encoder(image)[0], model.activity_encoder(activity)[0]
    assert model.align is not None
    plain = alignment_loss(model.align, vi, va, flags, flags, 0.07)
    momentum = MomentumAlign(model, momentum=0.995, queue=16, alpha=0.0)
    with_copies = momentum.loss(model, (image, activity), vi, va, flags, flags, 0.07)
    torch.testing.assert_close(with_copies, plain)
    with_copies.backward()  # gradients reach the model, not the copies
    assert model.align["image"].weight.grad is not None
    assert all(p.grad is None for p in momentum.parameters())
    # Momentum distillation softens the targets, which changes the loss.
    soft = MomentumAlign(model, momentum=0.995, queue=16, alpha=0.4)
    soft_loss = soft.loss(model, (image, activity), vi, va, flags, flags, 0.07)
    assert soft_loss.item() != plain.item()


def test_the_queue_keeps_the_keys_of_the_last_cells_and_only_cells_with_both_inputs():
    model = _model()
    momentum = MomentumAlign(model, momentum=0.995, queue=8, alpha=0.4)
    image, activity = _batch(6)
    hi, ha = torch.ones(6, 1), torch.ones(6, 1)
    ha[0] = 0.0  # no signalling: no pair to align, no key
    keys = []
    for _ in range(2):
        vi, va = model.image_encoder(image)[0], model.activity_encoder(activity)[0]
        momentum.loss(model, (image, activity), vi, va, hi, ha, 0.07)
        keys.append(momentum._keys(image[1:], activity[1:])[0])
    assert int(momentum.seen) == 10
    # Slots 0-4 took the first five keys, 5-7 and then 0-1 the second five.
    queue = momentum.image_queue
    torch.testing.assert_close(queue[2:5], keys[0][2:5])
    torch.testing.assert_close(queue[5:8], keys[1][:3])
    torch.testing.assert_close(queue[0:2], keys[1][3:5])


def test_a_batch_larger_than_the_queue_leaves_its_last_keys():
    model = _model()
    momentum = MomentumAlign(model, momentum=0.995, queue=4, alpha=0.4)
    image, activity = _batch(6)
    flags = torch.ones(6, 1)
    vi, va = model.image_encoder(image)[0], model.activity_encoder(activity)[0]
    momentum.loss(model, (image, activity), vi, va, flags, flags, 0.07)
    torch.testing.assert_close(momentum.image_queue, momentum._keys(image, activity)[0][-4:])


def test_momentum_alignment_needs_the_projections():
    with pytest.raises(ValueError, match="alignment projections"):
        MomentumAlign(FusionNet(_tiny_net()), momentum=0.995, queue=8, alpha=0.4)
