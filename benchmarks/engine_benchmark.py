"""Engine benchmarks, printed as ratios measured in this run:

1. arena size / its liveness lower bound, for every reference architecture and several candidate
   sets (target: <= 1.10);
2. the demo's engine RAM at --budget 300kB (planned, and read from the built image) against full
   fine-tuning of the same network in the same engine (every conv channel selected);
3. one training step (one sample, the planned selection) of the host-built C engine against the
   host reference's PyTorch step doing the same work.

Run: .venv/bin/python benchmarks/engine_benchmark.py   (about a minute)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medyate_mcu.cli.method_commands import load_ranking
from medyate_mcu.graph import OpType, import_torch, load_onnx
from medyate_mcu.method.costs import conv_channel_costs
from medyate_mcu.method.planner import plan_budget
from medyate_mcu.method.trainer import (
    SelectionRule,
    SparseTrainer,
    TrainSettings,
    replace_classifier,
)
from medyate_mcu.planning.arena import align
from medyate_mcu.planning.memory import engine_memory
from medyate_mcu.run.engine_lib import EngineLibrary
from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.toolchain.host import make, symbol_sizes
from medyate_mcu.zoo import architectures, default_model_path

BUDGET = 300 * 1024
STEPS = 200


def arena_ratios() -> None:
    print("1. arena / liveness lower bound (target <= 1.10)")
    graphs = {"mbv2 (demo)": load_onnx(default_model_path())}
    for name in ("resnet8", "mbv1"):
        torch.manual_seed(0)
        graphs[name] = import_torch(architectures.create(name, 10), torch.zeros(1, 3, 32, 32))
    for name, graph in graphs.items():
        convs = [node.name for node in graph.nodes_of(OpType.CONV)]
        worst = 0.0
        for share in (0.0, 0.25, 0.5, 1.0):
            for candidates in (convs[len(convs) - round(share * len(convs)):],
                               convs[:round(share * len(convs))]):
                arena = engine_memory(graph, frozenset(candidates)).arena
                worst = max(worst, arena.size / arena.lower_bound)
        print(f"   {name:12s} worst arena / lower bound over 7 candidate sets: {worst:.3f}")


def demo_memory(build: Path) -> None:
    print("2. demo engine RAM at --budget 300kB vs full fine-tuning in the same engine")
    graph = replace_classifier(load_onnx(default_model_path()), 10, 0)
    plan = plan_budget(graph, load_ranking(None, None, graph).ranking, BUDGET)
    image = sum(align(size) for size in symbol_sizes(make(build, "lib")).values())
    convs = frozenset(node.name for node in graph.nodes_of(OpType.CONV))
    everything = engine_memory(graph, convs).fixed_bytes + 4 * sum(
        cost.layer_units for cost in conv_channel_costs(graph))
    print(f"   planned {plan.total_bytes} B, built image {image} B (budget {BUDGET} B)")
    print(f"   full fine-tune (every channel of every conv, same engine): {everything} B = "
          f"{everything / image:.2f}x the MeDyate engine")


def step_time(build: Path) -> None:
    print(f"3. one training step, {STEPS} samples, planned selection")
    graph = replace_classifier(load_onnx(default_model_path()), 10, 0)
    plan = plan_budget(graph, load_ranking(None, None, graph).ranking, BUDGET)
    engine = EngineLibrary(make(build, "lib"), 3 * 32 * 32, 10)
    engine.init()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, STEPS)
    start = time.perf_counter()
    for sample, label in zip(x, y, strict=True):
        engine.train_sample(sample, int(label))
    c_seconds = time.perf_counter() - start
    trainer = SparseTrainer(graph, plan.memory.schedule.candidates, plan.pool_bytes,
                            SelectionRule(True, True), TrainSettings(batch_size=1))
    per_layer = trainer.table.split(engine.selected())
    print(f"   C engine (one thread, -O2): {1e3 * c_seconds / STEPS:.2f} ms/step")
    threads = torch.get_num_threads()
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        start = time.perf_counter()
        for sample, label in zip(x, y, strict=True):
            trainer.step(torch.from_numpy(sample[None]), torch.tensor([int(label)]), 0.0,
                         per_layer)
        torch_seconds = time.perf_counter() - start
        print(f"   PyTorch reference, {count} thread(s): {1e3 * torch_seconds / STEPS:.2f} "
              f"ms/step -> C / PyTorch time ratio {c_seconds / torch_seconds:.2f} "
              f"(< 1: C faster)")
    torch.set_num_threads(threads)


def main_benchmark() -> None:
    arena_ratios()
    with tempfile.TemporaryDirectory() as folder:
        build = Path(folder) / "demo"
        compile_project(CompileOptions(budget=300 * 1024, embed=0), build)
        demo_memory(build)
        step_time(build)


if __name__ == "__main__":
    main_benchmark()
