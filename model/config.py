"""The model configuration: everything needed to rebuild the network, stored inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class CropSpec:
    """How a detection becomes a model input.

    The crop is a square centred on the detection box, ``scale`` times the mean of its width and height, rotated
    so the eyes are level (``align``), resized to ``size`` pixels. ``scale=1.05`` on MTCNN boxes reproduces the
    loose framing of UTKFace's aligned 200 px chips (measured: MTCNN boxes on those chips average 172x212 px),
    which is what the pretrained encoder and our training data use.
    """

    size: int = 128
    scale: float = 1.05
    align: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        return cls(**{k: data[k] for k in ("size", "scale", "align") if k in data})


DAA_MODES = ("binary", "template_multi", "template_single", "none")
REFERENCE_INTERVALS = (1, 2, 5, 10, 20, 50)


@dataclass
class ModelConfig:
    """DAA network hyper-parameters (paper sections 3 and 4.2).

    daa_mode: ``binary`` is the paper's method (Eq. 7, S and T from the binary code mapping); ``template_multi``
    (Eq. 5) and ``template_single`` (Eq. 3) use encoded template images, one per reference age; ``none`` decodes E
    straight to an age (Table 5's baseline without DAA).
    """

    encoder: str = "resnet18"
    encoder_input_size: int | None = None  # None: the encoder's own default
    crop: CropSpec = field(default_factory=CropSpec)
    daa_mode: str = "binary"
    num_references: int = 100
    code_bits: int = 8
    mapping_hidden: list[int] = field(default_factory=lambda: [16, 32])
    decoder_channels: int = 64
    eps: float = 1e-5
    init_age: float = 33.0
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.crop, dict):  # as stored in checkpoints and config files
            self.crop = CropSpec.from_dict(self.crop)
        if self.daa_mode not in DAA_MODES:
            raise ValueError(f"daa_mode must be one of {DAA_MODES}, got {self.daa_mode!r}")
        if not 1 <= self.num_references < 2**self.code_bits:
            raise ValueError(f"{self.num_references} references do not fit in {self.code_bits}-bit codes of y+1")
        if not self.name:
            self.name = f"daa-{self.encoder}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
