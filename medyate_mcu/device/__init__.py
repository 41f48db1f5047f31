"""Talking to a device: the serial protocol (``protocol``), a pyserial session (``link``),
the serial firmware's sources (``firmware``) and flashing real boards (``flash``)."""
