"""Distillation training mechanics: the weight average and what training keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from quantize.config import DistillConfig, StudentConfig  # noqa: E402
from quantize.distill import LOG_OFFSET, WeightAverage, filter_augment, train_student  # noqa: E402
from quantize.transfer import TransferSet  # noqa: E402


def test_weight_average_follows_the_exponential_recursion() -> None:
    """After n updates the average is the closed-form EMA of the weights it saw (with the warm-up
    decay), integer buffers are copied, and an unchanging tensor stays bit-exact."""
    bn = torch.nn.BatchNorm1d(3)
    bn.register_buffer("const", torch.full((3,), 0.1234567))
    avg = WeightAverage(bn, decay=0.9)
    expect = bn.weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            bn.weight.fill_(float(step))
        bn.num_batches_tracked.fill_(step)
        avg.update(bn)
        d = min(0.9, (1.0 + step) / (10.0 + step))
        expect = d * expect + (1 - d) * float(step)
    np.testing.assert_allclose(avg.state["weight"].numpy(), expect.numpy(), rtol=1e-6)
    assert int(avg.state["num_batches_tracked"]) == 5
    assert torch.equal(avg.state["const"], torch.full((3,), 0.1234567))
    # the average lags the raw weights: it is not a copy of them
    assert float(avg.state["weight"][0]) < 5.0


def test_filter_augment_is_a_piecewise_linear_gain_in_db_per_window() -> None:
    """FilterAugment multiplies each window's mel powers by one gain curve: the same for every frame of the
    window, linear in dB between at most 5 points, within +-max dB; silence stays silence; off at 0 dB;
    the same generator state gives the same curves."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (6, 10, 32)).astype(np.float32))  # mel powers around e^0
    x[:, :, 5] = float(np.log(LOG_OFFSET))  # a silent mel (power 0)
    assert torch.equal(filter_augment(x, 0.0, torch.Generator().manual_seed(1)), x)
    y = filter_augment(x, 6.0, torch.Generator().manual_seed(1))
    assert torch.equal(y, filter_augment(x, 6.0, torch.Generator().manual_seed(1)))
    assert torch.allclose(y[:, :, 5], x[:, :, 5])
    gain_db = 10.0 * torch.log10((torch.exp(y) - LOG_OFFSET) / (torch.exp(x) - LOG_OFFSET))  # [B, F, M]
    gain_db = torch.cat([gain_db[:, :, :5], gain_db[:, :, 6:]], dim=2).double()
    assert float((gain_db - gain_db[:, :1]).abs().max()) < 1e-3  # one curve per window, every frame
    assert float(gain_db.abs().max()) <= 6.0 + 1e-3
    assert float(gain_db.abs().max()) > 1.0  # it does filter
    curves = gain_db[:, 0]  # [B, 31]
    assert float((curves - curves[:1]).abs().max()) > 0.5  # each window its own curve
    kinks = (curves[:, 2:] - 2 * curves[:, 1:-1] + curves[:, :-2]).abs() > 1e-3  # second differences
    assert int(kinks.sum(dim=1).max()) <= 3 * 2 + 2  # a few corners only (the silent mel's gap adds two)


def _tiny_set(rng: np.random.Generator, n: int, k: int = 3) -> TransferSet:
    x = rng.normal(-4.0, 1.0, (n, 16, 8)).astype(np.float32)
    cls = rng.integers(0, k, n)
    x[np.arange(n), :, cls * 2] += 4.0  # a class lights up its own mel band
    logits = np.full((n, k), -4.0, np.float32)
    logits[np.arange(n), cls] = 4.0
    gt = np.zeros((n, k), np.float32)
    gt[np.arange(n), cls] = 1.0
    return TransferSet(
        x=x,
        ev_logits=logits,
        ev_mask=np.ones((n, 16), np.float32),
        bg_logits=np.full((n, k), -6.0, np.float32),
        bg_weight=np.zeros(n, np.float32),
        gt=gt,
    )


@pytest.mark.parametrize("ema_decay", [0.0, 0.95])
def test_training_learns_a_separable_task_with_and_without_averaging(ema_decay: float) -> None:
    rng = np.random.default_rng(0)
    train, val = _tiny_set(rng, 256), _tiny_set(rng, 64)
    cfg = DistillConfig(epochs=15, batch_size=32, lr=2e-2, ema_decay=ema_decay, mixup=0.0, spec_augment=False)
    model, info = train_student(train, val, 3, StudentConfig(channels=(16, 16, 16), dropout=0.0), cfg, 4, seed=0)
    hist = info["val_loss_history"]
    assert isinstance(hist, list)
    assert info["best_val_loss"] == min(hist)
    with torch.no_grad():
        p = model(torch.from_numpy(val.x)).numpy().max(axis=1)  # [N, K] clip maxima
    acc = float((p.argmax(1) == val.gt.argmax(1)).mean())
    assert acc > 0.9, acc


def test_edge_rows_weight_the_newest_rows_of_the_frame_loss() -> None:
    """`edge_rows`/`edge_weight`: the frame loss is the row-weighted mean of the per-row losses (the last
    rows weighted, normalised to mean 1); weight 1 is the plain loss; an error only in the last rows
    costs more with them weighted up, one only in the first rows less."""
    from dataclasses import replace

    from quantize.distill import Targets, distill_loss, row_weights

    w = row_weights(24, 3, 4.0)
    assert w is not None and float(w.mean()) == pytest.approx(1.0)
    assert float(w[-1]) == pytest.approx(4.0 * float(w[0]))
    assert row_weights(24, 0, 4.0) is None and row_weights(24, 3, 1.0) is None
    cfg = DistillConfig(frame_weight=1.0)
    target = torch.full((2, 24, 5), 0.1)
    tg = Targets(target, target, target[:, 0], target[:, 0])
    z_good = torch.logit(target)
    late = z_good.clone()
    late[:, -3:] += 3.0  # wrong only in the newest rows
    early = z_good.clone()
    early[:, :3] += 3.0  # wrong only in the first rows
    edge = replace(cfg, edge_rows=3, edge_weight=4.0)
    assert float(distill_loss(late, tg, edge)) > float(distill_loss(late, tg, cfg))
    assert float(distill_loss(early, tg, edge)) < float(distill_loss(early, tg, cfg))
    same = replace(cfg, edge_rows=3, edge_weight=1.0)
    assert float(distill_loss(late, tg, same)) == float(distill_loss(late, tg, cfg))


def test_mask_dilation_widens_an_impulsive_events_frame_targets() -> None:
    """`mask_dilate_rows`: an event active in two 40 ms rows (frames 40-47 of 96) gets the teacher's target
    on those rows and `dilate` rows either side, zero beyond; the background's target and the clip
    targets' maxima are unchanged; 0 is the undilated mask."""
    from quantize.distill import make_targets

    mask = np.zeros((1, 96), np.float32)
    mask[0, 40:48] = 1.0  # output rows 10 and 11 at hop 4
    ts = TransferSet(
        x=np.zeros((1, 96, 8), np.float32),
        ev_logits=np.array([[4.0, -4.0]], np.float32),
        ev_mask=mask,
        bg_logits=np.full((1, 2), -6.0, np.float32),
        bg_weight=np.zeros(1, np.float32),
        gt=np.array([[1.0, 0.0]], np.float32),
    )
    idx = np.array([0])
    plain = make_targets(ts, idx, 1.0, 4).frame_all[0, :, 0].numpy()
    wide = make_targets(ts, idx, 1.0, 4, dilate=3).frame_all[0, :, 0].numpy()
    assert np.flatnonzero(plain > 0.5).tolist() == [10, 11]
    assert np.flatnonzero(wide > 0.5).tolist() == list(range(7, 15))
    assert wide.max() == plain.max() and np.all(wide >= plain)
    assert make_targets(ts, idx, 1.0, 4, dilate=3).clip_all.tolist() == make_targets(ts, idx, 1.0, 4).clip_all.tolist()


def test_mixture_kd_matches_the_windows_mean_score_to_the_teacher_on_the_mixture() -> None:
    """`mixture_kd`: an extra term that depends on the rows only through their mean probability (at the
    temperature), is least where that mean equals the teacher's output on the mixture, and scales with
    the weight; without the teacher's mixture logits the loss refuses to run."""
    from dataclasses import replace

    from edge.errors import ConfigError
    from quantize.distill import Targets, distill_loss

    t = 2.0
    frame = torch.full((1, 24, 2), 0.2)
    target = torch.tensor([[0.6, 0.1]])
    tg = Targets(frame, frame, frame[:, 0], frame[:, 0], target)
    off = DistillConfig(temperature=t)
    on = replace(off, mixture_kd=1.0)

    def term(z: torch.Tensor, cfg: DistillConfig = on) -> float:
        return float(distill_loss(z, tg, cfg)) - float(distill_loss(z, tg, off))

    flat = (t * torch.logit(target))[:, None, :].expand(1, 24, 2).clone()  # every row's sigmoid(z/T) = target
    # the same mean with unequal rows: half the rows at 0.6 + d, half at 0.6 - d (class 0)
    uneven = flat.clone()
    uneven[0, ::2, 0] = t * torch.logit(torch.tensor(0.7))
    uneven[0, 1::2, 0] = t * torch.logit(torch.tensor(0.5))
    mean_only = term(flat) - term(uneven)
    # the frame and clip terms differ between the two; the mixture term must not
    assert abs(mean_only) < 1e-5, mean_only
    wrong = flat.clone()
    wrong[..., 0] -= 3.0  # the mean moves away from the teacher's 0.6
    assert term(wrong) > term(flat) + 0.05
    assert term(wrong, replace(on, mixture_kd=2.0)) == pytest.approx(2.0 * term(wrong), rel=1e-4)
    with pytest.raises(ConfigError, match="mixture_kd"):
        distill_loss(flat, Targets(frame, frame, frame[:, 0], frame[:, 0]), on)


def test_mixture_kd_teaches_what_only_the_teacher_on_the_mixture_knows() -> None:
    """A task whose clean-window targets say nothing (the event logits are the same for every class, no
    labels) but whose mixture logits name the class: with only the KD terms, a student learns it through
    `mixture_kd` and not without it."""
    from dataclasses import replace

    rng = np.random.default_rng(0)

    def blind(ts: TransferSet) -> TransferSet:
        return replace(
            ts,
            ev_logits=np.full_like(ts.ev_logits, -2.0),
            gt=np.zeros_like(ts.gt),
            mix_logits=np.where(ts.gt > 0, 4.0, -4.0).astype(np.float32),
        )

    train, val = blind(_tiny_set(rng, 256)), blind(_tiny_set(rng, 64))
    labels = val.mix_logits.argmax(1)  # type: ignore[union-attr]
    cfg = DistillConfig(epochs=15, batch_size=32, lr=2e-2, ema_decay=0.0, mixup=0.0, spec_augment=False, alpha=1.0)
    accs = []
    for weight in (0.0, 1.0):
        model, _ = train_student(
            train, val, 3, StudentConfig(channels=(16, 16, 16), dropout=0.0), replace(cfg, mixture_kd=weight), 4, seed=0
        )
        with torch.no_grad():
            p = model(torch.from_numpy(val.x)).numpy().mean(axis=1)  # [N, K] clip means
        accs.append(float((p.argmax(1) == labels).mean()))
    assert accs[1] > 0.9 and accs[0] < 0.6, accs


def test_mixup_mixes_the_mixture_targets_too() -> None:
    from quantize.distill import Targets, mixup

    x = torch.zeros(4, 16, 8)
    frame = torch.zeros(4, 4, 3)
    mix = torch.eye(3)[[0, 1, 2, 0]]
    gen = torch.Generator().manual_seed(0)
    _, out = mixup(x, Targets(frame, frame, frame[:, 0], frame[:, 0], mix), 1.0, 0.0, gen)
    assert out.clip_mix is not None
    assert torch.all(out.clip_mix >= mix) and float(out.clip_mix.sum()) > float(mix.sum())


def test_transfer_set_saves_and_loads_the_mixture_logits_when_present(tmp_path: Path) -> None:
    from dataclasses import replace

    ts = _tiny_set(np.random.default_rng(0), 8)
    ts.save(tmp_path / "plain.npz")
    assert TransferSet.load(tmp_path / "plain.npz").mix_logits is None
    with_mix = replace(ts, mix_logits=np.arange(24, dtype=np.float32).reshape(8, 3))
    with_mix.save(tmp_path / "mix.npz")
    back = TransferSet.load(tmp_path / "mix.npz")
    assert back.mix_logits is not None and np.array_equal(back.mix_logits, with_mix.mix_logits)
    assert np.array_equal(back.x, ts.x)
