"""FaceEncoders. Importing this package registers every encoder module in it (each decorates its factory with
:func:`register_encoder`), so a new encoder is one new file here and nothing else."""

import importlib
import pkgutil

from model.encoders.registry import FaceEncoder, create_encoder, list_encoders, register_encoder

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "common"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FaceEncoder", "create_encoder", "list_encoders", "register_encoder"]
