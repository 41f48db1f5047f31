"""``medyate-mcu inspect``: what the compiler sees in a model."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from medyate_mcu.cli.common import MODEL_ARGUMENT, console, load_model
from medyate_mcu.graph import Graph
from medyate_mcu.graph.summary import summarize
from medyate_mcu.method.costs import conv_channel_costs


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def inspection_report(graph: Graph) -> dict:
    """Everything ``inspect`` prints, as plain data."""
    costs = {cost.layer: cost for cost in conv_channel_costs(graph)}
    layers = []
    for row in summarize(graph):
        entry = {
            "name": row.name, "op": row.op,
            "input_shape": list(row.input_shape), "output_shape": list(row.output_shape),
            "parameters": row.parameters, "macs": row.macs,
        }
        cost = costs.get(row.name)
        if cost is not None:
            entry.update(in_channels=cost.in_channels, c_w=cost.weight_units,
                         c_a=cost.activation_units, layer_units=cost.layer_units)
        layers.append(entry)
    return {
        "model": graph.name,
        "input": {"name": graph.input, "shape": list(graph.input_shape)},
        "output": {"name": graph.output, "shape": list(graph.output_shape)},
        "layers": layers,
        "total_parameters": graph.parameter_count(),
        "total_macs": sum(layer["macs"] for layer in layers),
        "total_channel_units": sum(cost.layer_units for cost in costs.values()),
        "metadata": graph.metadata,
    }


@click.command("inspect")
@MODEL_ARGUMENT
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Human-readable table, or JSON for scripts.")
def inspect_command(model: Path | None, output_format: str) -> None:
    """Print the graph the compiler sees in MODEL (default: the bundled demo model).

    Per layer: op, input and output shapes (per sample, CxHxW), parameters, multiply-accumulates
    of one forward pass, and for every conv the MeDyate channel costs: C_W = (C_out/G)·kh·kw
    gradient elements and C_A = H_in·W_in saved-activation elements per input channel, and their
    sum over the layer's input channels (memory units; 4 bytes each in float32).
    """
    report = inspection_report(load_model(model))
    if output_format == "json":
        click.echo(json.dumps(report, indent=2))
        return
    out = console()
    out.print(f"[bold]{report['model']}[/]: input {report['input']['name']} "
              f"{_shape(report['input']['shape'])}, output {report['output']['name']} "
              f"{_shape(report['output']['shape'])}")
    table = Table(show_lines=False)
    for column in ("#", "layer", "op", "input", "output", "params", "MACs",
                   "C_in", "C_W", "C_A", "Σc(C_W+C_A)"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right")
    for index, layer in enumerate(report["layers"]):
        conv = "c_w" in layer
        table.add_row(
            str(index), layer["name"], layer["op"], _shape(layer["input_shape"]),
            _shape(layer["output_shape"]), f"{layer['parameters']:,}", f"{layer['macs']:,}",
            *(f"{layer[key]:,}" if conv else "" for key in
              ("in_channels", "c_w", "c_a", "layer_units")),
        )
    table.add_section()
    table.add_row("", "total", "", "", "", f"{report['total_parameters']:,}",
                  f"{report['total_macs']:,}", "", "", "", f"{report['total_channel_units']:,}")
    out.print(table)
    for key, value in report["metadata"].items():
        out.print(f"  {key}: {value}")
