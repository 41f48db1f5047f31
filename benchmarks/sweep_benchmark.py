"""Sweep benchmark: the same panel sweep (bundled demo model, the three downstream panel tasks,
budgets 150/225/300 kB, policies medyate, trady, static, classifier and full, 2 seeds, 5 epochs:
78 cells) run by `medyate-mcu experiment --serial` and on a local Ray of 2 CPUs
(`--cpus 2`), each from scratch in its own output folder (its LaRa rankings included); the panel
data sets come from the on-disk data cache either way (built first if absent, untimed).

The machine's speed drifts by several percent over minutes (one core's alone more than two's
together), so each of --rounds (default 2) runs both, in alternating order (serial, Ray, Ray,
serial): a drift then weighs on both sides alike, and the speed-up is the ratio of the sums.
Prints the wall-clock times, the ratio, whether every results.csv is byte-identical,
and where the time goes: the cells' own seconds (timings.csv) against the wall clock, the rest
being start-up (imports, data loading, Ray's start), LaRa and the end's imbalance. Before and
after, a control without Ray: the same single-thread PyTorch loop run alone, then in --cpus
processes at once; alone / concurrent throughput is what parallelism can gain on the machine at
that moment (about --cpus on idle cores, 1 when other jobs take them).

Run: .venv/bin/python benchmarks/sweep_benchmark.py   (about 11 minutes on 2 idle cores)
     [--cpus N] [--epochs N, default 5: more amortise the fixed costs, as
     the panel sweep's 15 do] [--rounds N, default 2] [--keep DIR: keep the output folders]
The figure needs an idle machine: other processes on the cores slow both runs unevenly.
Figures only: nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medyate_mcu.graph import load_onnx
from medyate_mcu.zoo import DOWNSTREAM_TASKS, default_model_path
from medyate_mcu.zoo.tasks import load_task, proxy_task_for

SWEEP = ["--budgets", "150kB,225kB,300kB", "--policies", "medyate,trady,static,classifier,full",
         "--seeds", "2", "--boards", "none"]


def cli() -> list[str]:
    """The `medyate-mcu` beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("medyate-mcu")
    found = str(beside) if beside.is_file() else shutil.which("medyate-mcu")
    if found is None:
        sys.exit("medyate-mcu is not installed: pip install -e . first")
    return [found]


def warm_data_cache() -> None:
    """Build (or find) every panel set the sweep reads, so neither timed run builds one."""
    graph = load_onnx(default_model_path())
    for task in DOWNSTREAM_TASKS:
        load_task(task, graph, seed=0)
        load_task(proxy_task_for(task, graph, DOWNSTREAM_TASKS), graph)


def timed_sweep(where: list[str], epochs: int, output: Path) -> float:
    """Wall-clock seconds of one sweep into ``output`` (its log beside it)."""
    start = time.perf_counter()
    with (output.parent / f"{output.name}.log").open("w") as log:
        done = subprocess.run([*cli(), "experiment", *SWEEP, "--epochs", str(epochs), *where,
                               "--fresh",
                               "-o", str(output)], stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the sweep {' '.join(where)} failed; see {log.name}")
    return seconds


CONTROL = """
import time, torch
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                          torch.nn.Flatten(), torch.nn.Linear(32, 10))
x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
start = time.perf_counter()
for _ in range(100):
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
print(time.perf_counter() - start)
"""


def parallel_capacity(processes: int) -> float:
    """Throughput of ``processes`` copies of a single-thread training loop at once, relative
    to one alone."""
    alone = float(subprocess.run([sys.executable, "-c", CONTROL], capture_output=True,
                                 text=True, check=True).stdout)
    running = [subprocess.Popen([sys.executable, "-c", CONTROL], stdout=subprocess.PIPE,
                                text=True) for _ in range(processes)]
    together = [float(p.communicate()[0]) for p in running]
    return processes * alone / max(together)


def cell_seconds(output: Path) -> tuple[float, int]:
    """The cells' own seconds summed (timings.csv) and their count."""
    rows = list(csv.DictReader((output / "timings.csv").open()))
    return sum(float(row["seconds"]) for row in rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="The panel sweep, serial and on local Ray.")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5,
                        help="more epochs amortise the fixed costs (start-up, Ray, LaRa)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="serial then Ray, Ray then serial, ... (drift cancels out)")
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="medyate-sweep-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    modes = {"serial": ["--serial"], "ray": ["--cpus", str(args.cpus)]}
    try:
        warm_data_cache()
        before = parallel_capacity(args.cpus)
        walls: dict[str, list[float]] = {"serial": [], "ray": []}
        cells: dict[str, list[float]] = {"serial": [], "ray": []}
        csvs: set[bytes] = set()
        count = 0
        for round_ in range(args.rounds):
            for mode in ("serial", "ray") if round_ % 2 == 0 else ("ray", "serial"):
                output = folder / f"{mode}{round_}"
                walls[mode].append(timed_sweep(modes[mode], args.epochs, output))
                seconds, count = cell_seconds(output)
                cells[mode].append(seconds)
                csvs.add((output / "results.csv").read_bytes())
        after = parallel_capacity(args.cpus)
        serial_wall, ray_wall = sum(walls["serial"]), sum(walls["ray"])
        serial_cells, ray_cells = sum(cells["serial"]), sum(cells["ray"])
        print(f"sweep: demo model, {', '.join(DOWNSTREAM_TASKS)}; {' '.join(SWEEP)} --epochs "
              f"{args.epochs}; {count} cells; {args.rounds} rounds (serial and Ray, in "
              "alternating order); sums over the rounds")
        print(f"serial:          {serial_wall:7.1f} s wall; cells {serial_cells:6.1f} s; "
              f"the rest (start-up, data, LaRa) {serial_wall - serial_cells:5.1f} s")
        print(f"Ray, {args.cpus} CPUs:     {ray_wall:7.1f} s wall; cells {ray_cells:6.1f} s "
              f"(/{args.cpus} = {ray_cells / args.cpus:5.1f} s); the rest (start-up, data, "
              f"Ray, LaRa, the end's imbalance) {ray_wall - ray_cells / args.cpus:5.1f} s")
        rounds = ", ".join(f"{s:.1f}/{r:.1f} s = {s / r:.2f}x"
                           for s, r in zip(walls["serial"], walls["ray"], strict=True))
        print(f"speed-up: {serial_wall / ray_wall:.2f}x (rounds, serial/Ray: {rounds}); per "
              f"cell on Ray {ray_cells / serial_cells:.2f}x the serial time")
        print(f"results.csv byte-identical in every run: {'yes' if len(csvs) == 1 else 'NO'}")
        print(f"control, {args.cpus} single-thread processes at once vs one alone: "
              f"{before:.2f}x before, {after:.2f}x after (idle cores: about {args.cpus}x)")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
