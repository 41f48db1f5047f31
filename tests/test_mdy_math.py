"""The engine's own exp and log (firmware/kernels/mdy_math.c): accuracy in ulps against float64
numpy over millions of inputs, and the same bits on the host and under QEMU on Cortex-M4F and
Cortex-M7F (the reason they exist: newlib's expf/logf and glibc's differ by one ulp on some
inputs); no libm transcendental linked into the engine; the generated Makefile's required flags
(no fused multiply-add, whatever CFLAGS the environment holds)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from arm_support import compile_for, require_tool
from c_build import ROOT, build_library
from elftools.elf.elffile import ELFFile

from medyate_mcu.boards import get_board
from medyate_mcu.codegen.folder import Project
from medyate_mcu.run.qemu import run_qemu
from medyate_mcu.run.verify_qemu import host_snapshots
from medyate_mcu.toolchain.arm import build_firmware
from medyate_mcu.toolchain.host import host_compiler, make, symbol_sizes
from medyate_mcu.zoo.tasks import load_task

KERNELS = ROOT / "firmware/kernels"
ULP_BOUND = 1.0  # measured: exp 0.90, log 0.83 (fdlibm's reductions, float-fitted polynomials)
TRANSCENDENTALS = {"exp", "expf", "log", "logf", "pow", "powf", "exp2f", "log2f", "expm1f",
                   "log1pf", "tanhf", "tanh", "__ieee754_expf", "__ieee754_logf"}

HOST_HARNESS = """
#include <stdint.h>
#include "mdy_math.h"
void run_exp(uint32_t n, const float *x, float *y)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = mdy_expf(x[i]);
    }
}
void run_log(uint32_t n, const float *x, float *y)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = mdy_logf(x[i]);
    }
}
"""

# Under QEMU: math.in = u32 [n_exp, n_log], then the inputs; math.out = the outputs.
ARM_HARNESS = """
#include <math.h>
#include <stdint.h>
#include "mdy_math.h"
#include "semihosting.h"
#define EXP mdy_expf
#define LOG mdy_logf
static float in[1024], out[1024];
int main(void)
{
    uint32_t header[2], done, n, i, k;
    int32_t src = mdy_semi_open("math.in", MDY_SEMI_OPEN_READ_BINARY);
    int32_t dst = mdy_semi_open("math.out", MDY_SEMI_OPEN_WRITE_BINARY);
    if (src < 0 || dst < 0 || mdy_semi_read(src, header, sizeof header) != 0u) {
        return 2;
    }
    for (k = 0; k < 2u; ++k) {
        for (done = 0; done < header[k]; done += n) {
            n = header[k] - done < 1024u ? header[k] - done : 1024u;
            if (mdy_semi_read(src, in, n * 4u) != 0u) {
                return 2;
            }
            for (i = 0; i < n; ++i) {
                out[i] = k == 0u ? EXP(in[i]) : LOG(in[i]);
            }
            if (mdy_semi_write(dst, out, n * 4u) != 0u) {
                return 2;
            }
        }
    }
    (void)mdy_semi_close(src);
    return mdy_semi_close(dst) == 0 ? 0 : 2;
}
"""


def _floats(first: int, last: int, stride: int) -> np.ndarray:
    """Every ``stride``-th float32 whose bit pattern lies in [first, last)."""
    return np.arange(first, last, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)


def ulp_error(ours: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|ours - exact| in units of the float32 ulp at ``exact`` (2^(e-24) for exact in
    [2^(e-1), 2^e); 2^-149 in the subnormal range)."""
    _, exponent = np.frexp(np.abs(exact))
    ulp = np.ldexp(1.0, np.maximum(exponent - 24, -149))
    return np.abs(ours.astype(np.float64) - exact) / ulp


class HostMath:
    """mdy_expf / mdy_logf built for the host, applied to arrays."""

    def __init__(self, folder: Path) -> None:
        harness = folder / "harness.c"
        harness.write_text(HOST_HARNESS)
        self.lib = build_library([harness, KERNELS / "mdy_math.c"], folder, "mdy_math",
                                 ("-O2", f"-I{KERNELS}"))

    def __call__(self, function: str, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty_like(x)
        getattr(self.lib, function)(ctypes.c_uint32(x.size), x.ctypes.data_as(ctypes.c_void_p),
                                    y.ctypes.data_as(ctypes.c_void_p))
        return y


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo compiled for qemu-mps2-an386 (8 samples, 1 epoch); tests work on copies."""
    return compile_for(None, "qemu-mps2-an386", "200kB", tmp_path_factory.mktemp("p") / "b", 8,
                       1)


@pytest.fixture(scope="module")
def host_math(tmp_path_factory: pytest.TempPathFactory) -> HostMath:
    return HostMath(tmp_path_factory.mktemp("mdy_math"))


EXP_DOMAINS = {  # the engine's domain (softmax: exp(z - max) <= 1) densely, the rest sparsely
    "(-104, 0]": (0x80000000, 0xC2CFF1B6, 97),
    "[0, 88.72]": (0x00000000, 0x42B17218, 397),
}
LOG_DOMAINS = {  # the engine's domain (log of a softmax sum: [1, classes]) densely
    "[1, 256]": (0x3F800000, 0x43800001, 13),
    "(0, inf)": (0x00000001, 0x7F800000, 397),
}


@pytest.mark.parametrize("function, reference, domain", [
    *(("run_exp", np.exp, d) for d in EXP_DOMAINS.values()),
    *(("run_log", np.log, d) for d in LOG_DOMAINS.values())])
def test_error_is_below_one_ulp(host_math: HostMath, function: str, reference: np.ufunc,
                                domain: tuple[int, int, int]) -> None:
    x = _floats(*domain)
    assert x.size > 1_000_000
    errors = ulp_error(host_math(function, x), reference(x.astype(np.float64)))
    assert errors.max() < ULP_BOUND, (x[errors.argmax()], errors.max())
    # The bound has teeth: one ulp further from the exact value at the worst input exceeds it.
    worst = x[errors.argmax()][None]
    ours, exact = host_math(function, worst), reference(worst.astype(np.float64))
    away = np.nextafter(ours, np.float32(np.inf if ours[0] >= exact[0] else -np.inf))
    assert ulp_error(away, exact).max() >= ULP_BOUND


def test_exhaustive_near_the_hard_places(host_math: HostMath) -> None:
    """Every float in [-0.5, -0.125] (exp's polynomial alone) and around 1 (log's smallest
    results), and every float between -104 and -87 (subnormal exp results)."""
    for function, reference, (first, last) in (
            ("run_exp", np.exp, (0xBE000000, 0xBF000001)),
            ("run_log", np.log, (0x3F700000, 0x3F900000)),
            ("run_exp", np.exp, (0xC2AE0000, 0xC2CFF1B6))):
        x = _floats(first, last, 1)
        errors = ulp_error(host_math(function, x), reference(x.astype(np.float64)))
        assert errors.max() < ULP_BOUND, (function, x[errors.argmax()], errors.max())


def test_special_values(host_math: HostMath) -> None:
    inf, nan = np.inf, np.nan
    x = np.array([0.0, -0.0, inf, -inf, nan, -200.0, 89.0, 88.72283172607422, -1e-30],
                 np.float32)
    np.testing.assert_array_equal(host_math("run_exp", x)[:4], [1.0, 1.0, inf, 0.0])
    assert np.isnan(host_math("run_exp", x)[4])
    assert host_math("run_exp", x)[5] == 0.0 and host_math("run_exp", x)[6] == inf
    assert np.isfinite(host_math("run_exp", x)[7]) and host_math("run_exp", x)[8] == 1.0
    y = host_math("run_log", np.array([0.0, -0.0, inf, -1.0, nan, 1.0, 1e-45], np.float32))
    assert y[0] == -inf and y[1] == -inf and y[2] == inf and y[5] == 0.0
    assert np.isnan(y[3]) and np.isnan(y[4])
    assert ulp_error(y[6:], np.log(np.array([1e-45], np.float32).astype(np.float64))) < 1


def _bit_inputs() -> tuple[np.ndarray, np.ndarray]:
    """About 2.2 M inputs: exp on the engine's domain (dense strides and random values), the
    positive side; log on [1, 256] and on the whole positive range."""
    rng = np.random.default_rng(9)
    exp_x = np.concatenate([
        _floats(0x80000000, 0xC2CFF1B6, 1201), _floats(0x00000000, 0x42B17218, 4001),
        rng.uniform(-30.0, 0.0, 500_000).astype(np.float32)])
    log_x = np.concatenate([
        _floats(0x3F800000, 0x43800001, 131), _floats(0x00000001, 0x7F800000, 4001),
        rng.uniform(1.0, 10.0, 200_000).astype(np.float32)])
    return exp_x, log_x


def _run_on(board_name: str, harness: str, exp_x: np.ndarray, log_x: np.ndarray,
            folder: Path) -> np.ndarray:
    """The harness built for ``board_name`` and run under QEMU: the output bits."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    build = compile_for(None, board_name, "200kB", folder / "b", 8, 1)
    (build / "mathcheck.c").write_text(harness)
    subprocess.run(["make", "-s", "-C", str(build), "arm", "FIRMWARE_APP=mathcheck",
                    "APP_SOURCES_mathcheck=mathcheck.c"], capture_output=True, check=True)
    with (folder / "math.in").open("wb") as handle:
        handle.write(np.array([exp_x.size, log_x.size], np.uint32).tobytes())
        handle.write(exp_x.tobytes() + log_x.tobytes())
    run = run_qemu(get_board(board_name), build / "arm" / "medyate_mathcheck.elf",
                   cwd=folder, timeout=300)
    assert run.status == 0, run.output
    return np.fromfile(folder / "math.out", np.uint32)


@pytest.mark.parametrize("board_name", ["qemu-mps2-an386", "qemu-mps2-an500"])
def test_cortex_m_gives_the_host_bits(board_name: str, host_math: HostMath,
                                      tmp_path: Path) -> None:
    exp_x, log_x = _bit_inputs()
    assert exp_x.size + log_x.size > 2_000_000
    device = _run_on(board_name, ARM_HARNESS, exp_x, log_x, tmp_path)
    host = np.concatenate([host_math("run_exp", exp_x), host_math("run_log", log_x)])
    differing = np.flatnonzero(device != host.view(np.uint32))
    assert differing.size == 0, f"{differing.size} of {host.size} differ"


def test_newlib_and_glibc_differ(tmp_path: Path) -> None:
    """Why the engine has its own: the same comparison with the C libraries' expf and logf
    (newlib on the Cortex-M4F, glibc on the host) finds differences."""
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    if platform.system() != "Linux" or not hasattr(libm, "expf"):
        pytest.skip("needs glibc's libm")
    exp_x, log_x = _bit_inputs()
    device = _run_on("qemu-mps2-an386", ARM_HARNESS.replace("mdy_expf", "expf")
                     .replace("mdy_logf", "logf"), exp_x, log_x, tmp_path)
    for function in (libm.expf, libm.logf):
        function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
    host = np.array([libm.expf(v) for v in exp_x[::16]] + [libm.logf(v) for v in log_x[::16]],
                    np.float32)
    ours = np.concatenate([device[:exp_x.size][::16], device[exp_x.size:][::16]])
    assert (ours != host.view(np.uint32)).mean() > 1e-3


def _function_symbols(image: Path, undefined: bool) -> set[str]:
    with image.open("rb") as handle:
        elf = ELFFile(handle)
        table = elf.get_section_by_name(".dynsym" if undefined else ".symtab")
        assert table is not None
        return {symbol.name for symbol in table.iter_symbols()
                if (symbol["st_shndx"] == "SHN_UNDEF") == undefined and symbol.name}


def test_no_libm_transcendental_in_the_engine(project: Path, tmp_path: Path) -> None:
    """The Cortex-M verification image defines none (so none is linked), the host library
    imports none; sqrtf is the FPU's correctly rounded instruction, not a call."""
    require_tool("arm-none-eabi-gcc")
    objdump = require_tool("arm-none-eabi-objdump")
    build = shutil.copytree(project, tmp_path / "b")
    image = build_firmware(Project.open(build), "verify")
    library = make(build, "lib")
    assert not _function_symbols(image, undefined=False) & (TRANSCENDENTALS | {"sqrtf"})
    assert "mdy_expf" in _function_symbols(image, undefined=False)
    assert not _function_symbols(library, undefined=True) & (TRANSCENDENTALS | {"sqrtf"})
    disassembly = subprocess.run([objdump, "-d", str(image)], capture_output=True, text=True,
                                 check=True).stdout
    assert "vsqrt.f32" in disassembly
    # The check sees a libm call when there is one: the same engine against newlib's expf.
    loss = build / "medyate/kernels/loss.c"
    loss.write_text(loss.read_text().replace("mdy_expf(", "expf("))
    image = build_firmware(Project.open(build), "verify")
    assert "expf" in _function_symbols(image, undefined=False)


def _fma_count(library: Path) -> int:
    text = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return len(re.findall(r"\bvfn?m(add|sub)\d*[ps]s\b", text))


def test_environment_cflags_cannot_bring_back_fma(project: Path, tmp_path: Path) -> None:
    """CFLAGS='-O3 -march=native -ffast-math' in the environment: the required flags still
    apply (no fused multiply-add in the library) and the engine's whole RAM after an epoch has
    the bits of the default build. Without the required flags the same sources do contract,
    and the run's bits change: both checks have teeth."""
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if platform.machine() != "x86_64" or not re.search(r"\bfma\b", cpu):
        pytest.skip("needs an x86-64 CPU with FMA")
    require_tool("objdump")
    build = shutil.copytree(project, tmp_path / "b")
    default = tmp_path / "default.so"
    shutil.copy2(make(build, "lib"), default)
    subprocess.run(["make", "-s", "-B", "-C", str(build), "lib"], capture_output=True,
                   check=True, env={**os.environ, "CFLAGS": "-O3 -march=native -ffast-math"})
    tuned = build / "libmedyate.so"
    assert _fma_count(default) == 0 and _fma_count(tuned) == 0
    assert _keeps_subnormals(tuned), "-ffast-math in CFLAGS linked flush-to-zero in"
    sources = ["model.c", *(str(path.relative_to(build)) for path in
                            sorted(build.glob("medyate/kernels/*.c"))
                            + sorted(build.glob("medyate/runtime/*.c")))]
    # -ffp-contract=fast, not -ffast-math: a library linked with -ffast-math sets
    # flush-to-zero for the whole process that loads it (gcc's crtfastmath), here pytest's.
    subprocess.run([host_compiler(), "-O3", "-march=native", "-ffp-contract=fast", "-std=c99",
                    "-shared", "-fPIC", "-DMDY_DECISION_EXPORT", "-I.", "-Imedyate/kernels",
                    "-Imedyate/runtime", "-o", str(tmp_path / "fast.so"), *sources],
                   cwd=build, capture_output=True, check=True)
    assert _fma_count(tmp_path / "fast.so") > 0

    run = _epoch_runner(build)
    assert run(tuned) == run(default)
    assert run(tmp_path / "fast.so")[1] != run(default)[1]


def _keeps_subnormals(library: Path) -> bool:
    """Whether a process that loads ``library`` still computes subnormal results (a library
    linked with -ffast-math turns on flush-to-zero at load time); checked in a child process."""
    probe = ("import ctypes, sys, numpy as np; ctypes.CDLL(sys.argv[1]); "
             "print(np.float32(1e-38) * np.float32(0.01) > 0)")
    run = subprocess.run([sys.executable, "-c", probe, str(library)], capture_output=True,
                         text=True, check=True)
    return run.stdout.strip() == "True"


def _epoch_runner(build: Path) -> Callable[[Path], list[dict[str, bytes]]]:
    """A host library of ``build`` -> its whole engine RAM after mdy_init and after one epoch
    on 16 digits samples."""
    graph, _, settings, _ = Project.open(build).reference()
    data = load_task("digits", graph, seed=0)
    x, y = data.x_train[:16], data.y_train[:16]

    def run(library: Path) -> list[dict[str, bytes]]:
        return host_snapshots(library, symbol_sizes(library), x, y, graph.output_shape[0],
                              settings.seed, 1)

    return run


def test_host_builds_agree_across_compilers_and_levels(project: Path, tmp_path: Path) -> None:
    """gcc -O0 and clang -O3 builds of the library end the epoch with the default build's bits
    (the Cortex-M side is compared with the default build by verify --qemu)."""
    build = shutil.copytree(project, tmp_path / "b")
    run = _epoch_runner(build)
    expected = run(make(build, "lib"))
    for compiler, level in (("gcc", "-O0"), ("clang", "-O3")):
        require_tool(compiler)
        subprocess.run(["make", "-s", "-B", "-C", str(build), "lib", f"CC={compiler}",
                        f"CFLAGS={level}"], capture_output=True, check=True)
        assert run(build / "libmedyate.so") == expected, (compiler, level)
