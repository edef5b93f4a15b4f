"""``daa-age-bulk``: age-annotate a photo collection with the service's own pipeline, locally or on Ray."""
