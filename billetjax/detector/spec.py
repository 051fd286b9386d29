"""The detector's settings and what defines a trained detector: typed config, spec, weights file.

`DetectorConfig.from_config` turns the validated `detector` section of the config (the schema
fills in its defaults) into frozen dataclasses, once; everything below takes those, never a dict,
and no dataclass here has a default. `make_spec` adds what the training data decide (the
categories, anchors sized from the training boxes) and gives the `DetectorSpec` that travels with
the weights in `params.msgpack` (`save_params`, `load_params`), so prediction needs no config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx, serialization

from billetjax.detector import anchors as anchors_lib
from billetjax.detector.geometry import backbone_strides, training_window_px
from billetjax.sections import VALIDATE_HINT, typed

# Keys a spec written before they existed lacks, and the value such a detector had: every
# detector trained before `detector.model.block` and `detector.precision` existed had basic
# blocks and computed in float32.
SPEC_KEYS_ADDED = {"block": "basic", "precision": "float32"}
# A training window (`augment.crop_px`) spans at least this many of the large boxes' sides.
CROP_MIN_BOX_MULTIPLE = 3


# ----------------------------------------------------------------------------- config sections


@dataclass(frozen=True)
class ArchitectureConfig:
    """The backbone, FPN and heads as configured (`detector.model`)."""

    stem_width: int
    widths: tuple[int, ...]  # one ResNet stage per FPN level, strides 4, 8, 16, ...
    blocks: tuple[int, ...]  # residual blocks per stage
    # "basic": two 3x3 convolutions; "bottleneck": 1x1 down to width / BOTTLENECK_EXPANSION, 3x3,
    # 1x1 up to width (ResNet-50's block).
    block: str
    fpn_width: int
    anchor_levels: int  # the finest FPN levels that carry anchors (and the RPN head)
    head_width: int  # the box head's two fully connected layers
    pool_size: int  # RoIAlign output size
    groups: int  # GroupNorm groups (batch statistics are too noisy at our batch sizes)
    # "conv": two stride-2 3x3 convolutions; "space_to_depth": 4x4 pixel blocks to channels, then
    # one 3x3 convolution (no full-resolution feature maps: faster on CPU).
    stem: str


@dataclass(frozen=True)
class AnchorConfig:
    """How anchors are sized from the training boxes (`detector.anchors`)."""

    sizes_per_level: int
    aspect_ratios: int  # how many h / w ratios
    size_quantiles: tuple[float, float]  # of sqrt(w * h), the smallest and largest anchor


@dataclass(frozen=True)
class RPNConfig:
    """The region proposal network's matching, sampling and static counts (`detector.rpn`)."""

    pre_nms_top_n_train: int
    post_nms_top_n_train: int
    pre_nms_top_n_test: int
    post_nms_top_n_test: int
    nms_iou: float
    fg_iou: float
    bg_iou: float
    batch_size_per_image: int
    positive_fraction: float


@dataclass(frozen=True)
class RoIConfig:
    """The box head's matching and sampling, and RoIAlign's samples per bin (`detector.roi`)."""

    batch_size_per_image: int
    positive_fraction: float
    fg_iou: float
    bg_iou: float
    sampling_ratio: int


@dataclass(frozen=True)
class InferenceConfig:
    """How detections are kept and batched at prediction (`detector.inference`)."""

    score_threshold: float
    nms_iou: float
    max_detections: int
    batch_size: int


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the training augmentation (`detector.augment`)."""

    brightness: float  # additive, fraction of 255
    contrast: float  # multiplicative, 1 +- this
    channel_gain: float  # per-channel colour gain, 1 +- this
    noise_std: float  # Gaussian pixel noise (0-255 scale)
    blur_sigma: float  # Gaussian blur of up to this sigma (px) on half of the images
    scale: float  # isotropic zoom 1 +- this
    rotate_deg: float
    shear: float  # horizontal shear x += shear * y, +- this (poor stamps are slanted)
    translate_px: float
    min_visible: float  # a warped box keeps its label if this fraction of it stays inside
    # Train on random crop_px x crop_px windows of the images (0: whole images); a window holds a
    # randomly chosen box whole with probability crop_around_boxes (data.crop_origin).
    crop_px: int
    crop_around_boxes: float


@dataclass(frozen=True)
class DetectorConfig:
    """The validated `detector` section of the config, typed; `augment` is None when off."""

    steps: int
    batch_size: int
    eval_every: int
    checkpoint_every: int
    max_boxes: int
    # "float32", or "bfloat16": mixed precision (bfloat16 compute, float32 parameters, optimiser
    # state and losses; backbone.py, models.py).
    precision: str
    learning_rate: float
    momentum: float
    weight_decay: float
    warmup_steps: int
    clip_norm: float
    final_lr_fraction: float
    repeat_threshold: float
    model: ArchitectureConfig
    anchors: AnchorConfig
    rpn: RPNConfig
    roi: RoIConfig
    inference: InferenceConfig
    augment: AugmentConfig | None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> DetectorConfig:
        """Build from the `detector` section of a config validated against the schema (which
        fills in the defaults); a missing key is refused with its name."""
        given = {}
        augment = section.get("augment") if isinstance(section, Mapping) else None
        if isinstance(augment, Mapping):
            if "enabled" not in augment:
                raise ValueError(f"config detector.augment lacks enabled: {VALIDATE_HINT}")
            if not augment["enabled"]:
                given["augment"] = None
        return typed(cls, section, "detector", **given)

    def to_config(self) -> dict[str, Any]:
        """The section as plain data (JSON-able; `augment: {enabled: false}` when off)."""
        out = dataclasses.asdict(self)
        out["augment"] = {"enabled": False} if self.augment is None else {"enabled": True, **out["augment"]}
        return out


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def training_size_px(cfg: DetectorConfig, image_size_px: int, boxes_xywh: np.ndarray | None = None) -> int:
    """The side of the images a training step sees: `augment.crop_px`, or the whole image when
    crops are off or not smaller than it. A crop off the coarsest stride is refused, and so is one
    narrower than CROP_MIN_BOX_MULTIPLE x the large training boxes (`boxes_xywh`, COCO
    `[x, y, w, h]`; the 98th percentile of their longer side), whose windows would cut most
    characters."""
    crop = training_window_px(cfg.augment.crop_px if cfg.augment is not None else 0, image_size_px)
    if crop == image_size_px:
        return crop
    coarsest = backbone_strides(len(cfg.model.widths))[-1]
    if crop % coarsest:
        raise ValueError(f"detector.augment.crop_px = {crop} must be a multiple of the coarsest stride "
                         f"{coarsest} (or 0: whole images)")
    if boxes_xywh is not None and len(boxes_xywh):
        large = float(np.percentile(np.max(np.asarray(boxes_xywh)[:, 2:], axis=1), 98))
        if crop < CROP_MIN_BOX_MULTIPLE * large:
            raise ValueError(f"detector.augment.crop_px = {crop} is less than {CROP_MIN_BOX_MULTIPLE} x the "
                             f"large training boxes ({large:.0f} px, 98th percentile of the longer side): "
                             f"windows would cut most characters; set it to at least "
                             f"{CROP_MIN_BOX_MULTIPLE * large:.0f}, or 0 to train on whole images")
    return int(crop)


# ----------------------------------------------------------------------------- a trained detector


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of one detector: `ArchitectureConfig` plus what the data decide (the
    number of characters, anchors per location), `anchor_levels` at most the number of stages."""

    num_classes: int  # characters, without background
    stem_width: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    block: str
    fpn_width: int
    head_width: int
    anchors_per_location: int
    anchor_levels: int
    pool_size: int
    groups: int
    stem: str
    precision: str  # the compute dtype of the layers (`detector.precision`)

    @property
    def strides(self) -> tuple[int, ...]:
        """The strides of the FPN levels, one per stage: 4, 8, 16, ..."""
        return backbone_strides(len(self.widths))


@dataclass(frozen=True)
class DetectorSpec:
    """Everything but the weights that defines a trained detector: architecture, anchors, the
    static counts of its two stages, and the categories its labels 1..K stand for.

    It travels inside `params.msgpack` (as JSON), so prediction needs no config.
    """

    model: ModelConfig
    image_size_px: int
    category_ids: tuple[int, ...]
    anchor_sizes: tuple[tuple[float, ...], ...]  # per level, finest first
    aspect_ratios: tuple[float, ...]  # h / w
    rpn: RPNConfig
    roi: RoIConfig
    inference: InferenceConfig

    @property
    def feature_hws(self) -> tuple[tuple[int, int], ...]:
        """Sizes of the levels that carry anchors (the finest `model.anchor_levels`)."""
        strides = self.model.strides[: self.model.anchor_levels]
        return tuple((self.image_size_px // s, self.image_size_px // s) for s in strides)

    def anchors(self) -> tuple[np.ndarray, tuple[int, ...]]:
        """Anchors `float32[N, 4]` of all levels (torchvision's order) and each level's count."""
        grids = [anchors_lib.anchor_grid(hw, s, sizes, self.aspect_ratios)
                 for hw, s, sizes in zip(self.feature_hws, self.model.strides, self.anchor_sizes)]
        return np.concatenate(grids).astype(np.float32), tuple(len(g) for g in grids)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DetectorSpec:
        d = json.loads(text)
        return cls(
            model=ModelConfig(**{**SPEC_KEYS_ADDED, **{k: _frozen(v) for k, v in d["model"].items()}}),
            image_size_px=d["image_size_px"],
            category_ids=tuple(d["category_ids"]),
            anchor_sizes=_frozen(d["anchor_sizes"]),
            aspect_ratios=tuple(d["aspect_ratios"]),
            rpn=RPNConfig(**d["rpn"]), roi=RoIConfig(**d["roi"]),
            inference=InferenceConfig(**d["inference"]),
        )


def make_spec(cfg: DetectorConfig, image_size_px: int, category_ids: tuple[int, ...],
              train_boxes_xywh: np.ndarray) -> tuple[DetectorSpec, str]:
    """The spec of a detector trained with `cfg` on boxes `[N, 4]` (COCO `[x, y, w, h]`), its
    anchors sized from them (`anchors.anchor_sizes_from_boxes`); returns it with the anchor
    summary for the log."""
    arch = cfg.model
    n_levels = len(arch.widths)
    n_anchor_levels = min(arch.anchor_levels, n_levels)
    strides = backbone_strides(n_anchor_levels)
    sizes, ratios, summary = anchors_lib.anchor_sizes_from_boxes(
        train_boxes_xywh, n_anchor_levels, sizes_per_level=cfg.anchors.sizes_per_level,
        num_aspect_ratios=cfg.anchors.aspect_ratios, size_quantiles=cfg.anchors.size_quantiles,
        strides=strides)
    model = ModelConfig(**{**dataclasses.asdict(arch), "anchor_levels": n_anchor_levels},
                        num_classes=len(category_ids), precision=cfg.precision,
                        anchors_per_location=cfg.anchors.sizes_per_level * cfg.anchors.aspect_ratios)
    if image_size_px % model.strides[-1]:
        raise ValueError(f"image_size_px = {image_size_px} must be a multiple of the coarsest "
                         f"stride {model.strides[-1]} (detector.model.widths has {n_levels} levels)")
    spec = DetectorSpec(model=model, image_size_px=int(image_size_px),
                        category_ids=tuple(category_ids), anchor_sizes=sizes, aspect_ratios=ratios,
                        rpn=cfg.rpn, roi=cfg.roi, inference=cfg.inference)
    return spec, summary


# ----------------------------------------------------------------------------- the weights file


def save_params(path: str | os.PathLike, spec: DetectorSpec, params) -> None:
    """Write the weights (an `nnx.State` or its pure dict) and the spec (JSON) into one msgpack
    file, atomically; `load_params` reads it."""
    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    blob = serialization.msgpack_serialize({"spec": spec.to_json(), "params": jax.device_get(pure)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def load_params(path: str | os.PathLike) -> tuple[DetectorSpec, dict]:
    """`(spec, params)` of a file written by `save_params`; params as a pure dict of numpy arrays
    (`predict.load_detector` puts them into the model)."""
    blob = serialization.msgpack_restore(Path(path).read_bytes())
    return DetectorSpec.from_json(blob["spec"]), blob["params"]
