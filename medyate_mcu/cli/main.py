"""Entry point of the ``medyate-mcu`` command: a click group and the registry of commands."""

from __future__ import annotations

import click

from medyate_mcu import __version__
from medyate_mcu.cli.common import MedyateGroup


@click.group(cls=MedyateGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="medyate-mcu")
def main() -> None:
    """Compile a pre-trained network into a C engine that fine-tunes it on a microcontroller.

    \b
    Typical flow (MODEL defaults to the bundled pre-trained demo model):
      medyate-mcu inspect model.onnx                  # what the compiler sees
      medyate-mcu lara model.onnx --data PROXY_TASK   # rank the layers once per model
      medyate-mcu plan model.onnx --budget 300kB      # how the budget would be spent
      medyate-mcu compile model.onnx --budget 300kB --board stm32f746g-disco -o build/
      medyate-mcu verify build/                       # the C engine against the host reference
      medyate-mcu build build/ && medyate-mcu flash build/
      medyate-mcu train build/ --port /dev/ttyACM0 --data my_images/
    """


# Commands register here, one module each.
from medyate_mcu.cli.boards_command import boards_command  # noqa: E402
from medyate_mcu.cli.build_commands import build_command, simulate_command  # noqa: E402
from medyate_mcu.cli.compile_command import compile_command  # noqa: E402
from medyate_mcu.cli.device_commands import flash_command, train_command  # noqa: E402
from medyate_mcu.cli.experiment_command import experiment_command  # noqa: E402
from medyate_mcu.cli.inspect_command import inspect_command  # noqa: E402
from medyate_mcu.cli.method_commands import lara_command, plan_command  # noqa: E402
from medyate_mcu.cli.verify_command import verify_command  # noqa: E402
from medyate_mcu.cli.zoo_commands import zoo  # noqa: E402

main.add_command(inspect_command)
main.add_command(compile_command)
main.add_command(boards_command)
main.add_command(lara_command)
main.add_command(plan_command)
main.add_command(experiment_command)
main.add_command(verify_command)
main.add_command(build_command)
main.add_command(simulate_command)
main.add_command(zoo)
main.add_command(train_command)
main.add_command(flash_command)
