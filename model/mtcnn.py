"""The MTCNN cascade (Zhang et al. 2016) on facenet-pytorch's P-Net, R-Net and O-Net weights, batched per stage.

facenet-pytorch's ``detect_face`` cuts every candidate box out of the image and resizes it in a Python loop (one
area-resampling call per box, ~75 boxes per portrait), and it clips boxes that cross the border to the image
before resizing, which stretches them: on tight face crops the later stages then see distorted faces, reject them
or regress boxes far outside the photo, and a second pass on a black-bordered copy was needed. Here each stage
resamples all of its boxes in one ``roi_align`` call, with the region outside the image read as black (what the
original MTCNN's zero padding does), so border faces need no second pass (``FaceDetector`` still retries with a
black border when nothing is found, for faces that fill the frame). The stages, thresholds, pyramid, NMS rules and box
regressions are otherwise those of ``detect_face``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

WINDOW = 12  # P-Net's window (and stride-2 grid) in pixels: the smallest face at a pyramid level
# NMS overlap thresholds, as facenet-pytorch's detect_face uses them (IoU, except the last: overlap / smaller area).
NMS_PER_SCALE, NMS_ACROSS_SCALES, NMS_RNET, NMS_ONET_MIN = 0.5, 0.7, 0.7, 0.7


def _scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    m = WINDOW / min_face
    side = min(height, width) * m
    scales = []
    while side >= WINDOW:
        scales.append(m)
        m *= factor
        side *= factor
    return scales


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square on its longer side, same centre (``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply the networks' box offsets (``bbreg``): offsets are fractions of the inclusive box size."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + reg[:, :4] * torch.stack([w, h, w, h], 1)


def _crops(images: torch.Tensor, image_inds: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """All boxes resampled to ``size`` x ``size`` in one call, black outside the image.

    Boxes are truncated to whole pixels as ``detect_face`` does, covering pixels trunc(x1) - 1 .. trunc(x2) - 1.
    ``roi_align`` with two samples per output cell and axis (``sampling_ratio=2``, ``aligned=True``) averages the
    image under each cell, close to area resampling at these 1-4x reductions; samples beyond the image read zero.
    """
    b = boxes.trunc()
    rois = torch.cat([image_inds.to(boxes.dtype).unsqueeze(1), b[:, :2] - 1, b[:, 2:4]], 1)
    return roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with overlap = intersection / smaller area (MTCNN's last stage), per group."""
    keep: list[int] = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        order = idx[np.argsort(scores[idx], kind="stable")]
        x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
        area = (x2 - x1 + 1) * (y2 - y1 + 1)
        while order.size:
            i, rest = order[-1], order[:-1]
            keep.append(int(i))
            w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            overlap = w * h / np.minimum(area[i], area[rest])
            order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _best_per_image(boxes: torch.Tensor, inds: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` boxes per image, the best-scoring ones (column 4), in their original order."""
    if len(boxes) <= limit or (torch.bincount(inds) <= limit).all():
        return boxes, inds
    order = torch.argsort(boxes[:, 4], descending=True, stable=True)
    rank = torch.zeros_like(inds)
    sorted_inds = inds[order]
    for k in sorted_inds.unique():  # rank of each box among its image's boxes, best first
        where = (sorted_inds == k).nonzero().squeeze(1)
        rank[order[where]] = torch.arange(len(where), device=inds.device)
    keep = (rank < limit).nonzero().squeeze(1)
    return boxes[keep], inds[keep]


def _pack(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Top-left (y, x) offsets, all even, for pyramid levels (largest first) in columns as tall as the first
    level; and the canvas size. Wastes ~20% of the canvas, against one P-Net call per level."""
    height = sizes[0][0]
    offsets: list[tuple[int, int]] = []
    col_x = col_w = y = 0
    for lh, lw in sizes:
        if offsets and y + lh > height:
            col_x, col_w, y = col_x + col_w + col_w % 2, 0, 0
        offsets.append((y, col_x))
        y += lh + lh % 2
        col_w = max(col_w, lw)
    return offsets, (height, col_x + col_w)


def _level_map(
    sizes: list[tuple[int, int]], offsets: list[tuple[int, int]], out_shape: torch.Size, device: torch.device
) -> torch.Tensor:
    """For each P-Net output cell, the level whose image wholly holds its 12 px window, or -1."""
    level = torch.full(tuple(out_shape), -1, dtype=torch.long, device=device)
    for k, ((lh, lw), (oy, ox)) in enumerate(zip(sizes, offsets)):
        if lh >= WINDOW and lw >= WINDOW:
            level[oy // 2 : oy // 2 + (lh - WINDOW) // 2 + 1, ox // 2 : ox // 2 + (lw - WINDOW) // 2 + 1] = k
    return level


class _ChannelsLast(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.contiguous(memory_format=torch.channels_last))


class MTCNNCascade(nn.Module):
    """P-Net over an image pyramid, then R-Net and O-Net on the surviving boxes, each stage one batched pass."""

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        runtime: str = "torch",
        max_candidates: tuple[int, int] = (400, 100),
    ) -> None:
        """``max_candidates``: per image, at most this many best-scoring boxes go to R-Net and to O-Net. A portrait
        gives ~10-40 and ~1-5; a textured or noisy upload can give thousands, and the later stages' cost is
        proportional to them, so the cap bounds detection work for any input."""
        super().__init__()
        self.max_candidates = max_candidates
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # weights ship inside the wheel

        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.thresholds = tuple(thresholds)
        self.factor = factor
        self.eval()
        if runtime == "onnxruntime":
            from model.onnx_runtime import OrtModule

            self.stages = nn.ModuleList(
                [
                    OrtModule(self.pnet, [torch.zeros(1, 3, 24, 24)], [(0, 2, 3)]),
                    OrtModule(self.rnet, [torch.zeros(1, 3, 24, 24)], [(0,)]),
                    OrtModule(self.onet, [torch.zeros(1, 3, 48, 48)], [(0,)]),
                ]
            )
        elif runtime == "torch":
            # channels_last for R-Net and O-Net: this CPU build's max_pool2d is 6-20x slower on NCHW batches of
            # these shapes, and both pool after every conv (measured; P-Net's one map is faster left NCHW).
            self.stages = nn.ModuleList([self.pnet, _ChannelsLast(self.rnet), _ChannelsLast(self.onet)])
        else:
            raise ValueError(f"runtime must be 'torch' or 'onnxruntime', got {runtime!r}")

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, min_face: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """``images``: B x H x W x 3 uint8. Returns per image (boxes N x 5 [x1, y1, x2, y2, score], points N x 5 x 2)."""
        dev = next(self.pnet.parameters()).device
        x = images.to(dev).permute(0, 3, 1, 2).float().contiguous()
        n, _, h, w = x.shape
        boxes, inds = self._proposals(x, min_face)
        for stage in (1, 2):
            if not len(boxes):
                break
            boxes, inds = _best_per_image(boxes, inds, self.max_candidates[stage - 1])
            boxes, inds, points = self._refine(stage, x, boxes, inds)
        if not len(boxes):
            return [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in range(n)]
        b, p, i = boxes.cpu().numpy(), points.cpu().numpy(), inds.cpu().numpy()
        keep = _nms_min(b[:, :4], b[:, 4], i, NMS_ONET_MIN)
        b, p, i = b[keep], p[keep], i[keep]
        return [(b[i == k], p[i == k]) for k in range(n)]

    def _proposals(self, x: torch.Tensor, min_face: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net windows over the pyramid, NMS per scale (0.5) and across scales (0.7), regressed, squared.

        The pyramid's levels are packed side by side into one canvas and P-Net runs once on it instead of once per
        level (per-call overhead dominated on small photos). P-Net is a 12 px window on a 2 px grid, so at even
        offsets every window that lies wholly inside one level computes exactly what that level alone would give;
        windows that cross a level's edge are ignored.
        """
        h, w = x.shape[2:]
        scales = _scales(h, w, min_face, self.factor)
        if not scales:
            return x.new_zeros((0, 5)), torch.zeros(0, dtype=torch.long, device=x.device)
        sizes = [(int(h * s + 1), int(w * s + 1)) for s in scales]
        offsets, (canvas_h, canvas_w) = _pack(sizes)
        canvas = x.new_zeros((x.shape[0], 3, canvas_h, canvas_w))
        for (lh, lw), (oy, ox) in zip(sizes, offsets):
            canvas[:, :, oy : oy + lh, ox : ox + lw] = F.interpolate(x, size=(lh, lw), mode="area")
        reg, probs = self.stages[0](_normalise(canvas))
        level = _level_map(sizes, offsets, probs.shape[2:], x.device)
        mask = (probs[:, 1] >= self.thresholds[0]) & (level >= 0)
        where = mask.nonzero()
        if not len(where):
            return x.new_zeros((0, 5)), torch.zeros(0, dtype=torch.long, device=x.device)
        lv = level[where[:, 1], where[:, 2]]
        origin = torch.tensor(offsets, dtype=x.dtype, device=x.device).flip(1)[lv] / 2  # (x, y) on the 2 px grid
        scale = torch.tensor(scales, dtype=x.dtype, device=x.device)[lv].unsqueeze(1)
        cell = where[:, 1:].flip(1).to(x.dtype) - origin  # (x, y) of each 12 px window within its level
        q1 = ((2 * cell + 1) / scale).floor()
        q2 = ((2 * cell + WINDOW) / scale).floor()
        cand = torch.cat([q1, q2, probs[:, 1][mask].unsqueeze(1), reg.permute(0, 2, 3, 1)[mask]], 1)
        inds = where[:, 0]
        keep = batched_nms(cand[:, :4], cand[:, 4], inds * len(scales) + lv, NMS_PER_SCALE)
        cand, inds = cand[keep], inds[keep]
        keep = batched_nms(cand[:, :4], cand[:, 4], inds, NMS_ACROSS_SCALES)
        cand, inds = cand[keep], inds[keep]
        w_, h_ = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
        reg = cand[:, 5:9] * torch.stack([w_, h_, w_, h_], 1)  # stage 1 offsets scale by the exclusive size
        boxes = _square(cand[:, :4] + reg)
        return torch.cat([boxes, cand[:, 4:5]], 1), inds

    def _refine(self, stage: int, x: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor):
        """Stage 1 (R-Net, 24 px) or 2 (O-Net, 48 px): rescore, keep, regress; O-Net also places five landmarks."""
        last = stage == 2
        out = self.stages[stage](_normalise(_crops(x, inds, boxes, 48 if last else 24)))
        reg, score = out[0], out[-1][:, 1]
        keep = score > self.thresholds[2 if last else 1]
        boxes = torch.cat([boxes[keep, :4], score[keep].unsqueeze(1)], 1)
        inds, reg = inds[keep], reg[keep]
        points = x.new_zeros((len(boxes), 5, 2))
        if last:
            lm = out[1][keep]
            w = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
            h = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
            points = torch.stack([w * lm[:, :5] + boxes[:, :1] - 1, h * lm[:, 5:] + boxes[:, 1:2] - 1], 2)
            return torch.cat([_regress(boxes, reg), boxes[:, 4:5]], 1), inds, points
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, NMS_RNET)
        boxes, inds, reg = boxes[pick], inds[pick], reg[pick]
        return torch.cat([_square(_regress(boxes, reg)), boxes[:, 4:5]], 1), inds, points
