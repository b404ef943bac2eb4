"""HTTP adapters: decode bytes -> DataPlane -> encode. Errors are mapped in ``rest.errors``."""
