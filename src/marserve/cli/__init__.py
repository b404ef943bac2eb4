"""The ``marserve`` command line: thin click commands over library calls."""
