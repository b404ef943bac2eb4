"""A handler that needs a package from the archive's requirements.txt."""

import tinydep


def handle(data, context):
    if data is None:
        return None
    return [{"value": tinydep.VALUE, "where": tinydep.__file__} for _ in data]
