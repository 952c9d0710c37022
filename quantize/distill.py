"""Transfer set -> trained fp32 `Student` (knowledge distillation + ground-truth labels).

Targets per window (see quantize.transfer): the event's teacher soft target on its active frames,
max-combined with the background's teacher target (if the background is loud enough to count) and
with the event's ground-truth classes on its active frames. With p = sigmoid(z) the student's frame
probabilities and P = linear_softmax(p) its clip score:

  frame loss = alpha * T^2 * BCE(sigmoid(z / T), teacher_T) + (1 - alpha) * BCE(p, max(teacher_1, gt)),
               averaged over classes, then over rows with weight edge_weight on the last edge_rows rows
               (the newest rows the streaming pipeline keeps, which see no frame to their right) and 1
               on the others (the default, edge_rows 0: a plain mean)
  clip loss  = alpha * BCE(P, max_frames teacher_1)
             + (1 - alpha) * BCE(P, max_frames max(teacher_1, gt))
  loss       = frame_weight * frame loss + (1 - frame_weight) * clip loss
             + mixture_kd * T^2 * BCE(mean_rows sigmoid(z / T), sigmoid(teacher(x) / T))

The last term (off by default) is the teacher's function on the student's own input: the transfer
window's mixture x scored by the teacher (one 0.96 s patch), matched by the student's mean over the
window's rows, which is how both models' clip scores are formed (`quantize.evaluate`). The other targets
are built from the teacher on the clean event and background windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edge.errors import ConfigError
from quantize.audio import F32
from quantize.config import DistillConfig, StudentConfig
from quantize.student import Student, linear_softmax
from quantize.transfer import TransferSet

EPS = 1e-6


@dataclass(frozen=True)
class Targets:
    frame_kd_t: torch.Tensor  # [B, T', K] teacher at temperature T
    frame_all: torch.Tensor  # [B, T', K] max(teacher at T=1, gt)
    clip_kd: torch.Tensor  # [B, K]
    clip_all: torch.Tensor  # [B, K]
    clip_mix: torch.Tensor | None = None  # [B, K] teacher on the mixture window at temperature T


def make_targets(ts: TransferSet, idx: np.ndarray, temperature: float, hop: int, dilate: int = 0) -> Targets:
    """Frame and clip targets of windows `idx`; `dilate`: the event's activity mask widened by that many
    output rows on each side (`DistillConfig.mask_dilate_rows`)."""
    mask = torch.from_numpy(ts.ev_mask[idx])  # [B, F]
    b, f = mask.shape
    m = mask.reshape(b, f // hop, hop).amax(2)  # [B, T']
    if dilate > 0:
        m = F.max_pool1d(m[:, None, :], 2 * dilate + 1, stride=1, padding=dilate)[:, 0, :]
    m = m[:, :, None]  # [B, T', 1]
    ev = torch.from_numpy(ts.ev_logits[idx])[:, None, :]
    bg = torch.from_numpy(ts.bg_logits[idx])[:, None, :]
    bw = torch.from_numpy(ts.bg_weight[idx])[:, None, None]
    gt = torch.from_numpy(ts.gt[idx])[:, None, :]
    kd_t = torch.maximum(torch.sigmoid(ev / temperature) * m, torch.sigmoid(bg / temperature) * bw)
    kd_1 = torch.maximum(torch.sigmoid(ev) * m, torch.sigmoid(bg) * bw)
    all_1 = torch.maximum(kd_1, gt * m)
    mix = None if ts.mix_logits is None else torch.sigmoid(torch.from_numpy(ts.mix_logits[idx]) / temperature)
    return Targets(kd_t, all_1, kd_1.amax(1), all_1.amax(1), mix)


def _bce(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(p.clamp(EPS, 1 - EPS), t)


def row_weights(n_rows: int, edge_rows: int, edge_weight: float) -> torch.Tensor | None:
    """[n_rows] frame-loss weights: edge_weight on the last edge_rows rows, 1 elsewhere, normalised to mean
    1; None when all are 1."""
    k = min(edge_rows, n_rows)
    if k == 0 or edge_weight == 1.0:
        return None
    w = torch.ones(n_rows)
    w[n_rows - k :] = edge_weight
    return w * (n_rows / float(w.sum()))


def distill_loss(z: torch.Tensor, tg: Targets, cfg: DistillConfig) -> torch.Tensor:
    t = cfg.temperature
    p = torch.sigmoid(z)
    pooled = linear_softmax(p, 1)
    w = row_weights(z.shape[1], cfg.edge_rows, cfg.edge_weight)
    if w is None:
        frame = cfg.alpha * t * t * F.binary_cross_entropy_with_logits(z / t, tg.frame_kd_t) + (
            1 - cfg.alpha
        ) * F.binary_cross_entropy_with_logits(z, tg.frame_all)
    else:  # per row (mean over the batch and the classes), then the weighted mean over the rows
        kd = F.binary_cross_entropy_with_logits(z / t, tg.frame_kd_t, reduction="none").mean((0, 2))
        gt = F.binary_cross_entropy_with_logits(z, tg.frame_all, reduction="none").mean((0, 2))
        frame = ((cfg.alpha * t * t * kd + (1 - cfg.alpha) * gt) * w).mean()
    clip = cfg.alpha * _bce(pooled, tg.clip_kd) + (1 - cfg.alpha) * _bce(pooled, tg.clip_all)
    loss = cfg.frame_weight * frame + (1 - cfg.frame_weight) * clip
    if cfg.mixture_kd > 0:
        if tg.clip_mix is None:
            raise ConfigError(
                "distill.mixture_kd > 0 needs the teacher's logits of the mixtures (TransferSet.mix_logits)"
            )
        loss = loss + cfg.mixture_kd * t * t * _bce(torch.sigmoid(z / t).mean(1), tg.clip_mix)
    return loss


def _augment(x: torch.Tensor, mean: torch.Tensor, gen: torch.Generator, max_time: int = 0) -> torch.Tensor:
    """SpecAugment: one random band of up to 8 mels and (if `max_time`) one run of up to `max_time`
    frames per window, filled with the mel mean."""
    b, f, m = x.shape
    width = torch.randint(0, 9, (b,), generator=gen)
    lo = (torch.rand(b, generator=gen) * (m - width)).long()
    bands = torch.arange(m)[None, :]
    cut = (bands >= lo[:, None]) & (bands < (lo + width)[:, None])  # [B, M]
    x = torch.where(cut[:, None, :], mean[None, None, :], x)
    if max_time > 0:
        length = torch.randint(0, max_time + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (f - length)).long()
        frames = torch.arange(f)[None, :]
        tcut = (frames >= start[:, None]) & (frames < (start + length)[:, None])  # [B, F]
        x = torch.where(tcut[:, :, None], mean[None, None, :], x)
    return x


LOG_OFFSET = 0.001
"""The frontend's log(mel + offset) constant (edge.dsp.frontend): mixing happens on mel power."""


def filter_augment(x: torch.Tensor, max_db: float, gen: torch.Generator) -> torch.Tensor:
    """FilterAugment (Nam et al., 2022, linear type): each window's mel powers times its own random gain
    curve, linear in dB across the mels between 2 to 5 points (the first and last mel among them) whose
    gains are uniform in -max_db .. +max_db: the same sound through another microphone, wall or room.
    Applied to the mel power (log(exp(x) - c) + gain, as mixup adds powers); the targets are unchanged."""
    b, _, m = x.shape
    if max_db <= 0.0 or b == 0:
        return x
    mels = torch.arange(m, dtype=x.dtype)
    curves = []
    for _ in range(b):
        n = int(torch.randint(2, 6, (1,), generator=gen))
        inner = torch.sort(torch.rand(n - 2, generator=gen) * (m - 1)).values
        at = torch.cat([torch.zeros(1), inner, torch.full((1,), float(m - 1))]).to(x.dtype)
        gain = (torch.rand(n, generator=gen) * 2.0 - 1.0).to(x.dtype) * max_db
        seg = torch.clamp(torch.searchsorted(at, mels, right=True) - 1, 0, n - 2)
        frac = (mels - at[seg]) / torch.clamp(at[seg + 1] - at[seg], min=1e-6)
        curves.append(gain[seg] + frac.clamp(0.0, 1.0) * (gain[seg + 1] - gain[seg]))
    scale = 10.0 ** (torch.stack(curves) / 10.0)  # [B, M] power gains
    power = (torch.exp(x) - LOG_OFFSET).clamp_min(0.0)
    return torch.log(power * scale[:, None, :] + LOG_OFFSET)


def mixup(
    x: torch.Tensor, tg: Targets, share: float, max_atten_db: float, gen: torch.Generator
) -> tuple[torch.Tensor, Targets]:
    """Mix a random `share` of the windows with another window of the batch, attenuated by 0 ..
    `max_atten_db` dB, adding mel powers (log(exp(a) - c + g (exp(b) - c) + c)), as two sounds add.
    Both windows' events stay audible at these gains, so the targets are their element-wise maximum."""
    b = x.shape[0]
    chosen = torch.rand(b, generator=gen) < share
    if b < 2 or not bool(chosen.any()):
        return x, tg
    partner = torch.randperm(b, generator=gen)
    gain = 10.0 ** (-torch.rand(b, generator=gen) * max_atten_db / 10.0)  # power gain
    pa = (torch.exp(x) - LOG_OFFSET).clamp_min(0.0)
    pb = (torch.exp(x[partner]) - LOG_OFFSET).clamp_min(0.0)
    mixed = torch.log(pa + gain[:, None, None] * pb + LOG_OFFSET)
    sel3 = chosen[:, None, None]
    sel2 = chosen[:, None]

    def mx(t: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        return torch.where(sel, torch.maximum(t, t[partner]), t)

    mix = None if tg.clip_mix is None else mx(tg.clip_mix, sel2)
    out = Targets(mx(tg.frame_kd_t, sel3), mx(tg.frame_all, sel3), mx(tg.clip_kd, sel2), mx(tg.clip_all, sel2), mix)
    return torch.where(sel3, mixed, x), out


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers (integer
    buffers, e.g. BatchNorm's batch counter, are copied). The decay ramps up as (1 + n) / (10 + n)
    over the first steps so the average does not remember the random initialisation."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for k, v in model.state_dict().items():
            avg = self.state[k]
            if avg.is_floating_point():
                if not torch.equal(avg, v):  # constants (the input normalisation) stay exact
                    avg.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                avg.copy_(v)


def train_student(
    train: TransferSet,
    val: TransferSet,
    n_classes: int,
    student_cfg: StudentConfig,
    cfg: DistillConfig,
    hop: int,
    seed: int,
) -> tuple[Student, dict[str, float | int | list[float]]]:
    """Train with AdamW + one-cycle LR; keep the epoch with the lowest validation loss (of the
    averaged weights when `cfg.ema_decay` > 0)."""
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Student(student_cfg, n_classes, train.x.shape[2], hop)
    mean: F32 = train.x.mean(axis=(0, 1))
    std: F32 = train.x.std(axis=(0, 1))
    model.set_normalisation(mean, std)
    mean_t = torch.from_numpy(mean)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    best_loss, best_state, best_epoch = float("inf"), None, -1
    history: list[float] = []
    t0, cpu0 = time.monotonic(), time.process_time()
    stopped_early = False
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            x = torch.from_numpy(train.x[idx])
            tg = make_targets(train, idx, cfg.temperature, hop, cfg.mask_dilate_rows)
            if cfg.filter_augment_db > 0:
                x = filter_augment(x, cfg.filter_augment_db, gen)
            if cfg.mixup > 0:
                x, tg = mixup(x, tg, cfg.mixup, cfg.mixup_gain_db, gen)
            if cfg.spec_augment:
                x = _augment(x, mean_t, gen, cfg.time_mask_frames)
            loss = distill_loss(model.logits(x), tg, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            total += loss.item()
        if ema is not None:  # validate (and keep) the averaged weights; train on from the raw ones
            raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema.state)
        val_loss = evaluate_loss(model, val, cfg, hop)
        history.append(val_loss)
        elapsed = time.monotonic() - t0
        cpu_min = (time.process_time() - cpu0) / 60.0  # the budget: load on the machine doesn't change the model
        print(
            f"  epoch {epoch + 1}/{cfg.epochs}: train loss {total / steps_per_epoch:.4f}, "
            f"val loss {val_loss:.4f}, {elapsed:.0f} s",
            flush=True,
        )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ema is not None:
            model.load_state_dict(raw)
        if cpu_min > cfg.max_minutes and epoch + 1 < cfg.epochs:
            print(f"  stopping after {epoch + 1} epochs: budget of {cfg.max_minutes} CPU minutes spent", flush=True)
            stopped_early = True
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    info: dict[str, float | int | list[float]] = {
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "val_loss_history": history,
        "train_windows": len(train),
        "val_windows": len(val),
        "train_seconds": round(time.monotonic() - t0, 1),
        "stopped_early": int(stopped_early),
    }
    return model, info


def evaluate_loss(model: Student, ts: TransferSet, cfg: DistillConfig, hop: int) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ts), 256):
            idx = np.arange(s, min(s + 256, len(ts)))
            z = model.logits(torch.from_numpy(ts.x[idx]))
            tg = make_targets(ts, idx, cfg.temperature, hop, cfg.mask_dilate_rows)
            total += float(distill_loss(z, tg, cfg)) * len(idx)
            n += len(idx)
    return total / max(n, 1)


def predict_frames(model: Student, x: F32, batch: int = 256) -> F32:
    """fp32 student on log-mel windows [N, F, M] -> frame probabilities [N, F / hop, K]."""
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[s : s + batch]))).numpy())
    return np.concatenate(outs).astype(np.float32)
