"""Log-mel window [B, 96, 64] -> frame-level class probabilities [B, 24, K] (small int8-friendly CNN).

Two trunks (`StudentConfig.arch`):
- "cnn": blocks of Conv3x3 + BatchNorm + ReLU; the first log2(hop) blocks pool time and mels by 2,
  the rest pool only mels, so output frame j covers input frames hop*j .. hop*j+hop-1 ('same'
  padding in time).
- "dsconv": a full Conv + BatchNorm + ReLU stem, then depthwise-separable blocks (depthwise conv +
  BatchNorm + ReLU, pointwise 1x1 conv + BatchNorm + ReLU). The stem and the next log2(hop) - 1
  blocks stride time by 2 with a 4-tap time kernel (padding 1), so output frame j is centred on input
  frames hop*j .. hop*j+hop-1 as in "cnn"; later depthwise convs see `kernel_time` output frames
  (centred). Every layer strides mels by 2 until `min_mels` remain, so most work runs on few mels.
  `causal`: the same layers with all of their time padding before the first frame, so output frame j
  depends on input frames up to hop*j+hop-1 only (no look-ahead): the streaming pipeline keeps the
  newest outputs of each window, which a centred kernel computes against zero padding where its
  future frames would be; a causal one computes them as in training.
  `stem` "patch" replaces the stem conv with `PatchStem`: each 2x2 block of frames and mels becomes 4
  channels of a 1x1 conv (no overlap between output rows), which runs as a GEMM on the device.
Mels are averaged away at the end and a 1x1 conv (a per-frame linear layer) gives the logits.
The fixed per-mel normalisation (training-set mean/std) is the first op, so callers feed raw log-mel.
For export `fold_batchnorm` folds each BatchNorm into its conv; only Conv2d (grouped for depthwise),
ReLU, MaxPool, AvgPool, elementwise affine and Sigmoid remain.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from quantize.audio import F32
from quantize.config import StudentConfig


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to `conv` followed by `bn` (eval statistics); any stride/groups/padding."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[:, None, None, None])
        assert folded.bias is not None
        folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return folded


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) + BatchNorm + ReLU; `fold` turns it into Conv2d (with bias) + ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        groups: int = 1,
        causal: bool = False,
    ) -> None:
        super().__init__()
        # causal: all of the time padding before the first frame (a zero pad op; the conv pads only mels)
        self.pad: nn.Module = nn.Identity()
        if causal:
            self.pad = nn.ZeroPad2d((padding[1], padding[1], 2 * padding[0], 0))
            padding = (0, 0)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))

    def fold(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fold_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


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
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fold_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class PatchStem(ConvBNReLU):
    """Each (2 frames x 2 mels) block of the one-channel input -> 4 channels, then a 1x1 `ConvBNReLU`:
    output [B, cout, T/2, M/2], output row j seeing input frames 2j and 2j+1 only.

    The same receptive field per output as a (2, 2) conv with stride (2, 2), written so that the int8
    graph has a 1x1 CONV_2D (a GEMM with K = 4) where a one-input-channel conv becomes a DEPTHWISE_CONV_2D
    with a channel multiplier: measured with ai-edge-litert 2.3 (XNNPACK, one thread) on 960 frames,
    0.30 ms against 0.72 ms for the 4x3 stride-2 conv stem of the same output shape."""

    def __init__(self, cout: int) -> None:
        super().__init__(4, cout, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, m = x.shape
        h = x.reshape(b, t // 2, 2, m // 2, 2).permute(0, 2, 4, 1, 3).reshape(b, 4, t // 2, m // 2)
        return super().forward(h)


class SpaceToDepthStem(nn.Module):
    """A folded one-input-channel conv stem with a (4, 3) kernel and stride (2, 2) (`ConvBNReLU` after
    `fold`), rewritten for the int8 TFLite graph: the same padding, then each 2x2 block of frames and mels
    becomes 4 channels (space to depth) and a (2, 2) conv with stride 1 on them computes the same sums.

    Output (j, m) of the stem sums taps (dt, df) over padded rows 2j + dt and columns 2m + df; on the
    2x2 blocks that is tap (dt // 2, df // 2) of channel (dt % 2, df % 2). The (2, 2) kernel covers 4
    columns where the stem has 3, so a quarter of its weights are zero: the same products, summed in
    another order in float (within 1e-5 of the stem), and the same int8 arithmetic once the int8 graph
    keeps the stem's quantisation parameters (`quantize.ptq.quantize_tflite` does). Why: LiteRT turns a
    conv with one input channel into a DEPTHWISE_CONV_2D with a channel multiplier, which XNNPACK runs
    with a 25-tap kernel of which 12 taps are used; the (2, 2) conv on 4 channels is a CONV_2D (a GEMM).
    Measured with ai-edge-litert 2.3 (XNNPACK, one thread) on the shipped s13 student, this rewrite alone:
    1.21x faster for the 96-frame model, 1.19x for the 48-frame streaming model, outputs identical (with
    the rest of `Student.tflite_view` 1.39x; README)."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.pad_lrtb = pad  # mels left, right; time top, bottom (F.pad's order)
        w = conv.weight.detach()  # [C, 1, 4, 3]
        c = w.shape[0]
        w2 = torch.zeros(c, 4, 2, 2, dtype=w.dtype)
        for dt in range(4):
            for df in range(3):
                w2[:, (dt % 2) * 2 + df % 2, dt // 2, df // 2] = w[:, 0, dt, df]
        self.conv = nn.Conv2d(4, c, 2)
        assert conv.bias is not None and self.conv.bias is not None
        with torch.no_grad():
            self.conv.weight.copy_(w2)
            self.conv.bias.copy_(conv.bias.detach())
        self.act = nn.ReLU()

    @staticmethod
    def of(block: nn.Module) -> SpaceToDepthStem | None:
        """The rewrite of `block` when it is a folded (4, 3) stride-(2, 2) one-channel conv stem with one
        frame and one mel of padding on each side (or, causal, two frames before the first); else None."""
        if not isinstance(block, ConvBNReLU) or isinstance(block, PatchStem) or not isinstance(block.bn, nn.Identity):
            return None
        cv = block.conv
        if (cv.in_channels, cv.groups, tuple(cv.kernel_size), tuple(cv.stride), tuple(cv.dilation)) != (
            1, 1, (4, 3), (2, 2), (1, 1)
        ) or cv.bias is None:  # fmt: skip
            return None
        if isinstance(block.pad, nn.ZeroPad2d):  # causal: the time padding all before the first frame
            if tuple(cv.padding) != (0, 0) or tuple(block.pad.padding) != (1, 1, 2, 0):
                return None
            return SpaceToDepthStem(cv, (1, 1, 2, 0))
        if not isinstance(block.pad, nn.Identity) or tuple(cv.padding) != (1, 1):
            return None
        return SpaceToDepthStem(cv, (1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, self.pad_lrtb)
        b, _, t, m = x.shape  # t, m even: frames a multiple of the output hop, an even mel count
        # [B, 1, T, M] is [B, T, M, 1] in memory: blocks to channels in that layout (one transpose in the
        # TFLite graph), then back to NCHW for the conv (the converter cancels that permute with its own)
        h = x.reshape(b, t // 2, 2, m // 2, 2).permute(0, 1, 3, 2, 4).reshape(b, t // 2, m // 2, 4)
        return self.act(self.conv(h.permute(0, 3, 1, 2)))


class DSBlock(nn.Module):
    """Depthwise conv (+BN+ReLU) then pointwise 1x1 conv (+BN+ReLU)."""

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], causal: bool = False
    ) -> None:
        super().__init__()
        # a 4-tap time kernel with stride 2 and padding 1 centres output j on inputs 2j, 2j+1
        pad = (1 if kernel[0] == 4 else kernel[0] // 2, kernel[1] // 2)
        self.dw = ConvBNReLU(cin, cin, kernel, stride, pad, groups=cin, causal=causal)
        self.pw = ConvBNReLU(cin, cout, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))

    def fold(self) -> None:
        self.dw.fold()
        self.pw.fold()


def _cnn_trunk(cfg: StudentConfig, n_mels: int, n_time_pools: int) -> tuple[list[nn.Module], int, int]:
    blocks: list[nn.Module] = []
    cin, mels = 1, n_mels
    for i, c in enumerate(cfg.channels):
        fpool = 2 if mels >= 8 else 1
        blocks.append(ConvBlock(cin, c, (2 if i < n_time_pools else 1, fpool)))
        cin, mels = c, mels // fpool
    return blocks, cin, mels


def _dsconv_trunk(cfg: StudentConfig, n_mels: int, n_time_pools: int) -> tuple[list[nn.Module], int, int]:
    if cfg.kernel_time % 2 == 0:
        raise ValueError(f"kernel_time {cfg.kernel_time} must be odd")
    blocks: list[nn.Module] = []
    mels = n_mels
    for i, c in enumerate(cfg.channels):
        tstride = 2 if i < n_time_pools else 1
        fstride = 2 if mels // 2 >= cfg.min_mels else 1
        if i == 0 and cfg.stem == "patch":
            if (tstride, fstride) != (2, 2) or mels % 2:
                raise ValueError(
                    f"a patch stem halves time and mels: needs an output hop >= 2 and an even mel count, got {n_mels}"
                )
            blocks.append(PatchStem(c))
            mels //= 2
            continue
        if i == 0:
            kt = 4 if tstride == 2 else 3
            pad = (1, 1)
            blocks.append(ConvBNReLU(1, c, (kt, 3), (tstride, fstride), pad, causal=cfg.causal))
        else:
            kt = 4 if tstride == 2 else cfg.kernel_time
            blocks.append(DSBlock(cfg.channels[i - 1], c, (kt, 3), (tstride, fstride), causal=cfg.causal))
        mels = (mels + 2 - 3) // fstride + 1
    return blocks, cfg.channels[-1], mels


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
        if cfg.causal and cfg.arch != "dsconv":
            raise ValueError(f"a causal student needs arch 'dsconv', not {cfg.arch!r}")
        if cfg.arch == "cnn":
            blocks, cin, mels = _cnn_trunk(cfg, n_mels, n_time_pools)
        elif cfg.arch == "dsconv":
            blocks, cin, mels = _dsconv_trunk(cfg, n_mels, n_time_pools)
        else:
            raise ValueError(f"unknown student arch {cfg.arch!r}")
        self.blocks = nn.Sequential(*blocks)
        self.freq_pool = nn.AvgPool2d((1, mels))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Conv2d(cin, n_classes, 1)
        self.n_classes = n_classes
        # learned state/trait heads (quantize.heads): a separate 1x1 conv on the same features, joined
        # after the sigmoid, so its int8 ranges never touch the event logits' quantisation
        self.aux_head: nn.Conv2d | None = None

    def set_normalisation(self, mean: F32, std: F32) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
            self.inv_std.copy_(torch.from_numpy(1.0 / np.maximum(np.asarray(std, np.float32), 1e-3)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Event logits [B, T/hop, K] (the learned heads' are not among them)."""
        z = self.head(self.features(x))  # [B, K, T/hop, 1]
        return z.squeeze(3).transpose(1, 2)  # [B, T/hop, K]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frame features both 1x1 heads see [B, C, T/hop, 1] (after dropout)."""
        h = ((x - self.mean) * self.inv_std).unsqueeze(1)  # [B, 1, T, M]
        return self.drop(self.freq_pool(self.blocks(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, T/hop, K] (with learned heads: [B, T/hop, K + H], the heads' after)."""
        if self.aux_head is None:
            return torch.sigmoid(self.logits(x))
        h = self.features(x)
        ev = torch.sigmoid(self.head(h).squeeze(3).transpose(1, 2))
        aux = torch.sigmoid(self.aux_head(h).squeeze(3).transpose(1, 2))
        return torch.cat([ev, aux], dim=2)

    def add_aux_head(self, n_outputs: int) -> nn.Conv2d:
        """A (zero) learned-head conv of `n_outputs` columns on the event head's features."""
        self.aux_head = nn.Conv2d(self.head.in_channels, n_outputs, 1)
        nn.init.zeros_(self.aux_head.weight)
        assert self.aux_head.bias is not None
        nn.init.zeros_(self.aux_head.bias)
        return self.aux_head

    def onnx_view(self) -> nn.Module:
        """The same function for ONNX export, in the graph ONNX Runtime runs fastest (`OnnxView`)."""
        return OnnxView(self)

    def tflite_view(self) -> Student:
        """The same function for TFLite export, in the graph LiteRT runs fastest: a copy whose conv stem
        (BatchNorm folded) is a `SpaceToDepthStem`, and without the frequency pooling when the trunk leaves
        one mel (an average over one value: in the int8 graph a 1x1 AVERAGE_POOL_2D, which XNNPACK does not
        take, so LiteRT ran the graph as two delegate partitions with the pool between them); `self` when
        neither applies."""
        stem = SpaceToDepthStem.of(self.blocks[0])
        if self.mean.numel() % 2:
            stem = None  # 2x2 blocks of mels need an even mel count
        pool = tuple(getattr(self.freq_pool, "kernel_size", ())) == (1, 1)
        if stem is None and not pool:
            return self
        view = copy.deepcopy(self)
        if stem is not None:
            view.blocks[0] = stem
        if pool:
            view.freq_pool = nn.Identity()  # type: ignore[assignment]
        return view

    def fold_batchnorm(self) -> None:
        for b in self.blocks:
            assert isinstance(b, ConvBlock | ConvBNReLU | DSBlock)  # PatchStem is a ConvBNReLU
            b.fold()


class OnnxView(nn.Module):
    """A `Student`'s forward (same outputs, fp32 bit for bit) written for ONNX Runtime's int8 kernels.

    - The frequency pooling is skipped when the trunk leaves one mel (an average over one value).
    - With learned heads, the event head and the heads' conv become one 1x1 conv (their weights stacked)
      followed by one sigmoid: the same columns in the same order, and no Concat.
    In the QDQ graph of the two-conv form the trunk's last quantised output feeds two convs, and ONNX
    Runtime then runs both as float convs that dequantise their weights on every call. Measured on s13's
    fold-0 student with its heads (ONNX Runtime, one thread, this host): 0.101-0.107 ms per 0.96 s window
    against 0.133-0.135, window top-1 agreement with fp32 0.940 against 0.943. The merged conv shares
    one int8 output scale between the event and head logits; the TFLite export keeps them apart."""

    def __init__(self, model: Student) -> None:
        super().__init__()
        self.model = model
        self.head: nn.Conv2d = model.head
        if model.aux_head is not None:
            h, a = model.head, model.aux_head
            assert h.bias is not None and a.bias is not None
            self.head = nn.Conv2d(h.in_channels, h.out_channels + a.out_channels, 1)
            with torch.no_grad():
                self.head.weight.copy_(torch.cat([h.weight, a.weight]))
                assert self.head.bias is not None
                self.head.bias.copy_(torch.cat([h.bias, a.bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        f = m.blocks(((x - m.mean) * m.inv_std).unsqueeze(1))
        if f.shape[3] != 1:
            f = m.freq_pool(f)
        return torch.sigmoid(self.head(m.drop(f)).squeeze(3).transpose(1, 2))


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
