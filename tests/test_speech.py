"""The keyword-spotting set: the MFCC front-end against independent oracles (torch.stft,
scipy's DCT, the filterbank's defining properties), the synthesis (resampling, noise), and the
built sets' determinism, balance, shapes and cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from scipy.fft import dct

from medyate_mcu.cli.main import main
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import OpType, ReferenceNet, load_onnx
from medyate_mcu.graph.summary import macs
from medyate_mcu.method.lara import LayerRanking
from medyate_mcu.zoo import bundled_model_path, evaluation, mfcc, speech, training
from medyate_mcu.zoo.samples import SampleEncoding, SampleFormat

# Float64 FFTs of 640 points agree to ~1e-15 of the spectrum's peak; 1e-9 leaves room for the
# summation order and is far below what one sample of misalignment changes (~1e-1).
SPECTRUM_RTOL = 1e-9


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def require_espeak() -> None:
    """Skip without espeak-ng; in CI (``CI=true``) its absence is a failure."""
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is required in CI to synthesize the keyword sets")
        pytest.skip("espeak-ng is not installed")


def _torch_power(signal: np.ndarray, hop: int = 320) -> np.ndarray:
    spectrum = torch.stft(torch.from_numpy(signal), n_fft=640, hop_length=hop, win_length=640,
                          window=torch.hann_window(640, periodic=True, dtype=torch.float64),
                          center=False, return_complex=True)
    return (spectrum.abs() ** 2).numpy().T


def _spectrum_error(ours: np.ndarray, oracle: np.ndarray) -> float:
    frames = min(len(ours), len(oracle))
    return float(np.abs(ours[:frames] - oracle[:frames]).max() / np.abs(oracle).max())


def test_power_spectrum_matches_torch_stft_and_a_wrong_hop_is_caught() -> None:
    signal = np.random.default_rng(0).standard_normal(16000)
    oracle = _torch_power(signal)
    ours = mfcc.power_spectrum(signal)
    assert ours.shape == oracle.shape == (49, 321)
    assert _spectrum_error(ours, oracle) < SPECTRUM_RTOL
    wrong = mfcc.power_spectrum(signal, mfcc.MfccConfig(hop=321))
    assert _spectrum_error(wrong, oracle) > 1e3 * SPECTRUM_RTOL


def test_dct_matches_scipy_orthonormal_dct() -> None:
    bands = np.random.default_rng(1).standard_normal((5, 40))
    oracle = dct(bands, type=2, norm="ortho", axis=1)[:, :10]
    ours = bands @ mfcc.dct_matrix(40, 10).T
    assert np.abs(ours - oracle).max() < 1e-12  # float64, 40 terms: a few ulps
    unscaled = np.sqrt(2.0 / 40) * np.cos(np.pi * np.arange(10)[:, None]
                                          * (2 * np.arange(40)[None, :] + 1) / 80)
    assert np.abs(bands @ unscaled.T - oracle).max() > 1e-2  # the first row's 1/√2 matters


def test_mel_filterbank_properties() -> None:
    fbank = mfcc.mel_filterbank()
    bins = np.arange(321) * 16000 / 640
    points = mfcc.mel_centres()
    # HTK mel scale: 1000 Hz is (very nearly) 1000 mel; the points are evenly spaced in mel.
    assert abs(float(mfcc.hz_to_mel(1000.0)) - 1000.0) < 0.1
    assert np.allclose(np.diff(mfcc.hz_to_mel(points)), np.diff(mfcc.hz_to_mel(points))[0])
    assert points[0] == pytest.approx(20.0) and points[-1] == pytest.approx(4000.0)
    assert fbank.shape == (40, 321) and (fbank >= 0).all() and fbank.max() <= 1.0
    # Each band covers at least one bin and peaks at a bin next to its centre.
    assert (fbank.sum(axis=1) > 0).all()
    assert (np.abs(bins[fbank.argmax(axis=1)] - points[1:-1]) <= 25.0).all()
    # Triangles meeting at the neighbouring centres sum to 1 between the first and last centre,
    # and nothing passes outside [low, high].
    inside = (bins >= points[1]) & (bins <= points[-2])
    assert np.abs(fbank[:, inside].sum(axis=0) - 1.0).max() < 1e-12
    assert not fbank[:, (bins <= points[0]) | (bins >= points[-1])].any()
    linear = mfcc.MfccConfig(low_hz=float(mfcc.hz_to_mel(20.0)),
                             high_hz=float(mfcc.hz_to_mel(4000.0)))  # a wrong scale is caught
    assert np.abs(mfcc.mel_filterbank(linear).argmax(axis=1) - fbank.argmax(axis=1)).max() > 2


def test_mfcc_is_the_composition_of_the_oracles() -> None:
    signal = np.random.default_rng(2).standard_normal(16000) * 0.1
    bands = _torch_power(signal) @ mfcc.mel_filterbank().T
    oracle = dct(np.log(np.maximum(bands, 1e-6)), type=2, norm="ortho", axis=1)[:, :10]
    ours = mfcc.mfcc(signal)
    assert ours.shape == (49, 10) and ours.dtype == np.float32
    # float32 rounding of values up to ~|60|: 60 · 2^-24 ≈ 4e-6; 1e-4 is still far below the
    # error of a floor ten times larger (log 10 on the quietest bands, here none) or a wrong hop.
    assert np.abs(ours - oracle).max() < 1e-4
    shifted = mfcc.mfcc(signal, mfcc.MfccConfig(hop=321))[:48]
    assert np.abs(shifted - oracle[:48]).max() > 1e-2


def _tone(rate: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * 1000.0 * t) * np.exp(-(((t - seconds / 2) / 0.05) ** 2))


def test_resampling_to_16k_matches_the_analytic_signal() -> None:
    ours = speech.resample(_tone(22050))
    truth = _tone(16000)
    # A Gaussian-enveloped 1 kHz tone is band-limited far below 8 kHz and ~0 at the edges, so
    # the ideal low-pass resampler reproduces it to the envelope's tails (~e^-25 ≈ 1e-11).
    assert len(ours) == len(truth)
    assert np.abs(ours - truth).max() < 1e-6
    wrong = speech.resample(_tone(22050), rate_in=22000)
    assert len(wrong) != len(truth) or np.abs(wrong - truth).max() > 1e-2


@pytest.mark.parametrize(("colour", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colours_have_their_spectral_slope(colour: str, slope: float) -> None:
    rng = np.random.default_rng(3)
    noise = np.stack([speech.coloured_noise(rng, 16000, colour) for _ in range(8)])
    assert np.sqrt(np.mean(noise ** 2, axis=1)) == pytest.approx(np.ones(8))
    power = (np.abs(np.fft.rfft(noise, axis=1)) ** 2).mean(axis=0)
    f = np.arange(len(power))
    band = (f >= 10) & (f <= 7000)
    fitted = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.1)  # 8 averaged spectra of 7k bins: ±0.02


def test_the_target_voice_is_held_out() -> None:
    accents = {v.accent for v in speech.SOURCE_VOICES}
    variants = {v.variant for v in speech.SOURCE_VOICES}
    assert speech.TARGET_VOICE.accent not in accents
    assert speech.TARGET_VOICE.variant not in variants
    assert speech.SPEECH_SPECS["kws-newvoice"].voices == (speech.TARGET_VOICE,)
    assert set(speech.SPEECH_SETS) == {"kws", "kws-newvoice"}
    assert len(speech.KWS_CLASSES) == 12


def test_missing_espeak_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda _name: None)
    with pytest.raises(MedyateError, match="apt-get install espeak-ng"):
        speech.build_speech("kws", small=True)


def test_unknown_set_is_refused() -> None:
    with pytest.raises(MedyateError, match="kws-newvoice"):
        speech.build_speech("kws-old")


def _window_energy_db(clip: np.ndarray, width: int = 4800) -> np.ndarray:
    energy = np.convolve(clip ** 2, np.ones(width), "valid")[::160] / width
    return 10 * np.log10(energy)


def test_a_clip_is_a_trimmed_word_in_noise_or_noise_alone() -> None:
    require_espeak()
    word = speech.trim(speech.resample(speech.synthesize("yes", speech.TARGET_VOICE, 50, 175)))
    assert 0.15 * 16000 < len(word) < 16000  # a short word: a few hundred milliseconds
    voices = (speech.TARGET_VOICE,)
    clip = speech.make_clip(speech.KWS_CLASSES.index("yes"), voices, np.random.default_rng(4))
    again = speech.make_clip(speech.KWS_CLASSES.index("yes"), voices, np.random.default_rng(4))
    assert clip.shape == (16000,) and np.array_equal(clip, again)
    # At an SNR of 5 dB or more, the 300 ms around the word hold > 5 dB more energy than the
    # quietest 300 ms (noise alone).
    energy = _window_energy_db(clip)
    assert energy.max() - energy.min() > 5.0
    silence = speech.make_clip(0, voices, np.random.default_rng(5))
    level = 10 * np.log10(np.mean(silence ** 2))
    assert speech.SILENCE_DB[0] <= level <= speech.SILENCE_DB[1]


def _check_shaped_and_balanced(split: speech.Split, per_class: int) -> None:
    for part in (split.train, split.test):
        assert part.x.shape == (12 * per_class, 1, 49, 10) and part.x.dtype == np.float32
        assert part.y.dtype == np.int64 and np.array_equal(np.bincount(part.y),
                                                           np.full(12, per_class))
        assert np.isfinite(part.x).all() and part.x.min() < 0 < part.x.max()  # any sign
        assert part.class_names == speech.KWS_CLASSES
    assert split.train.x.tobytes() != split.test.x.tobytes()


def test_small_sets_are_deterministic_balanced_and_shaped(_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    require_espeak()
    first = speech.build_speech("kws", seed=5, small=True)
    assert len(list(_cache.glob("*.npz"))) == 1
    assert speech.build_speech("kws", seed=5, small=True).train.x.tobytes() \
        == first.train.x.tobytes()  # from the cache
    monkeypatch.setenv("MEDYATE_CACHE", str(_cache.parent / "other"))
    again = speech.build_speech("kws", seed=5, small=True)  # rebuilt, not read from the cache
    for a, b in ((first.train, again.train), (first.test, again.test)):
        assert a.x.tobytes() == b.x.tobytes() and a.y.tobytes() == b.y.tobytes()
    _check_shaped_and_balanced(first, speech.SMALL_PER_CLASS)
    other = speech.build_speech("kws", seed=6, train_per_class=1, small=True)
    assert other.train.x.shape == (12, 1, 49, 10)
    assert not np.array_equal(other.test.x, first.test.x)
    target = speech.build_speech("kws-newvoice", seed=5, small=True)
    _check_shaped_and_balanced(target, speech.SMALL_PER_CLASS)
    assert not np.array_equal(target.test.x, first.test.x)


def test_zoo_kws_writes_an_npz_for_data(tmp_path: Path) -> None:
    require_espeak()
    out = tmp_path / "sets" / "kws-new.npz"
    result = CliRunner().invoke(main, ["zoo", "kws", "--out", str(out), "--voice", "new",
                                       "--split", "test", "--small"])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as data:
        assert data["x"].shape == (48, 1, 49, 10) and data["x"].dtype == np.float32
        assert np.array_equal(data["y"], speech.build_speech("kws-newvoice", small=True).test.y)
        assert tuple(data["class_names"]) == speech.KWS_CLASSES
    assert [p.name for p in out.parent.iterdir()] == ["kws-new.npz"]  # no temporary left


# ---------------------------------------------------------------- the DS-CNN

def _ort_logits(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs, one sample at a time (the exported batch is 1)."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


KWS_MODEL = bundled_model_path("ds-cnn-kws")


def test_shipped_kws_model_is_a_small_described_ds_cnn() -> None:
    assert KWS_MODEL is not None and KWS_MODEL.stat().st_size < 2 * 1024 * 1024
    meta = training.read_metadata(onnx.load(str(KWS_MODEL)))
    assert meta["architecture"] == "ds-cnn" and meta["source_task"] == "kws"
    assert json.loads(meta["class_names"]) == list(speech.KWS_CLASSES)
    # standardised features: the training split's statistics, which every data path applies
    assert json.loads(meta["input_mean"]) == [-2.2143]
    assert json.loads(meta["input_std"]) == [11.2721]
    assert "input_mean[c]" in meta["input_layout"]
    assert json.loads(KWS_MODEL.with_suffix(".json").read_text())["metadata"] == meta
    graph = load_onnx(KWS_MODEL)
    assert graph.input_shape == (1, 49, 10) and graph.output_shape[-1] == 12
    stem = graph.nodes_of(OpType.CONV)[0]
    assert stem.conv.window.kernel == (10, 4) and stem.conv.window.stride == (2, 2)
    assert graph.shapes[stem.output] == (64, 25, 5)
    # Hello Edge DS-CNN (small) at 64 channels: 22,604 parameters after BN folding, 2.66 M MACs.
    assert graph.parameter_count() == 22_604
    assert sum(macs(graph, node) for node in graph.nodes) == 2_656_768
    ranking = json.loads(KWS_MODEL.with_suffix(".lara.json").read_text())
    assert ranking["proxy_task"] == "kws"
    assert LayerRanking.load(KWS_MODEL.with_suffix(".lara.json"), graph).ranking


def test_shipped_kws_model_matches_onnxruntime_and_recognises_keywords() -> None:
    require_espeak()
    source = speech.build_speech("kws", small=True).test
    proto = onnx.load(str(KWS_MODEL))
    meta = training.read_metadata(proto)
    x = SampleEncoding(SampleFormat.FLOAT32, 1.0, tuple(json.loads(meta["input_mean"])),
                       tuple(json.loads(meta["input_std"]))).decode(source.x)
    expected = _ort_logits(proto, x)
    with torch.no_grad():
        got = ReferenceNet(load_onnx(KWS_MODEL))(torch.from_numpy(x)).numpy()
    # float32 sums of at most 640 products (pointwise 64, stem 40, depthwise 9 per output):
    # relative rounding ~1e-6 of the largest logit; 1e-4 of it leaves margin.
    tolerance = 1e-4 * np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance
    # 99.7 % on the full source test split: 48 fresh source samples, at most 4 errors (p < 1e-4).
    assert np.mean(expected.argmax(axis=1) == source.y) >= 44 / 48
    bad = onnx.ModelProto()
    bad.CopyFrom(proto)
    weight = next(t for t in bad.graph.initializer if t.name == "classifier.weight")
    array = onnx.numpy_helper.to_array(weight) * np.float32(1.01)  # the head 1 % off: caught
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    assert np.abs(_ort_logits(bad, x) - got).max() > tolerance


def test_pretraining_on_features_records_no_input_normalisation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_espeak()
    monkeypatch.setattr(training, "source_split",
                        lambda config: speech.build_speech(config.task, config.seed, small=True))
    config = training.PretrainConfig(architecture="ds-cnn", resolution=49, task="kws",
                                     epochs=1, batch_size=16, threads=1, train_per_class=4)
    result = training.pretrain(config, tmp_path / "kws.onnx")
    meta = training.read_metadata(onnx.load(str(tmp_path / "kws.onnx")))
    assert "input_mean" not in meta and "input_std" not in meta
    assert meta["input_layout"] == speech.FEATURE_LAYOUT
    assert meta["source_task"] == "kws" and json.loads(meta["class_names"]) == list(
        speech.KWS_CLASSES)
    assert json.loads(meta["source_test_split"])["test_per_class"] == speech.SMALL_PER_CLASS
    assert result.parameters == 22_604
    assert load_onnx(tmp_path / "kws.onnx").input_shape == (1, 49, 10)


@pytest.mark.parametrize(("mean", "std"), [(None, None), (-2.0, 10.0)])
def test_evaluating_on_the_new_voice_keeps_the_head(mean: float | None, std: float | None,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The accuracy before training is onnxruntime's on the features as the model takes them:
    as they are, or standardised by the model's recorded input_mean / input_std."""
    require_espeak()
    small = speech.build_speech
    monkeypatch.setattr(speech, "build_speech", lambda name, seed, **_: small(name, seed,
                                                                             small=True))
    proto = onnx.load(str(KWS_MODEL))
    target = small("kws-newvoice", 0, small=True).test
    x = target.x
    props = {p.key: p.value for p in proto.metadata_props
             if p.key not in ("medyate.input_mean", "medyate.input_std")}  # raw features
    if mean is not None:
        props.update({"medyate.input_mean": f"[{mean}]", "medyate.input_std": f"[{std}]"})
        x = (x - np.float32(mean)) / np.float32(std)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    path = tmp_path / "kws.onnx"
    onnx.save(proto, path)
    config = evaluation.EvalConfig(epochs=1, lr_grid=(0.01,))
    result = evaluation.evaluate_task(path, "kws-newvoice", config)
    logits = _ort_logits(proto, x)
    assert result.pretrained == pytest.approx(np.mean(logits.argmax(axis=1) == target.y))
    assert (result.classes, result.train, result.test) == (12, 48, 48)
    if mean is None:  # The pre-trained head is kept: one epoch at 0.01 on the head alone
        assert result.classifier_only > 0.5  # leaves ~83 % (measured), a fresh one ~1/12.


def test_features_are_taken_as_they_are_or_standardised_as_recorded() -> None:
    require_espeak()
    split = speech.build_speech("kws", small=True)
    x_train, x_test, meta = training.network_inputs(split)
    assert np.array_equal(x_train.numpy(), split.train.x) and "input_mean" not in meta
    x_train, x_test, meta = training.network_inputs(split, standardise=True)
    mean, std = json.loads(meta["input_mean"]), json.loads(meta["input_std"])
    assert len(mean) == len(std) == 1 and "input_mean[c]" in meta["input_layout"]
    # The recorded statistics are rounded to 1e-4 (std ~10): the standardised training split's
    # mean and standard deviation are 0 and 1 to about 1e-5.
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 1e-3
    recorded = (split.test.x - np.float32(mean[0])) / np.float32(std[0])
    assert np.array_equal(x_test.numpy(), recorded)
