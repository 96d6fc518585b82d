"""The ``edgessd`` command line: one command per module, loaded when it runs."""
