"""Quantisation-aware fine-tuning (QAT) for when int8 post-training quantisation loses too much.

The pipeline first quantises with PTQ (quantize.ptq) and measures what it cost on the validation
windows (`window_accuracy`: the share of windows with a ground-truth class whose top pooled class is
one of them). If the int8 model loses more than `quant.qat_when_drop_points` points, or QAT is forced
with 0, the BatchNorm-folded student is fine-tuned for `quant.qat_epochs` epochs at a low learning rate
with the int8 arithmetic simulated in the forward pass ("fake quantisation", straight-through
gradients): every conv weight is rounded per output channel to symmetric int8 (scale max|w| / 127, the
rule of the PT2E per-channel weight observer), and every conv input and the logits are rounded per
tensor to int8 with ranges tracked as running min / max (seeded from the calibration windows). The
weights so learnt sit where int8 rounding hurts least; the pipeline then quantises them with the same
PTQ exporters as before (TFLite PT2E and ONNX QDQ) and keeps whichever of PTQ and QAT scores better.

Why not litert-torch's own QAT (`prepare_qat_pt2e` with `is_qat=True`): with torch 2.13 its conv+BN
pattern annotator fails inside torch.export (it exports a plain function), so the simulation is done
here in eager PyTorch, which also keeps QAT independent of the converter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from quantize.audio import F32
from quantize.config import DistillConfig, QuantConfig
from quantize.distill import EPS, make_targets
from quantize.student import Student, linear_softmax
from quantize.transfer import TransferSet

FrameFn = Callable[[F32], F32]


def window_accuracy(frames_fn: FrameFn, ts: TransferSet, hop: int, batch: int = 128) -> float:
    """Share of windows with a ground-truth class whose top linear-softmax-pooled class is one of
    them (windows without ground truth are not counted)."""
    has_gt = np.flatnonzero(ts.gt.max(axis=1) > 0.5)
    if has_gt.size == 0:
        return float("nan")
    hits = 0
    for s in range(0, has_gt.size, batch):
        idx = has_gt[s : s + batch]
        fr = frames_fn(np.ascontiguousarray(ts.x[idx]))  # [B, T', K]
        pooled = (fr * fr).sum(axis=1) / np.maximum(fr.sum(axis=1), 1e-7)
        top = pooled.argmax(axis=1)
        hits += int(np.sum(ts.gt[idx, top] > 0.5))
    return hits / has_gt.size


class WeightFakeQuant(nn.Module):
    """Parametrisation: symmetric per-output-channel int8 rounding with a straight-through gradient."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-8)
        scale = (amax / 127.0).float()
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


class ActFakeQuant:
    """Per-tensor asymmetric int8 rounding of a tensor, range tracked as a running min / max."""

    def __init__(self, momentum: float = 0.01) -> None:
        self.lo: float | None = None
        self.hi: float | None = None
        self.momentum = momentum
        self.observe_only = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = float(x.detach().min()), float(x.detach().max())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        elif self.observe_only:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        else:
            self.lo += self.momentum * (lo - self.lo)
            self.hi += self.momentum * (hi - self.hi)
        if self.observe_only:
            return x
        scale = max(self.hi - self.lo, 1e-8) / 255.0
        zero = round(-128 - self.lo / scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, max(-128, min(127, zero)), -128, 127)


class FakeQuantised:
    """`model` with int8 arithmetic simulated: weight parametrisations plus input / logit hooks."""

    def __init__(self, model: Student) -> None:
        self.model = model
        self.acts: list[ActFakeQuant] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        for conv in self.convs:
            parametrize.register_parametrization(conv, "weight", WeightFakeQuant())
            fq = ActFakeQuant()
            self.acts.append(fq)
            self._handles.append(conv.register_forward_pre_hook(lambda _m, inp, fq=fq: (fq(inp[0]),)))
        out_fq = ActFakeQuant()
        self.acts.append(out_fq)
        self._handles.append(model.head.register_forward_hook(lambda _m, _i, out: out_fq(out)))

    def start(self) -> None:
        """End the observation phase: from now on tensors are rounded."""
        for a in self.acts:
            a.observe_only = False

    def remove(self) -> None:
        """Drop the hooks and keep the fine-tuned float weights (the PTQ exporters quantise them)."""
        for h in self._handles:
            h.remove()
        for conv in self.convs:
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)


@dataclass(frozen=True)
class QatResult:
    epochs: int
    seconds: float
    loss_history: list[float]


def _loss(p: torch.Tensor, ts: TransferSet, idx: np.ndarray, dcfg: DistillConfig, hop: int) -> torch.Tensor:
    tg = make_targets(ts, idx, 1.0, hop, dcfg.mask_dilate_rows)
    frame = F.binary_cross_entropy(p.clamp(EPS, 1 - EPS), tg.frame_all)
    clip = F.binary_cross_entropy(linear_softmax(p, 1).clamp(EPS, 1 - EPS), tg.clip_all)
    return dcfg.frame_weight * frame + (1 - dcfg.frame_weight) * clip


def qat_finetune(
    model: Student,
    train: TransferSet,
    calib: F32,
    dcfg: DistillConfig,
    qcfg: QuantConfig,
    hop: int,
    seed: int,
) -> QatResult:
    """Fine-tune a BatchNorm-folded `model` in place with fake int8 quantisation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 7)
    batch = dcfg.batch_size
    t0 = time.monotonic()
    fq = FakeQuantised(model)
    try:
        model.eval()
        with torch.no_grad():  # activation ranges first come from the calibration windows, as in PTQ
            for s in range(0, calib.shape[0], batch):
                model(torch.from_numpy(np.ascontiguousarray(calib[s : s + batch])))
        fq.start()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=qcfg.qat_lr, weight_decay=0.0)
        steps = max(1, len(train) // batch)
        history: list[float] = []
        for epoch in range(qcfg.qat_epochs):
            model.train()
            order = rng.permutation(len(train))
            total = 0.0
            for s in range(steps):
                idx = np.sort(order[s * batch : (s + 1) * batch])
                loss = _loss(model(torch.from_numpy(train.x[idx])), train, idx, dcfg, hop)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.item())
            history.append(total / steps)
            print(
                f"  QAT epoch {epoch + 1}/{qcfg.qat_epochs}: loss {history[-1]:.4f}, {time.monotonic() - t0:.0f} s",
                flush=True,
            )
    finally:
        fq.remove()
        model.eval()
    return QatResult(qcfg.qat_epochs, round(time.monotonic() - t0, 1), history)
