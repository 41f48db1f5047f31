"""The paper's memory units: what updating one input channel of a conv layer costs.

For conv layer i with weight (C_out, C_in/G, kh, kw), input channel c costs, per sample,
``C_W = (C_out/G)·kh·kw`` gradient elements plus ``C_A = H_in·W_in`` saved-activation elements
(docs/design.md §1). One element is one float32: 4 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from medyate_mcu.graph.ir import Graph, Node, OpType

BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class ChannelCost:
    """Per-input-channel update cost of one conv layer, in elements (memory units)."""

    layer: str
    in_channels: int
    weight_units: int  # C_W
    activation_units: int  # C_A

    @property
    def channel_units(self) -> int:
        """C_W + C_A: one channel."""
        return self.weight_units + self.activation_units

    @property
    def layer_units(self) -> int:
        """Σ_c (C_W + C_A): every input channel of the layer."""
        return self.in_channels * self.channel_units

    @property
    def channel_bytes(self) -> int:
        return self.channel_units * BYTES_PER_ELEMENT


def channel_cost(graph: Graph, node: Node) -> ChannelCost:
    """The channel cost of conv ``node`` in ``graph`` (shapes must be inferred)."""
    assert node.op is OpType.CONV, f"{node.name} is not a Conv"
    out_channels, _, kh, kw = node.params["weight"].shape
    in_channels, height, width = graph.shapes[node.inputs[0]]
    return ChannelCost(
        layer=node.name,
        in_channels=in_channels,
        weight_units=(out_channels // node.conv.groups) * kh * kw,
        activation_units=height * width,
    )


def conv_channel_costs(graph: Graph) -> list[ChannelCost]:
    """Channel costs of every conv layer, in graph order."""
    return [channel_cost(graph, node) for node in graph.nodes_of(OpType.CONV)]
