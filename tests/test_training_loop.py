import contextlib
import copy

import pytest

torch = pytest.importorskip("torch", reason="training-loop tests need the train extra (torch)")

from urbanfusion.models.training.loop import TrainingLoop, seeded  # noqa: E402

CPU = torch.device("cpu")


class _InterruptedError(Exception):
    pass


def _run(scores, patience=10, stop_after=None, resume_from=None):
    """Fit a tiny regression; validation scores are given per epoch. Returns loop, saved states."""
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 2, generator=data), torch.randn(16, 1, generator=data)
    generator = seeded(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(2, 1))
    loop = TrainingLoop(
        model, generator, epochs=len(scores), batch=4, lr=0.1, weight_decay=0.0, patience=patience
    )
    if resume_from is not None:
        loop.restore(resume_from, CPU)
    states, weights = [], []

    def loss_of(idx):
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    def validate():
        weights.append(model[1].weight.detach().clone())
        return scores[loop.epoch]

    def after_epoch(improved):
        states.append(copy.deepcopy(loop.state(CPU)))
        if loop.epoch == stop_after:
            raise _InterruptedError

    with contextlib.suppress(_InterruptedError):
        loop.run(16, loss_of, validate, after_epoch)
    return loop, states, weights


def test_the_loop_stops_after_patience_epochs_without_progress_and_keeps_the_best_weights():
    loop, _, weights = _run([0.2, 0.5, 0.4, 0.3, 0.45, 0.9], patience=3)
    assert loop.epoch == 5 and loop.best_epoch == 2 and loop.best_score == 0.5
    assert [h["val_accuracy"] for h in loop.history] == [0.2, 0.5, 0.4, 0.3, 0.45]
    assert torch.equal(loop.model[1].weight, weights[1])  # epoch 2's weights, not the last


def test_a_loop_resumed_from_its_state_ends_with_the_weights_of_an_uninterrupted_one():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    whole, _, _ = _run(scores)
    _, states, _ = _run(scores, stop_after=2)
    resumed, _, _ = _run(scores, resume_from=states[-1])
    assert resumed.history == whole.history and resumed.best_epoch == 5
    assert torch.equal(resumed.model[1].weight, whole.model[1].weight)
    other, _, _ = _run(scores, resume_from=states[0])  # one epoch earlier: still the same end
    assert torch.equal(other.model[1].weight, whole.model[1].weight)


def test_glibc_is_asked_to_keep_freed_training_buffers():
    import platform

    from urbanfusion.models.training.loop import keep_freed_memory

    # On glibc every parameter is accepted; elsewhere the call is a harmless no-op.
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
