"""Encoders by name. A new FaceEncoder is one file that decorates its factory with :func:`register_encoder`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from model.encoders.common import InputAdapter


class FaceEncoder(nn.Module):
    """What every encoder is: crops B x 3 x S x S in [0, 1] -> E = B x ``out_channels`` x ``out_size`` x ``out_size``,
    with its own resizing to ``input_size`` and normalisation, so checkpoints are self-contained."""

    out_channels: int
    out_size: int
    input_size: int
    adapter: InputAdapter


EncoderFactory = Callable[..., FaceEncoder]
_ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    def wrap(factory: EncoderFactory) -> EncoderFactory:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} registered twice")
        _ENCODERS[name] = factory
        return factory

    return wrap


def create_encoder(name: str, input_size: int | None = None) -> FaceEncoder:
    """An encoder maps a B x 3 x 128 x 128 crop in [0, 1] (RGB) to E = B x C x h x w.

    Every encoder exposes ``out_channels``, ``out_size`` and ``input_size``, and does its own resizing and
    normalisation so checkpoints are self-contained.
    """
    if name not in _ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; registered: {sorted(_ENCODERS)}")
    return _ENCODERS[name](input_size=input_size)


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)
