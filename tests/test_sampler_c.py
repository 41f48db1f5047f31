"""The C sampler (firmware/runtime) against the shared vectors, bit for bit, via ctypes."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medyate_mcu.codegen.c_interface import (
    REQUIRED_CFLAGS,
    ctypes_struct,
    define_constants,
    status_codes,
)

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "firmware/runtime"
VECTORS = json.loads((ROOT / "firmware/tests/vectors/sampler_vectors.json").read_text())
KERNELS = ROOT / "firmware/kernels"
FLAGS = [*REQUIRED_CFLAGS, "-pedantic", "-shared", "-fPIC", f"-I{KERNELS}"]
SOURCES = [str(RUNTIME / "pcg32.c"), str(RUNTIME / "sampler.c"), str(KERNELS / "mdy_status.c")]

# The runtime's one status enum, as firmware/kernels/mdy_status.h defines it.
CODES = status_codes()
OK, ERR_NULL, ERR_BAD_NORM, ERR_BAD_WEIGHT, ERR_BAD_EPOCH, ERR_TOO_MANY, ERR_CAPACITY = (
    CODES[f"MDY_{name}"] for name in ("OK", "ERR_NULL", "ERR_BAD_NORM", "ERR_BAD_WEIGHT",
                                      "ERR_BAD_EPOCH", "ERR_TOO_MANY", "ERR_CAPACITY"))

U32 = ctypes.c_uint32
Pcg32State = ctypes_struct("runtime/pcg32.h", "mdy_pcg32_t")


def _builds() -> list[tuple[str, str]]:
    compilers = [cc for cc in ("gcc", "clang") if shutil.which(cc)]
    if "gcc" not in compilers and os.environ.get("CI") == "true":
        pytest.fail("gcc is required in CI to test the C sampler")
    return [(cc, opt) for cc in compilers for opt in ("-O0", "-O2")]


@pytest.fixture(scope="module", params=_builds() or [None], ids=lambda b: " ".join(b or ["none"]))
def lib(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if request.param is None:
        pytest.skip("no C compiler (gcc or clang) on this machine")
    compiler, opt = request.param
    out = tmp_path_factory.mktemp("sampler") / "libsampler.so"
    subprocess.run([compiler, *FLAGS, opt, *SOURCES, "-o", str(out)], check=True,
                   capture_output=True, text=True)
    library = ctypes.CDLL(str(out))
    library.mdy_pcg32_seed.argtypes = [ctypes.POINTER(Pcg32State), ctypes.c_uint64,
                                       ctypes.c_uint64]
    library.mdy_pcg32_seed.restype = None
    library.mdy_pcg32_next.argtypes = [ctypes.POINTER(Pcg32State)]
    library.mdy_pcg32_next.restype = U32
    library.mdy_channel_weights.argtypes = [ctypes.c_void_p, U32, ctypes.c_int, ctypes.c_void_p]
    library.mdy_channel_weights.restype = ctypes.c_int
    library.mdy_select_channels.argtypes = [
        ctypes.c_uint64, U32, ctypes.c_void_p, ctypes.c_void_p, U32, U32, ctypes.c_void_p,
        ctypes.c_void_p, U32, ctypes.POINTER(U32),
    ]
    library.mdy_select_channels.restype = ctypes.c_int
    library.mdy_status_message.argtypes = [ctypes.c_int]
    library.mdy_status_message.restype = ctypes.c_char_p
    return library


def _floats(bits: list[int]) -> ctypes.Array[ctypes.c_float]:
    return (ctypes.c_float * max(1, len(bits))).from_buffer_copy(
        (U32 * max(1, len(bits)))(*bits)
    )


def _weights(lib: ctypes.CDLL, bits: list[int] | None, n: int,
             uniform: bool) -> tuple[int, list[int]]:
    out = (U32 * max(1, n))(*([0xDEADBEEF] * max(1, n)))
    norms = None if bits is None else _floats(bits)
    status = lib.mdy_channel_weights(norms, n, int(uniform), out)
    return status, list(out)[:n]


def _select(lib: ctypes.CDLL, seed: int, epoch: int, costs: list[int], weights: list[int],
            budget: int, cap: int | None = None) -> tuple[int, list[int]]:
    n = len(costs)
    cap = n if cap is None else cap
    selected = (ctypes.c_uint16 * max(1, cap))()
    scratch = (ctypes.c_uint8 * max(1, n))()
    count = U32(12345)
    status = lib.mdy_select_channels(seed, epoch, (U32 * max(1, n))(*costs),
                                     (U32 * max(1, n))(*weights), n, budget, scratch, selected,
                                     cap, ctypes.byref(count))
    return status, list(selected)[: count.value]


@pytest.mark.parametrize("case", VECTORS["pcg32"], ids=lambda c: f"{c['initstate']}-{c['initseq']}")
def test_pcg32_outputs(lib: ctypes.CDLL, case: dict) -> None:
    rng = Pcg32State()
    lib.mdy_pcg32_seed(ctypes.byref(rng), case["initstate"], case["initseq"])
    assert [lib.mdy_pcg32_next(ctypes.byref(rng)) for _ in case["outputs"]] == case["outputs"]


def test_pcg32_reference_demo(lib: ctypes.CDLL) -> None:
    # pcg-c-basic's pcg32-demo, seeded (42, 54): an oracle independent of the Python side.
    rng = Pcg32State()
    lib.mdy_pcg32_seed(ctypes.byref(rng), 42, 54)
    assert [lib.mdy_pcg32_next(ctypes.byref(rng)) for _ in range(3)] == [
        0xA15C02B7, 0x7B47F409, 0xBA1D3330,
    ]


@pytest.mark.parametrize("case", VECTORS["weights"], ids=lambda c: c["name"])
def test_weights(lib: ctypes.CDLL, case: dict) -> None:
    bits = case["norms_f32_bits"]
    assert _weights(lib, bits, len(bits), case["uniform"]) == (OK, case["weights"])


def test_uniform_weights_need_no_norms(lib: ctypes.CDLL) -> None:
    assert _weights(lib, None, 3, uniform=True) == (OK, [1, 1, 1])
    assert _weights(lib, None, 3, uniform=False)[0] == ERR_NULL


@pytest.mark.parametrize("case", VECTORS["bad_norms"], ids=lambda c: c["name"])
def test_bad_norms(lib: ctypes.CDLL, case: dict) -> None:
    bits = case["norms_f32_bits"]
    status, written = _weights(lib, bits, len(bits), uniform=False)
    assert status == ERR_BAD_NORM
    assert written == [0xDEADBEEF] * len(bits)  # nothing written on error
    assert b"corrupted" in lib.mdy_status_message(status)


@pytest.mark.parametrize("case", VECTORS["selections"], ids=lambda c: c["name"])
def test_selections(lib: ctypes.CDLL, case: dict) -> None:
    n = len(case["costs"])
    bits = case["norms_f32_bits"]
    uniform = bits is None or case["epoch"] == 1
    # The device path: weights from the norm vector, then the draw.
    assert _weights(lib, bits, n, uniform) == (OK, case["weights"])
    assert _select(lib, case["seed"], case["epoch"], case["costs"], case["weights"],
                   case["budget"]) == (OK, case["selected"])


def test_selection_errors(lib: ctypes.CDLL) -> None:
    assert _select(lib, 1, 0, [1, 1], [1, 1], 2)[0] == ERR_BAD_EPOCH
    assert _select(lib, 1, 2, [1, 1], [1, 0], 2)[0] == ERR_BAD_WEIGHT
    # Three channels fit but the output buffer holds two: the two drawn first are reported.
    full = _select(lib, 1, 2, [1, 1, 1], [1, 1, 1], 3)
    assert _select(lib, 1, 2, [1, 1, 1], [1, 1, 1], 3, cap=2) == (ERR_CAPACITY, full[1][:2])
    count = U32(7)
    status = lib.mdy_select_channels(1, 2, None, None, 2, 5, None, None, 0, ctypes.byref(count))
    assert (status, count.value) == (ERR_NULL, 0)
    assert lib.mdy_select_channels(1, 2, None, None, 0, 5, None, None, 0, None) == ERR_NULL
    status = lib.mdy_select_channels(1, 2, None, None, 0, 5, None, None, 0, ctypes.byref(count))
    assert (status, count.value) == (OK, 0)


def test_too_many_channels(lib: ctypes.CDLL) -> None:
    n = define_constants("runtime/sampler.h")["MDY_SAMPLER_MAX_CHANNELS"] + 1
    assert _weights(lib, None, n, uniform=True)[0] == ERR_TOO_MANY
    ones = [1] * n
    assert _select(lib, 1, 2, ones, ones, 1)[0] == ERR_TOO_MANY


def test_strerror_names_every_status(lib: ctypes.CDLL) -> None:
    messages = [lib.mdy_status_message(code) for code in CODES.values()]
    assert len(set(messages)) == len(CODES) and all(b"unknown" not in m for m in messages)
    assert b"unknown" in lib.mdy_status_message(99)


def _host_has_fma() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " fma " in cpuinfo.read_text()


@pytest.mark.skipif(not (shutil.which("gcc") and _host_has_fma()), reason="needs gcc, x86 FMA")
def test_vectors_catch_a_fused_multiply_add(tmp_path: Path) -> None:
    # Built with contraction allowed, gcc fuses q * 16777215 + 0.5 and the fma_sensitive
    # vector must then fail: the reason sampler.c is compiled with -ffp-contract=off.
    out = tmp_path / "libfused.so"
    flags = [f for f in FLAGS if f != "-ffp-contract=off"]
    subprocess.run(["gcc", *flags, "-O2", "-mfma", "-ffp-contract=fast",
                    *SOURCES, "-o", str(out)],
                   check=True, capture_output=True)
    fused = ctypes.CDLL(str(out))
    fused.mdy_channel_weights.argtypes = [ctypes.c_void_p, U32, ctypes.c_int, ctypes.c_void_p]
    (case,) = [c for c in VECTORS["weights"] if c["name"] == "fma_sensitive"]
    status, weights = _weights(fused, case["norms_f32_bits"], len(case["weights"]), False)
    assert status == OK
    assert weights != case["weights"]
