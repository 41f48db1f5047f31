"""Drive a host-built engine (``libmedyate.so``) from Python through ctypes."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medyate_mcu.codegen.generate import c_identifier
from medyate_mcu.errors import MedyateError

STATUS = {0: "ok", -1: "label out of range", -2: "non-finite value", -3: "sampler error",
          -4: "engine not initialised"}

DECISION_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_uint32)


class MdyState(ctypes.Structure):
    _fields_ = [(name, ctype) for name, ctype in (
        ("epoch", ctypes.c_uint32), ("samples_in_batch", ctypes.c_uint32),
        ("steps_in_epoch", ctypes.c_uint32), ("n_selected", ctypes.c_uint32),
        ("samples_in_epoch", ctypes.c_uint32), ("correct_in_epoch", ctypes.c_uint32),
        ("loss_sum", ctypes.c_float), ("lr", ctypes.c_float),
        ("last_epoch_samples", ctypes.c_uint32), ("last_epoch_correct", ctypes.c_uint32),
        ("last_epoch_loss", ctypes.c_float), ("reserved", ctypes.c_uint32 * 5))]


class EngineLibrary:
    """The engine's C API and its RAM buffers, as numpy views (no copies)."""

    def __init__(self, path: Path, input_size: int, classes: int) -> None:
        self.lib = ctypes.CDLL(str(path.resolve()))
        self.input_size, self.classes = input_size, classes
        float_p = ctypes.POINTER(ctypes.c_float)
        self.lib.mdy_init.restype = ctypes.c_int
        self.lib.mdy_train_sample.argtypes = [float_p, ctypes.c_int32, float_p]
        self.lib.mdy_train_sample.restype = ctypes.c_int
        self.lib.mdy_end_epoch.restype = ctypes.c_int
        self.lib.mdy_predict.argtypes = [float_p, ctypes.POINTER(ctypes.c_uint16)]
        self.lib.mdy_predict.restype = ctypes.c_int
        self.state = MdyState.in_dll(self.lib, "mdy_state")

    def on_decisions(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(node index)`` after each forward ReLU/ReLU6/max-pool whose mask or argmax
        the backward pass reads (the library's debug export, ``MDY_DECISION_EXPORT``)."""
        self._hook = DECISION_HOOK(hook)  # kept alive while the library may call it
        ctypes.c_void_p.in_dll(self.lib, "medyate_decision_hook").value = \
            ctypes.cast(self._hook, ctypes.c_void_p).value

    def array(self, symbol: str, dtype: type, length: int) -> np.ndarray:
        ctype = np.ctypeslib.as_ctypes_type(np.dtype(dtype))
        return np.ctypeslib.as_array((ctype * length).in_dll(self.lib, symbol))

    @staticmethod
    def _check(status: int, what: str) -> int:
        if status not in (0, -1, -2):
            raise MedyateError(f"{what} failed: {STATUS.get(status, status)}")
        return status

    def init(self) -> None:
        self._check(self.lib.mdy_init(), "mdy_init")

    def train_sample(self, x: np.ndarray, label: int) -> tuple[int, float]:
        sample = np.ascontiguousarray(x, np.float32).reshape(-1)
        loss = ctypes.c_float(0.0)
        status = self.lib.mdy_train_sample(
            sample.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), int(label),
            ctypes.byref(loss))
        return self._check(status, "mdy_train_sample"), loss.value

    def end_epoch(self) -> None:
        self._check(self.lib.mdy_end_epoch(), "mdy_end_epoch")

    def predict(self, x: np.ndarray) -> tuple[int, int]:
        sample = np.ascontiguousarray(x, np.float32).reshape(-1)
        label = ctypes.c_uint16(0)
        status = self.lib.mdy_predict(sample.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                      ctypes.byref(label))
        return self._check(status, "mdy_predict"), label.value

    def selected(self) -> list[int]:
        count = self.state.n_selected
        return self.array("mdy_selected", np.uint16, max(count, 1))[:count].astype(int).tolist()

    def candidate_weights(self, layer: str, size: int) -> np.ndarray:
        return self.array(f"mdy_w_{c_identifier(layer)}", np.float32, size)
