"""Log-mel window [B, 96, 64] -> frame-level class probabilities [B, 24, K] (small int8-friendly CNN).

Blocks of Conv3x3 + BatchNorm + ReLU; the first log2(hop) blocks pool time and mels by 2, the rest
pool only mels, so output frame j covers input frames hop*j .. hop*j+hop-1 ('same' padding in time).
Mels are averaged away at the end and a 1x1 conv (a per-frame linear layer) gives the logits.
The fixed per-mel normalisation (training-set mean/std) is the first op, so callers feed raw log-mel.
For export `fold_batchnorm` folds each BatchNorm into its conv; only Conv2d, ReLU, MaxPool, AvgPool,
elementwise affine and Sigmoid remain.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from quantize.audio import F32
from quantize.config import StudentConfig


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))

    def fold(self) -> None:
        """Fold BatchNorm (eval statistics) into the conv's weight and a new bias."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        assert bn.running_var is not None and bn.running_mean is not None
        std = torch.sqrt(bn.running_var + bn.eps)
        scale = bn.weight / std
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, 3, padding=1, bias=True)
        with torch.no_grad():
            conv.weight.copy_(self.conv.weight * scale[:, None, None, None])
            assert conv.bias is not None
            conv.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = conv
        self.bn = nn.Identity()


class Student(nn.Module):
    """[B, frames, mels] log-mel -> logits or probabilities [B, frames / hop, K]."""

    def __init__(self, cfg: StudentConfig, n_classes: int, n_mels: int, hop_frames: int) -> None:
        super().__init__()
        n_time_pools = round(math.log2(hop_frames))
        if 2**n_time_pools != hop_frames:
            raise ValueError(f"output hop {hop_frames} frames must be a power of two")
        if len(cfg.channels) < n_time_pools:
            raise ValueError(f"need at least {n_time_pools} conv blocks for a hop of {hop_frames}")
        self.mean: torch.Tensor
        self.inv_std: torch.Tensor
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("inv_std", torch.ones(n_mels))
        blocks = []
        cin, mels = 1, n_mels
        for i, c in enumerate(cfg.channels):
            fpool = 2 if mels >= 8 else 1
            blocks.append(ConvBlock(cin, c, (2 if i < n_time_pools else 1, fpool)))
            cin, mels = c, mels // fpool
        self.blocks = nn.Sequential(*blocks)
        self.freq_pool = nn.AvgPool2d((1, mels))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Conv2d(cin, n_classes, 1)
        self.n_classes = n_classes

    def set_normalisation(self, mean: F32, std: F32) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
            self.inv_std.copy_(torch.from_numpy(1.0 / np.maximum(np.asarray(std, np.float32), 1e-3)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = ((x - self.mean) * self.inv_std).unsqueeze(1)  # [B, 1, T, M]
        h = self.freq_pool(self.blocks(h))  # [B, C, T/hop, 1]
        z = self.head(self.drop(h))  # [B, K, T/hop, 1]
        return z.squeeze(3).transpose(1, 2)  # [B, T/hop, K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def fold_batchnorm(self) -> None:
        for b in self.blocks:
            assert isinstance(b, ConvBlock)
            b.fold()


def linear_softmax(p: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Clip score from frame probabilities: sum p^2 / sum p over `dim`."""
    return (p * p).sum(dim) / p.sum(dim).clamp_min(1e-7)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, frames: int, mels: int) -> int:
    """Multiply-accumulates of one forward pass on [1, frames, mels] (convs and linear layers)."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += int(out.numel() * k)
        elif isinstance(mod, nn.Linear):
            total += int(out.numel() * mod.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, frames, mels))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total
