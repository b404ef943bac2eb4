"""``ts.handler_utils``: handler helper modules."""
