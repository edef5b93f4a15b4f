"""The built-in face detectors; each module registers one with :func:`model.detection.register_detector`."""
