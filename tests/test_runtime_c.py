"""The runtime (firmware/runtime/engine.c) on a tiny model the test writes by hand, no generated
project: one 1x1 conv over 4 input channels (the candidate) -> global average pool -> a
classifier of 2 classes. Two such models live in one library (the runtime takes the model it
works on; no global). Oracles: PyTorch autograd for the SGD steps and the norm vector, the Python
sampler (medyate_mcu.method.sampler) for each epoch's selection."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from c_build import ROOT, build_library

from medyate_mcu.codegen.c_interface import ctypes_struct, status_codes
from medyate_mcu.method.sampler import select_channels

IN_C, HW, OUT_C, CLASSES = 4, 4, 3, 2
CHANNEL_BYTES = (OUT_C + HW) * 4       # C_W = OUT_C (1x1 kernel), C_A = 2x2, float32
POOL_BYTES = 2 * CHANNEL_BYTES + 12    # room for two channels, not three
BATCH, LEARNING_RATES, SEEDS = 2, (0.5, 0.25), {"tiny_a": 7, "tiny_b": 11}
STATUS = status_codes()
MdyModel = ctypes_struct("runtime/engine.h", "mdy_model_t")
MdyState = ctypes_struct("runtime/engine.h", "mdy_state_t")

MODEL_C = r"""
#include <stddef.h>

#include "conv.h"
#include "engine.h"
#include "linear.h"
#include "pool.h"

#define IN_C %(in_c)du
#define HW %(hw)du
#define OUT_C %(out_c)du
#define CLASSES %(classes)du
#define CLASSIFIER (OUT_C * CLASSES + CLASSES)
#define POOL_BYTES %(pool_bytes)du

static const mdy_conv_shape_t shape = {
    .in_c = IN_C, .in_h = 2, .in_w = 2, .out_c = OUT_C, .out_h = 2, .out_w = 2,
    .k_h = 1, .k_w = 1, .stride_h = 1, .stride_w = 1, .pad_top = 0, .pad_left = 0, .groups = 1};
static const uint32_t costs[IN_C] = {%(cost)du, %(cost)du, %(cost)du, %(cost)du};
static const float learning_rates[2] = {%(lr0)sf, %(lr1)sf};

/* The pre-trained values: written by the test before mdy_init. */
float tiny_w0[OUT_C * IN_C], tiny_bias[OUT_C], tiny_classifier0[CLASSIFIER];

/* One step's activations and errors, shared by the models (one call at a time). */
static float conv_out[OUT_C * HW], features[OUT_C], dfeatures[OUT_C], dconv[OUT_C * HW];
static float logits[CLASSES], dlogits[CLASSES];

static void forward(const mdy_model_t *m, const float *x)
{
    mdy_save_selected_inputs(m, 0, x);
    mdy_conv2d_forward(&shape, x, m->candidates[0].weights, tiny_bias, conv_out);
    mdy_global_avgpool_forward(OUT_C, HW, conv_out, features);
    mdy_linear_forward(OUT_C, CLASSES, features, m->classifier, m->classifier + OUT_C * CLASSES,
                       m->logits);
}

static void backward(const mdy_model_t *m)
{
    mdy_linear_backward_weight(OUT_C, CLASSES, m->dlogits, features, m->classifier_grad,
                               m->classifier_grad + OUT_C * CLASSES);
    mdy_linear_backward_input(OUT_C, CLASSES, m->dlogits, m->classifier, dfeatures, 0);
    mdy_global_avgpool_backward(OUT_C, HW, dfeatures, dconv, 0);
    mdy_accumulate_selected_gradients(m, 0, dconv);
}

/* A model's own RAM and descriptor. */
#define TINY_MODEL(name, seed_)                                                             \
    float name##_w[OUT_C * IN_C], name##_classifier[CLASSIFIER];                            \
    float name##_classifier_grad[CLASSIFIER], name##_pool[POOL_BYTES / 4u];                 \
    float name##_norms[IN_C], name##_norm_sums[IN_C];                                       \
    uint32_t name##_sampler_weights[IN_C], name##_pool_offsets[IN_C];                       \
    uint8_t name##_in_pool[IN_C];                                                           \
    uint16_t name##_selected[IN_C];                                                         \
    mdy_state_t name##_state;                                                               \
    static const mdy_candidate_t name##_candidates[1] = {                                   \
        {.shape = &shape, .weights = name##_w, .initial_weights = tiny_w0,                  \
         .initial_q8 = NULL, .initial_scales = NULL,                                         \
         .first_channel = 0u, .weight_units = OUT_C, .activation_units = HW}};              \
    const mdy_model_t name = {                                                              \
        .forward = forward, .backward = backward, .input_size = IN_C * HW,                  \
        .classes = CLASSES, .logits = logits, .dlogits = dlogits, .n_candidates = 1u,       \
        .candidates = name##_candidates, .n_channels = IN_C, .channel_costs = costs,        \
        .pool = name##_pool, .pool_bytes = POOL_BYTES, .norms = name##_norms,               \
        .norm_sums = name##_norm_sums, .sampler_weights = name##_sampler_weights,           \
        .in_pool = name##_in_pool, .selected = name##_selected,                             \
        .pool_offsets = name##_pool_offsets, .classifier = name##_classifier,               \
        .classifier_initial = tiny_classifier0, .classifier_grad = name##_classifier_grad,  \
        .classifier_size = CLASSIFIER, .seed = seed_, .epochs = 2u, .batch_size = %(batch)du, \
        .learning_rates = learning_rates, .state = &name##_state}

TINY_MODEL(tiny_a, %(seed_a)du);
TINY_MODEL(tiny_b, %(seed_b)du);
"""


class Tiny:
    """One hand-built model of the library, driven and read through ctypes."""

    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.lib, self.name = lib, name
        self.model = MdyModel.in_dll(lib, name)
        self.state = ctypes.cast(self.model.state, ctypes.POINTER(MdyState)).contents

    def call(self, function: str, *args: object) -> int:
        return getattr(self.lib, function)(ctypes.byref(self.model), *args)

    def train(self, x: np.ndarray, label: int) -> int:
        sample = np.ascontiguousarray(x, np.float32).reshape(-1)
        return self.call("mdy_train_sample", sample.ctypes.data_as(ctypes.c_void_p),
                         ctypes.c_int32(label), None)

    def floats(self, field: str, n: int) -> np.ndarray:
        return np.ctypeslib.as_array(getattr(self.model, field), shape=(n,)).copy()

    def weights(self) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_float * (OUT_C * IN_C)).in_dll(
            self.lib, f"{self.name}_w")).reshape(OUT_C, IN_C).copy()

    def classifier(self) -> np.ndarray:
        return self.floats("classifier", OUT_C * CLASSES + CLASSES)

    def selected(self) -> list[int]:
        n = self.state.n_selected
        return np.ctypeslib.as_array(self.model.selected, shape=(IN_C,))[:n].tolist()

    def ram(self) -> bytes:
        symbols = {"w": OUT_C * IN_C * 4, "classifier": 32, "pool": POOL_BYTES // 4 * 4,
                   "norms": 16, "selected": 8, "state": ctypes.sizeof(MdyState)}
        return b"".join(ctypes.string_at(ctypes.addressof(
            ctypes.c_char.in_dll(self.lib, f"{self.name}_{s}")), n) for s, n in symbols.items())


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    folder = tmp_path_factory.mktemp("tiny")
    source = folder / "tiny_model.c"
    source.write_text(MODEL_C % {
        "in_c": IN_C, "hw": HW, "out_c": OUT_C, "classes": CLASSES, "pool_bytes": POOL_BYTES,
        "cost": CHANNEL_BYTES, "lr0": LEARNING_RATES[0], "lr1": LEARNING_RATES[1],
        "batch": BATCH, "seed_a": SEEDS["tiny_a"], "seed_b": SEEDS["tiny_b"]})
    firmware = ROOT / "firmware"
    sources: list[Path] = [source, *sorted((firmware / "kernels").glob("*.c")),
                           *(firmware / "runtime" / f for f in ("engine.c", "sampler.c",
                                                                 "pcg32.c"))]
    library = build_library(sources, folder, "libtiny", extra_flags=(
        "-O2", f"-I{firmware / 'kernels'}", f"-I{firmware / 'runtime'}"))
    for function in ("mdy_init", "mdy_train_sample", "mdy_end_epoch"):
        getattr(library, function).restype = ctypes.c_int
    return library


@pytest.fixture(scope="module")
def pretrained(lib: ctypes.CDLL) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    values = {"tiny_w0": rng.normal(0, 0.8, OUT_C * IN_C), "tiny_bias": rng.normal(0, 0.1, OUT_C),
              "tiny_classifier0": rng.normal(0, 0.8, OUT_C * CLASSES + CLASSES)}
    for name, array in values.items():
        target = (ctypes.c_float * array.size).in_dll(lib, name)
        np.ctypeslib.as_array(target)[:] = array.astype(np.float32)
    return {name: array.astype(np.float32) for name, array in values.items()}


def reference_epoch(w: np.ndarray, bias: np.ndarray, classifier: np.ndarray, xs: np.ndarray,
                    labels: list[int], selected: list[int], lr: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One epoch of docs/design.md §5-6 by autograd: batch SGD on the selected input channels of
    the conv and on the classifier. Returns the weights, the classifier, each selected channel's
    mean gradient-slice norm over the steps (0 elsewhere) and the mean loss."""
    w, classifier = w.copy(), classifier.copy()
    norm_sums, losses, steps = np.zeros(IN_C, np.float32), [], 0
    for start in range(0, len(labels), BATCH):
        tw = torch.tensor(w, requires_grad=True)
        tc = torch.tensor(classifier, requires_grad=True)
        batch = torch.tensor(xs[start:start + BATCH]).reshape(-1, IN_C, 2, 2)
        conv = F.conv2d(batch, tw.reshape(OUT_C, IN_C, 1, 1), torch.tensor(bias))
        logits = F.linear(conv.mean(dim=(2, 3)), tc[:OUT_C * CLASSES].reshape(CLASSES, OUT_C),
                          tc[OUT_C * CLASSES:])
        target = torch.tensor(labels[start:start + BATCH])
        losses += F.cross_entropy(logits, target, reduction="none").tolist()
        F.cross_entropy(logits, target).backward()
        grad_w = tw.grad.numpy()
        for c in selected:
            norm_sums[c] += np.linalg.norm(grad_w[:, c])
            w[:, c] -= np.float32(lr) * grad_w[:, c]
        classifier -= np.float32(lr) * tc.grad.numpy()
        steps += 1
    return w, classifier, norm_sums / steps, float(np.mean(losses))


def test_two_models_train_independently_and_match_autograd_and_the_sampler(
        lib: ctypes.CDLL, pretrained: dict[str, np.ndarray]) -> None:
    a, b = Tiny(lib, "tiny_a"), Tiny(lib, "tiny_b")
    rng = np.random.default_rng(5)
    xs = rng.normal(0, 1, (4, IN_C * HW)).astype(np.float32)
    labels = [0, 1, 1, 0]

    # b is not initialised yet: the runtime refuses it, and a is not involved.
    assert b.train(xs[0], 0) == STATUS["MDY_ERR_STATE"]
    assert a.call("mdy_init") == STATUS["MDY_OK"] and b.call("mdy_init") == STATUS["MDY_OK"]
    b_after_init = b.ram()
    costs = [CHANNEL_BYTES] * IN_C
    for tiny in (a, b):  # epoch 1: uniform weights; the C keeps canonical order
        assert tiny.selected() == sorted(select_channels(SEEDS[tiny.name], 1, costs, POOL_BYTES))
        assert len(tiny.selected()) == 2

    w0 = pretrained["tiny_w0"].reshape(OUT_C, IN_C)
    w, classifier = w0, pretrained["tiny_classifier0"]
    for epoch, lr in enumerate(LEARNING_RATES, start=1):
        selected, before = a.selected(), a.weights()
        for x, label in zip(xs, labels, strict=True):
            assert a.train(x, label) == STATUS["MDY_OK"]
        assert a.call("mdy_end_epoch") == STATUS["MDY_OK"]
        w, classifier, norms, loss = reference_epoch(w, pretrained["tiny_bias"], classifier,
                                                     xs, labels, selected, lr)
        np.testing.assert_allclose(a.weights(), w, rtol=1e-5, atol=1e-6)
        unselected = [c for c in range(IN_C) if c not in selected]
        assert np.array_equal(a.weights()[:, unselected], before[:, unselected])
        np.testing.assert_allclose(a.classifier(), classifier, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.state.last_epoch_loss, loss, rtol=1e-5)
        c_norms = a.floats("norms", IN_C)
        np.testing.assert_allclose(c_norms[selected], norms[selected], rtol=1e-5)
        if epoch == 1:  # optimistic exploration: the unseen channels get the largest norm
            assert np.all(c_norms[unselected] == c_norms[selected].max())
        # the next selection, from the C's own norm vector, as the Python sampler draws it
        assert a.selected() == sorted(select_channels(SEEDS["tiny_a"], epoch + 1, costs,
                                                      POOL_BYTES, c_norms))
        w, classifier = a.weights(), a.classifier()  # state shared before the next epoch
    assert b.ram() == b_after_init, "training tiny_a changed tiny_b's RAM"
