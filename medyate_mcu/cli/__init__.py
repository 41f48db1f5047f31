"""The ``medyate-mcu`` command line."""
