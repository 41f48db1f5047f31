"""C code generation: graph + budget plan + training settings -> a C project.

The generated ``model.c`` holds the constants (frozen weights ``const``, in flash; the pre-trained
values of the trainable ones, copied to RAM by ``mdy_init``), every RAM buffer the plan counts as
its own symbol, and the forward and backward passes as straight-line calls into the runtime
kernels over arena offsets. Names come from the model: each arena buffer of the memory plan gets a
named offset (``ACT_``, ``ERR_``, ``MASK_``, ``ARGMAX_`` + the node's C name), listed at the top of
``model.c`` with its size and lifetime; shapes are in comments.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from medyate_mcu.codegen.c_interface import REQUIRED_CFLAGS, struct_fields
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph, Node, OpType
from medyate_mcu.method.planner import BudgetPlan
from medyate_mcu.method.trainer import TrainSettings, channel_table, learning_rate
from medyate_mcu.planning.arena import ALIGNMENT, Buffer
from medyate_mcu.planning.memory import (
    CHANNEL_ARRAYS,
    ENGINE_STATE_BYTES,
    W8_SCRATCH,
    Backbone,
    activation_storage,
    dequantized_tensors,
    error_storage,
    int8_layout,
    int8_tensors,
    w8_layers,
)
from medyate_mcu.planning.schedule import StepKind, classifier_size
from medyate_mcu.quant.lowering import (
    QAddParams,
    QConvParams,
    QRescaleParams,
    fusing_conv,
    lower_node,
    output_quant,
)
from medyate_mcu.quant.scheme import Quantization
from medyate_mcu.resources import data_dir

FLOATS_PER_LINE = 8


def c_identifier(name: str) -> str:
    """``features.3.body.0.1`` -> ``features_3_body_0_1`` (prefixed when it starts with a digit)."""
    ident = re.sub(r"\W", "_", name)
    return f"l_{ident}" if ident[0].isdigit() else ident


def c_floats(values: np.ndarray) -> str:
    """A C initializer body with every float32 written exactly (``%.9g``)."""
    flat = np.asarray(values, np.float32).reshape(-1)
    items = [f"{float(v):.9g}f" for v in flat]
    items = [item if any(ch in item for ch in ".en") else item[:-1] + ".0f" for item in items]
    lines = [", ".join(items[i:i + FLOATS_PER_LINE]) for i in range(0, len(items), FLOATS_PER_LINE)]
    return ",\n    ".join(lines)


def c_ints(values: np.ndarray | list[int]) -> str:
    """A C initializer body of integers, sixteen a line."""
    items = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(items[i:i + 16]) for i in range(0, len(items), 16)]
    return ",\n    ".join(lines)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@dataclass
class Call:
    comment: str
    code: list[str]


@dataclass
class CArray:
    """A buffer the generated code declares: RAM (mutable) or flash (const) floats."""

    name: str
    ctype: str
    length: int
    comment: str
    initializer: str | None = None  # flash arrays only

    @property
    def const(self) -> bool:
        return self.initializer is not None


@dataclass(frozen=True)
class ArenaEntry:
    """One buffer of the memory plan's arena, as model.c names and lists it."""

    macro: str  # the C name of its byte offset in mdy_arena
    offset: int
    size: int  # bytes
    first: int  # schedule step of its first write
    last: int  # schedule step of its last read
    holds: str


@dataclass
class GeneratedModel:
    name: str
    arena: list[ArenaEntry] = field(default_factory=list)  # by offset, then lifetime
    shapes: list[str] = field(default_factory=list)  # C declarations of shape structs
    flash: list[CArray] = field(default_factory=list)
    ram: list[CArray] = field(default_factory=list)
    forward: list[Call] = field(default_factory=list)
    backward: list[Call] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    logits: str = ""  # the arena offsets (macro names) of the logits and their error
    dlogits: str = ""
    int8: bool = False  # an int8 backbone (docs/quantization.md)
    input_q8: dict[str, str] = field(default_factory=dict)  # mdy_model_t's int8 sample fields


class _Emitter:
    def __init__(self, graph: Graph, plan: BudgetPlan,
                 quantization: Quantization | None = None) -> None:
        self.graph = graph
        self.plan = plan
        self.memory = plan.memory
        self.schedule = plan.memory.schedule
        self.int8_nodes = plan.memory.int8_nodes
        self.w8 = plan.memory.backbone is Backbone.INT8
        assert not self.w8 or quantization is not None, "an int8 backbone needs its quantization"
        self.quantization = quantization
        self.int8_held = int8_tensors(graph, self.int8_nodes)
        self.dequantized = set(dequantized_tensors(graph, self.int8_nodes))
        self.w8_nodes = {n.name for n in w8_layers(graph, self.schedule, self.int8_nodes)} \
            if self.w8 else set()
        self.storage = activation_storage(graph, self.int8_nodes)
        self.error_roots = error_storage(self.schedule)
        self.layout = int8_layout(graph, self.int8_nodes)
        self.in_place = {node.name for node in self.layout.in_place}
        self.model = GeneratedModel(c_identifier(graph.name or "model"), int8=self.w8)
        self.candidate_index = {name: i for i, name in enumerate(self.schedule.candidates)}
        self.idents: dict[str, str] = {}
        for node in graph.nodes:
            ident = c_identifier(node.name)
            assert ident not in self.idents.values(), f"two nodes map to C name {ident}"
            self.idents[node.name] = ident
        self.arena_macros = {p.buffer.name: self.arena_macro(p.buffer.name)
                             for p in self.memory.arena.placements}
        assert len(set(self.arena_macros.values())) == len(self.arena_macros), \
            "two arena buffers map to one C name"

    # ---- pointers into the arena -------------------------------------------------------
    def arena_macro(self, buffer: str) -> str:
        """``act:<tensor>`` -> ``ACT_<its producer>``; ``err:`` likewise; ``mask:<node>`` ->
        ``MASK_<node>``, ``argmax:<node>`` -> ``ARGMAX_<node>`` (the plan's buffer names)."""
        kind, _, subject = buffer.partition(":")
        if buffer == W8_SCRATCH:
            return "W8_SCRATCH"
        if kind in ("acc", "scratch"):
            return f"{kind.upper()}_{self.idents[subject]}"
        if subject == self.graph.input:
            return f"{kind.upper()}_{c_identifier(subject)}"
        node = self.graph.producer(subject) if kind in ("act", "err", "deq") \
            else self.graph.node(subject)
        assert node is not None, buffer
        return f"{kind.upper()}_{self.idents[node.name]}"

    def act(self, tensor: str, reader: Node | None = None) -> str:
        """Where ``reader`` (default: a float node) finds ``tensor``: the sample, an int8
        buffer for an int8 reader, a float buffer (a dequantized copy of an int8 tensor)."""
        if reader is not None and reader.name in self.int8_nodes:
            assert tensor in self.int8_held, (tensor, reader.name)
            return f"ARENA_I8({self.arena_macros[f'act:{self.storage.get(tensor, tensor)}']})"
        if tensor == self.graph.input:
            return "x"
        if tensor in self.int8_held:
            return f"ARENA_F({self.arena_macros[f'deq:{tensor}']})"
        return f"ARENA_F({self.arena_macros[f'act:{self.storage[tensor]}']})"

    def err(self, tensor: str) -> str:
        return f"ARENA_F({self.arena_macros[f'err:{self.error_roots[tensor]}']})"

    def bytes_at(self, name: str) -> str:
        return f"ARENA_U8({self.arena_macros[name]})"

    def int8_at(self, name: str) -> str:
        return f"ARENA_I8({self.arena_macros[name]})"

    def has_buffer(self, name: str) -> bool:
        return name in self.arena_macros

    def describe(self, buffer: Buffer) -> str:
        """What an arena buffer holds, for the map at the top of model.c."""
        kind, _, subject = buffer.name.partition(":")

        def label(node: Node) -> str:
            return f"{node.name} ({node.op.value})"

        if buffer.name == W8_SCRATCH:
            return "one output channel's weights of a frozen int8-weight layer, dequantized"
        if kind == "acc":
            return f"{subject}'s fused block: int32 accumulators of its output"
        if kind == "scratch":
            return (f"{subject}'s fused block: one expanded and one depthwise channel"
                    if subject not in self.in_place else
                    f"{subject} in place: one input channel")
        if kind == "act" and subject == self.graph.input:
            return "the sample, quantized to int8"
        if kind == "deq":
            producer = self.graph.producer(subject)
            assert producer is not None
            return f"{label(producer)} output, dequantized for the float region"
        if kind == "act":
            writers = [n for n in self.graph.nodes if self.storage[n.output] == subject]
            return ", ".join([f"{label(writers[0])} output",
                              *(f"{label(n)} in place" for n in writers[1:])])
        if kind == "err":
            holders = [self.graph.producer(t) for t, root in self.error_roots.items()
                       if root == subject]
            return ", ".join(f"error of {label(n)} output" for n in holders if n is not None)
        node = self.graph.node(subject)
        return f"{label(node)} " + ("gradient mask, 1 bit an element" if kind == "mask"
                                    else "argmax, 1 byte an output")

    def declare_arena(self) -> None:
        for placement in sorted(self.memory.arena.placements,
                                key=lambda p: (p.offset, p.buffer.first)):
            buffer = placement.buffer
            self.model.arena.append(ArenaEntry(self.arena_macros[buffer.name], placement.offset,
                                               buffer.size, buffer.first, buffer.last,
                                               self.describe(buffer)))

    # ---- constants ---------------------------------------------------------------------
    def weights(self, node: Node) -> tuple[str, str]:
        """(weight pointer, bias pointer) the passes use for ``node``."""
        ident = self.idents[node.name]
        if node.name == self.schedule.classifier:
            return "mdy_classifier", f"(mdy_classifier + {node.params['weight'].size})"
        if node.name in self.candidate_index:
            return f"mdy_w_{ident}", f"b_{ident}"
        return f"w_{ident}", f"b_{ident}"

    def declare_constants(self) -> None:
        for node in self.graph.nodes_of(OpType.CONV, OpType.LINEAR):
            ident = self.idents[node.name]
            weight, bias = node.params["weight"], node.params["bias"]
            shape = "x".join(map(str, weight.shape))
            flash = self.model.flash
            if node.name == self.schedule.classifier:
                values = np.concatenate([weight.reshape(-1), bias.reshape(-1)])
                flash.append(CArray("classifier_initial", "float", values.size,
                                    f"{node.name}: weight {shape} then bias "
                                    f"{bias.size} (pre-trained / initial values)",
                                    c_floats(values)))
                self.model.ram.append(CArray("mdy_classifier", "float", values.size,
                                             f"{node.name}: trained weight and bias"))
                self.model.ram.append(CArray("mdy_classifier_grad", "float", values.size,
                                             f"{node.name}: gradient accumulators"))
                continue
            if node.name in self.int8_nodes:
                self.declare_int8_layer(node)
                continue
            quant = self.quantization.weights[node.name] if self.w8 and self.quantization \
                else None
            candidate = node.name in self.candidate_index
            prefix, role = ("w0_", "pre-trained") if candidate else ("w_", "frozen")
            if quant is not None:  # int8 in flash, dequantized per output channel
                flash.append(CArray(f"{prefix}{ident}", "int8_t", weight.size,
                                    f"{node.name}: weight {shape} ({role}, int8)",
                                    c_ints(quant.values)))
                flash.append(CArray(f"{prefix.replace('w', 'ws')}{ident}", "float",
                                    quant.scales.size,
                                    f"{node.name}: weight scale per output channel",
                                    c_floats(quant.scales)))
            else:
                flash.append(CArray(f"{prefix}{ident}", "float", weight.size,
                                    f"{node.name}: weight {shape} ({role})", c_floats(weight)))
            if candidate:
                self.model.ram.append(CArray(f"mdy_w_{ident}", "float", weight.size,
                                             f"{node.name}: weight {shape} (candidate, trained)"))
            flash.append(CArray(f"b_{ident}", "float", bias.size,
                                f"{node.name}: bias ({bias.size}, frozen)", c_floats(bias)))

    def declare_int8_layer(self, node: Node) -> None:
        """An int8-region Conv: int8 weights, int32 biases, per-channel multipliers and shifts,
        and its ``mdy_q8_conv_t``."""
        assert self.quantization is not None and node.op is OpType.CONV, node.name
        ident = self.idents[node.name]
        params = lower_node(self.graph, self.quantization, node, self.int8_nodes)
        assert isinstance(params, QConvParams)
        quant = self.quantization.weights[node.name]
        shape = "x".join(map(str, quant.values.shape))
        self.model.flash.extend([
            CArray(f"w_{ident}", "int8_t", quant.values.size,
                   f"{node.name}: weight {shape} (int8)", c_ints(quant.values)),
            CArray(f"qb_{ident}", "int32_t", params.bias.size,
                   f"{node.name}: bias (int32, scale input x weight)", c_ints(params.bias)),
            CArray(f"qm_{ident}", "int32_t", params.multiplier.size,
                   f"{node.name}: requantization multipliers (Q31)", c_ints(params.multiplier)),
            CArray(f"qs_{ident}", "int8_t", params.shift.size,
                   f"{node.name}: requantization shifts", c_ints(params.shift)),
        ])

    def declare_int8_params(self) -> None:
        """The ``mdy_q8_*`` parameter struct of every int8 op that takes one."""
        assert self.quantization is not None
        for node in self.graph.nodes:
            if node.name not in self.int8_nodes \
                    or fusing_conv(self.graph, node, self.int8_nodes) is not None:
                continue
            ident = self.idents[node.name]
            params = lower_node(self.graph, self.quantization, node, self.int8_nodes)
            if isinstance(params, QConvParams):
                fields: dict[str, int | str] = {
                    "bias": f"qb_{ident}", "multiplier": f"qm_{ident}", "shift": f"qs_{ident}"}
                header, struct = "kernels/qconv.h", "mdy_q8_conv_t"
            elif isinstance(params, QAddParams):
                fields, header, struct = {}, "kernels/qeltwise.h", "mdy_q8_add_t"
            else:
                assert isinstance(params, QRescaleParams)
                fields, header, struct = {}, "kernels/quant.h", "mdy_q8_rescale_t"
            scalars = {k: int(v) for k, v in vars(params).items() if k not in fields}
            self.model.shapes.append(shape_initializer(header, struct, f"q_{ident}",
                                                       {**fields, **scalars}))
        for block in self.layout.blocks:
            parts: dict[str, int | str] = {}
            for role, conv in (("expand", block.expand), ("depthwise", block.depthwise),
                               ("project", block.project)):
                conv_ident = self.idents[conv.name] if conv is not None else None
                parts |= {role: f"&shape_{conv_ident}" if conv_ident else "NULL",
                          f"{role}_q": f"&q_{conv_ident}" if conv_ident else "NULL",
                          f"{role}_w": f"w_{conv_ident}" if conv_ident else "NULL"}
            self.model.shapes.append(shape_initializer(
                "kernels/qblock.h", "mdy_q8_block_t",
                f"block_{self.idents[block.project.name]}", parts))

    def declare_shapes(self) -> None:
        for node in self.graph.nodes:
            if node.op not in (OpType.CONV, OpType.MAX_POOL, OpType.AVG_POOL):
                continue
            c, h, w = self.graph.shapes[node.inputs[0]]
            oc, oh, ow = self.graph.shapes[node.output]
            is_conv = node.op is OpType.CONV
            win = node.conv.window if is_conv else node.pool.window
            sizes = {"in_c": c, "in_h": h, "in_w": w, "out_c": oc, "out_h": oh, "out_w": ow} \
                if is_conv else {"c": c, "in_h": h, "in_w": w, "out_h": oh, "out_w": ow}
            window = dict(zip(("k_h", "k_w", "stride_h", "stride_w", "pad_top", "pad_left"),
                              (*win.kernel, *win.stride, *win.pads[:2]), strict=True))
            window |= {"groups": node.conv.groups} if is_conv \
                else {"count_include_pad": int(node.pool.count_include_pad)}
            _check_field_ranges(node, tuple(sizes.values()), tuple(window.values())[:6],
                                win.kernel)
            self.model.shapes.append(shape_initializer(
                "kernels/conv.h" if is_conv else "kernels/pool.h",
                "mdy_conv_shape_t" if is_conv else "mdy_pool_shape_t",
                f"shape_{self.idents[node.name]}", sizes, window))

    # ---- the passes --------------------------------------------------------------------
    def quantize_input(self) -> list[str]:
        """The sample into the int8 arena buffer, when the int8 region reads it."""
        if self.graph.input not in self.int8_held:
            return []
        assert self.quantization is not None
        return ["if (x != NULL) { /* else the application quantized it (mdy_quantize_input) */",
                "    mdy_quantize_input(model, 0u, MDY_INPUT_SIZE, x);", "}"]

    def input_quantization(self) -> dict[str, str]:
        """The model's int8 sample: its buffer in the arena, scale and zero point (C)."""
        if self.graph.input not in self.int8_held:
            return {"input_q8": "NULL", "input_scale": "0.0f", "input_zero_point": "0"}
        assert self.quantization is not None
        quant = self.quantization.tensors[self.graph.input]
        return {"input_q8": self.act(self.graph.input, self.graph.nodes[0]),
                "input_scale": c_floats(np.float32(quant.scale)),
                "input_zero_point": str(quant.zero_point)}

    def int8_forward(self, node: Node) -> list[str]:
        """One int8-region op (docs/quantization.md §3-4); the hook lets the verifier read its
        output; a float copy follows when a float node reads it."""
        assert self.quantization is not None
        ident = self.idents[node.name]
        block = self.layout.block_of(node)
        if block is not None:
            return [f"/* in the fused block that {block.project.name} runs */"]
        fused = fusing_conv(self.graph, node, self.int8_nodes)
        running = next((b for b in self.layout.blocks if b.project is node), None)
        x = self.act((running.first if running else node).inputs[0], node)
        y = self.act(node.output, node)
        n = math.prod(self.graph.shapes[node.output])
        code: list[str] = []
        if fused is not None:
            code.append(f"/* fused into {fused.name}: it wrote this ReLU's output */")
        elif running is not None:
            code.append(f"mdy_q8_block_forward(&block_{ident}, {x}, {y}, "
                        f"{self.int8_at(f'scratch:{node.name}')}, "
                        f"(int32_t *){self.bytes_at(f'acc:{node.name}')});")
        elif node.name in self.in_place:
            code.append(f"mdy_q8_depthwise_inplace_forward(&shape_{ident}, &q_{ident}, "
                        f"w_{ident}, {y}, "
                        f"{self.int8_at(f'scratch:{node.name}')});")
        elif node.op is OpType.CONV:
            code.append(f"mdy_q8_conv2d_forward(&shape_{ident}, &q_{ident}, {x}, w_{ident}, "
                        f"{y});")
        elif node.op is OpType.ADD:
            code.append(f"mdy_q8_add_forward({n}u, &q_{ident}, {x}, "
                        f"{self.act(node.inputs[1], node)}, {y});")
        elif node.op is OpType.GLOBAL_AVG_POOL:
            c, h, w = self.graph.shapes[node.inputs[0]]
            code.append(f"mdy_q8_global_avgpool_forward({c}, {h * w}u, &q_{ident}, {x}, {y});")
        elif node.op is OpType.AVG_POOL:
            code.append(f"mdy_q8_avgpool_forward(&shape_{ident}, &q_{ident}, {x}, {y});")
        elif node.op is OpType.MAX_POOL:
            code.append(f"mdy_q8_maxpool_forward(&shape_{ident}, &q_{ident}, {x}, {y});")
        elif node.op in (OpType.RELU, OpType.RELU6, OpType.FLATTEN):
            code.append(f"mdy_q8_rescale_forward({n}u, &q_{ident}, {x}, {y});")
        else:
            raise MedyateError(f"node {node.name!r} ({node.op.value}) has no int8 kernel; "
                               "compile with --backbone float32")
        if fused is None:
            code.append(f"MDY_DECISIONS({self.graph.nodes.index(node)}u);")
        if node.output in self.dequantized:
            quant = output_quant(self.graph, self.quantization, node, self.int8_nodes)
            code.append(f"mdy_dequantize({n}u, {y}, {c_floats(np.float32(quant.scale))}, "
                        f"{quant.zero_point}, {self.act(node.output)});")
        return code

    def forward_calls(self) -> None:
        for step, node in enumerate(self.graph.nodes):  # forward steps come first, in this order
            ident = self.idents[node.name]
            comment = (f"[{step}] {node.name} ({node.op.value}): "
                       f"{' + '.join(shape_text(self.graph.shapes[t]) for t in node.inputs)} -> "
                       f"{shape_text(self.graph.shapes[node.output])}")
            code: list[str] = self.quantize_input() if step == 0 else []
            if node.name in self.int8_nodes:
                self.model.forward.append(Call(comment + " (int8)",
                                               code + self.int8_forward(node)))
                continue
            x, y = self.act(node.inputs[0]), self.act(node.output)
            n = math.prod(self.graph.shapes[node.output])
            if node.op is OpType.CONV:
                weight, bias = self.weights(node)
                if node.name in self.candidate_index:
                    index = self.candidate_index[node.name]
                    code.append(f"mdy_save_selected_inputs(model, {index}, {x});")
                if node.name in self.w8_nodes:
                    code.append(f"mdy_conv2d_forward_w8(&shape_{ident}, {x}, {weight}, "
                                f"ws_{ident}, {bias}, {y}, {self.scratch()});")
                else:
                    code.append(f"mdy_conv2d_forward(&shape_{ident}, {x}, {weight}, {bias}, "
                                f"{y});")
            elif node.op in (OpType.RELU, OpType.RELU6):
                mask = self.bytes_at(f"mask:{node.name}") \
                    if self.has_buffer(f"mask:{node.name}") else "NULL"
                kernel = "mdy_relu_forward" if node.op is OpType.RELU else "mdy_relu6_forward"
                code.append(f"{kernel}({n}u, {x}, {y}, {mask});")
                code.extend(self.export_decisions(node, mask))
            elif node.op is OpType.ADD:
                code.append(f"mdy_add_forward({n}u, {x}, {self.act(node.inputs[1])}, {y});")
            elif node.op is OpType.GLOBAL_AVG_POOL:
                c, h, w = self.graph.shapes[node.inputs[0]]
                code.append(f"mdy_global_avgpool_forward({c}, {h * w}u, {x}, {y});")
            elif node.op is OpType.AVG_POOL:
                code.append(f"mdy_avgpool_forward(&shape_{ident}, {x}, {y});")
            elif node.op is OpType.MAX_POOL:
                argmax = self.bytes_at(f"argmax:{node.name}") \
                    if self.has_buffer(f"argmax:{node.name}") else "NULL"
                code.append(f"mdy_maxpool_forward(&shape_{ident}, {x}, {y}, {argmax});")
                code.extend(self.export_decisions(node, argmax))
            elif node.op is OpType.FLATTEN:
                if self.storage[node.output] == self.storage.get(node.inputs[0], ""):
                    code.append("/* in place: the same bytes, read as a vector */")
                else:
                    code.append(f"mdy_flatten_forward({n}u, {x}, {y});")
            elif node.op is OpType.LINEAR:
                out_f, in_f = node.params["weight"].shape
                weight, bias = self.weights(node)
                if node.name in self.w8_nodes:
                    code.append(f"mdy_linear_forward_w8({in_f}, {out_f}, {x}, {weight}, "
                                f"ws_{ident}, {bias}, {y}, {self.scratch()});")
                else:
                    code.append(f"mdy_linear_forward({in_f}, {out_f}, {x}, {weight}, {bias}, "
                                f"{y});")
            else:
                raise AssertionError(f"no forward kernel for {node.op}")
            self.model.forward.append(Call(comment, code))

    def scratch(self) -> str:
        return f"ARENA_F({self.arena_macros[W8_SCRATCH]})"

    def export_decisions(self, node: Node, buffer: str) -> list[str]:
        """The debug export of a mask or argmax the backward pass reads (a no-op unless the
        host library is built with MDY_DECISION_EXPORT; the verifier reads it from the arena)."""
        if buffer == "NULL":
            return []
        return [f"MDY_DECISIONS({self.graph.nodes.index(node)}u);"]

    def backward_calls(self) -> None:
        written: set[str] = set()

        def accumulate(tensor: str) -> int:
            flag = int(tensor in written)
            written.add(tensor)
            return flag

        last = max((time for time, step in enumerate(self.schedule.steps)
                    if step.kind is StepKind.BACKWARD), default=-1)

        def stop_unless_used(index: int, time: int) -> list[str]:
            """The early return after a weight gradient: nothing below it is used this epoch
            (engine.h, mdy_selected_below). None after the pass's last step."""
            if time == last:
                return []
            return [f"if (!mdy_selected_below(model, {index}u)) {{ return; }}"]

        for time, step in enumerate(self.schedule.steps):
            if step.kind is not StepKind.BACKWARD or step.node is None:
                continue
            node = step.node
            ident = self.idents[node.name]
            dy = self.err(node.output)
            targets = [t for t in node.inputs if t in self.schedule.error_tensors]
            comment = f"[{time}] {node.name} ({node.op.value}) backward"
            code: list[str] = []
            if node.op is OpType.CONV:
                weight, _ = self.weights(node)
                if step.weight_gradient:
                    code.append(f"mdy_accumulate_selected_gradients(model, "
                                f"{self.candidate_index[node.name]}, {dy});")
                    code.extend(stop_unless_used(self.candidate_index[node.name], time))
                for t in targets:
                    if node.name in self.w8_nodes:
                        code.append(f"mdy_conv2d_backward_input_w8(&shape_{ident}, {dy}, "
                                    f"{weight}, ws_{ident}, {self.err(t)}, {accumulate(t)}, "
                                    f"{self.scratch()});")
                    else:
                        code.append(f"mdy_conv2d_backward_input(&shape_{ident}, {dy}, {weight}, "
                                    f"{self.err(t)}, {accumulate(t)});")
            elif node.op is OpType.LINEAR:
                out_f, in_f = node.params["weight"].shape
                weight, _ = self.weights(node)
                if step.weight_gradient:
                    code.append(f"mdy_linear_backward_weight({in_f}, {out_f}, {dy}, "
                                f"{self.act(node.inputs[0])}, mdy_classifier_grad, "
                                f"mdy_classifier_grad + {in_f * out_f});")
                    code.extend(stop_unless_used(len(self.schedule.candidates), time))
                for t in targets:
                    if node.name in self.w8_nodes:
                        code.append(f"mdy_linear_backward_input_w8({in_f}, {out_f}, {dy}, "
                                    f"{weight}, ws_{ident}, {self.err(t)}, {accumulate(t)}, "
                                    f"{self.scratch()});")
                    else:
                        code.append(f"mdy_linear_backward_input({in_f}, {out_f}, {dy}, "
                                    f"{weight}, {self.err(t)}, {accumulate(t)});")
            elif node.op in (OpType.RELU, OpType.RELU6):
                n = math.prod(self.graph.shapes[node.output])
                kernel = "mdy_relu_backward" if node.op is OpType.RELU else "mdy_relu6_backward"
                for t in targets:
                    code.append(f"{kernel}({n}u, {dy}, "
                                f"{self.bytes_at(f'mask:{node.name}')}, {self.err(t)}, "
                                f"{accumulate(t)});")
            elif node.op in (OpType.ADD, OpType.FLATTEN):
                n = math.prod(self.graph.shapes[node.output])
                kernel = "mdy_add_backward" if node.op is OpType.ADD else "mdy_flatten_backward"
                for t in targets:
                    code.append(f"{kernel}({n}u, {dy}, {self.err(t)}, "
                                f"{accumulate(t)});")
            elif node.op is OpType.GLOBAL_AVG_POOL:
                c, h, w = self.graph.shapes[node.inputs[0]]
                for t in targets:
                    code.append(f"mdy_global_avgpool_backward({c}, {h * w}u, {dy}, "
                                f"{self.err(t)}, {accumulate(t)});")
            elif node.op is OpType.AVG_POOL:
                for t in targets:
                    code.append(f"mdy_avgpool_backward(&shape_{ident}, {dy}, {self.err(t)}, "
                                f"{accumulate(t)});")
            elif node.op is OpType.MAX_POOL:
                for t in targets:
                    code.append(f"mdy_maxpool_backward(&shape_{ident}, {dy}, "
                                f"{self.bytes_at(f'argmax:{node.name}')}, {self.err(t)}, "
                                f"{accumulate(t)});")
            else:
                raise AssertionError(f"no backward kernel for {node.op}")
            self.model.backward.append(Call(comment, code))

    def declare_engine(self) -> None:
        table = channel_table(self.graph, self.schedule.candidates)
        n = table.size
        for name, (ctype, _) in CHANNEL_ARRAYS.items():
            self.model.ram.append(CArray(f"mdy_{name}", ctype, max(n, 1),
                                         f"per candidate channel ({n})"))
        self.model.flash.append(CArray("channel_costs", "uint32_t", max(n, 1),
                                       "bytes of pool per candidate channel",
                                       ", ".join(f"{c}u" for c in table.channel_costs()) or "0u"))
        for index, name in enumerate(self.schedule.candidates):
            node = self.graph.node(name)
            offsets = table.layer_offsets()
            cost = self.plan.costs[list(self.plan.candidates).index(name)]
            ident = self.idents[name]
            self.model.candidates.append({
                "name": name, "ident": ident, "first_channel": offsets[index],
                "weight_units": cost.weight_units, "activation_units": cost.activation_units,
                "in_channels": cost.in_channels, "int8": self.w8,
                "weight_shape": "x".join(map(str, node.params["weight"].shape)),
            })


def shape_initializer(header: str, struct: str, name: str, *lines: dict[str, int]) -> str:
    """``static const <struct> <name> = {.field = value, ...};``, one line per dict; the fields
    must be the struct's own, in order (read from the kernel ``header``)."""
    fields = [f.name for f in struct_fields(header, struct)]
    assert [key for line in lines for key in line] == fields, (struct, fields)
    body = "".join(f"    {', '.join(f'.{k} = {v}' for k, v in line.items())},\n" for line in lines)
    return f"static const {struct} {name} = {{\n{body}}};"


def _check_field_ranges(node: Node, sizes: tuple[int, ...], window: tuple[int, ...],
                        kernel: tuple[int, int]) -> None:
    """The kernels' shape structs hold sizes in 16 bits and windows in 8 bits."""
    if max(sizes) > 0xFFFF or max(window) > 0xFF or min(window[2:4]) < 1 \
            or (node.op is OpType.MAX_POOL and kernel[0] * kernel[1] > 254):
        raise MedyateError(f"node {node.name!r} ({node.op.value}): sizes {sizes} or window "
                           f"{window} exceed what the C kernels take (sizes <= 65535, kernel, "
                           "stride and padding <= 255, max-pool windows <= 254 cells)")


def generate_model(graph: Graph, plan: BudgetPlan,
                   quantization: Quantization | None = None) -> GeneratedModel:
    emitter = _Emitter(graph, plan, quantization)
    emitter.declare_arena()
    emitter.declare_shapes()
    if emitter.int8_nodes:
        emitter.declare_int8_params()
    emitter.declare_constants()
    emitter.declare_engine()
    emitter.forward_calls()
    emitter.backward_calls()
    emitter.model.input_q8 = emitter.input_quantization()
    emitter.model.logits = emitter.arena_macros[f"act:{emitter.storage[graph.output]}"]
    emitter.model.dlogits = emitter.arena_macros[f"err:{emitter.error_roots[graph.output]}"]
    return emitter.model


SNAPSHOT_FIRST = ("mdy_classifier", "mdy_norms", "mdy_selected", "mdy_sampler_weights")


def engine_ram(graph: Graph, plan: BudgetPlan,
               quantization: Quantization | None = None) -> list[CArray]:
    """Every RAM buffer of the generated engine (what the budget counts), trainable state first:
    candidate weights, classifier, norm vector, selection, sampler weights; then the other
    per-channel arrays, gradients, the scalars (``mdy_state``), the channel pool and the arena."""

    def rank(array: CArray) -> tuple[int, int]:
        if array.name.startswith("mdy_w_"):
            return 0, 0
        if array.name in SNAPSHOT_FIRST:
            return 1, SNAPSHOT_FIRST.index(array.name)
        return 2, 0

    return [*sorted(generate_model(graph, plan, quantization).ram, key=rank),
            CArray("mdy_state", "mdy_state_t", 1, "the engine's scalars"),
            CArray("mdy_pool", "float", max(plan.pool_bytes // 4, 1), "the channel pool"),
            CArray("mdy_arena", "float", plan.memory.arena.size // 4, "the activation arena")]


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("codegen_templates"))),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["required_cflags"] = REQUIRED_CFLAGS
    return env


def learning_rate_table(settings: TrainSettings) -> str:
    return ", ".join(f"{learning_rate(e, settings):.9g}f"
                     for e in range(1, settings.epochs + 1))


def render_project(graph: Graph, plan: BudgetPlan, settings: TrainSettings, classes: int,
                   metadata: dict[str, str],
                   quantization: Quantization | None = None) -> dict[str, str]:
    """File name -> content of the generated sources (firmware files are copied separately)."""
    model = generate_model(graph, plan, quantization)
    env = template_environment()
    context = {
        "model": model, "graph": graph, "plan": plan, "settings": settings, "classes": classes,
        "metadata": metadata, "input_size": math.prod(graph.input_shape),
        "input_shape": shape_text(graph.input_shape),
        "logits_offset": model.logits, "dlogits_offset": model.dlogits,
        "schedule_steps": len(plan.memory.schedule.steps),
        "loss_step": plan.memory.schedule.time_of(StepKind.LOSS),
        "arena_bytes": plan.memory.arena.size, "pool_bytes": plan.pool_bytes,
        "pool_floats": max(plan.pool_bytes // 4, 1), "n_channels": sum(
            c["in_channels"] for c in model.candidates),
        "classifier_size": classifier_size(graph),
        "learning_rates": learning_rate_table(settings),
        "engine_state_bytes": ENGINE_STATE_BYTES, "alignment": ALIGNMENT,
    }
    return {name.removesuffix(".j2"): env.get_template(name).render(**context)
            for name in ("model.h.j2", "model.c.j2", "Makefile.j2")}


def firmware_sources() -> list[Path]:
    root = data_dir("firmware")
    return sorted([*root.glob("kernels/*.[ch]"), *root.glob("runtime/*.[ch]")])
