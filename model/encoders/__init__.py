"""FaceEncoders. Importing this package registers the built-in ones (as timm's model modules do)."""

from model.encoders import c3ae, dlib_face_resnet, dlib_resnet, resnet18  # noqa: F401  (registration)
from model.encoders.registry import FaceEncoder, create_encoder, list_encoders, register_encoder

__all__ = ["FaceEncoder", "create_encoder", "list_encoders", "register_encoder"]
