"""medyate-mcu: compile pre-trained networks for on-device fine-tuning on microcontrollers."""

__version__ = "0.1.0"
