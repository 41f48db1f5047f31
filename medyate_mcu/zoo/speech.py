"""Keyword spotting data synthesized offline with espeak-ng, as MFCC features.

Twelve classes, as in the classic keyword-spotting benchmarks: "silence" (background noise
only), "unknown" (one of :data:`UNKNOWN_WORDS`) and ten keywords. Every sample is one word spoken
by ``espeak-ng`` with a voice drawn from the set's voices (an accent plus a voice variant), at a
random pitch and speed, resampled from espeak's 22,050 Hz to 16 kHz, trimmed of leading and
trailing silence, placed at a random time in a 1 s clip at a random level, and mixed with
procedural white, pink or brown noise at a random SNR of 5–30 dB. Features: the 49×10 MFCCs of
:mod:`medyate_mcu.zoo.mfcc`, float32 ``(N, 1, 49, 10)``, of any sign, taken by the model as they
are (no input normalisation).

"kws" speaks with the pre-training (source) voices; "kws-newvoice" with one held-out voice whose
accent and variant are used by no source voice: the target of on-device fine-tuning. Each sample
is drawn from its own seeded stream (seed, set, split, class, index), so the bytes do not depend on
the order or the parallelism of the build; built sets are cached as ``.npz``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import wave
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from medyate_mcu.errors import MedyateError
from medyate_mcu.outputs import write_npz_atomic
from medyate_mcu.zoo.datasets import Dataset, Split, cache_dir
from medyate_mcu.zoo.mfcc import MFCC, mfcc
from medyate_mcu.zoo.progress import make_progress

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KWS_CLASSES: tuple[str, ...] = ("silence", "unknown", *KEYWORDS)
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "zero", "one",
                 "two", "three", "four", "five", "six", "seven", "eight", "nine", "learn",
                 "follow", "forward", "backward", "visual", "sheila", "marvin")

SAMPLE_RATE = 16000  # Hz, the clips' rate
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
ESPEAK_RATE = 22050  # Hz, what espeak-ng writes
VERSION = 1  # bump when the synthesis or the features change, so stale caches are not reused
SMALL_PER_CLASS = 4  # samples per class and split of a small (CI) build
PROGRESS_FROM = 500  # samples: a smaller build shows no progress bar
THREADS = 2  # concurrent syntheses (each runs espeak-ng in its own process)
PITCH = (25, 75)  # espeak-ng -p range (0-99, default 50)
SPEED = (130, 210)  # espeak-ng -s range, words per minute (default 175)
SNR_DB = (5.0, 30.0)
LEVEL_DB = (-24.0, -3.0)  # speech peak, dB full scale
SILENCE_DB = (-60.0, -25.0)  # RMS of the noise of a "silence" sample, dB full scale
TRIM_DB = -40.0  # leading/trailing samples this far below the peak are trimmed


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: an accent (a language voice) and a voice variant."""

    accent: str
    variant: str

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"


_SOURCE_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                   "en-us-nyc")
_SOURCE_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "klatt", "klatt2")
SOURCE_VOICES = tuple(Voice(a, v) for a in _SOURCE_ACCENTS for v in _SOURCE_VARIANTS)
TARGET_VOICE = Voice("en-029", "f4")  # Caribbean accent, a variant no source voice uses


@dataclass(frozen=True)
class SpeechSpec:
    """How a keyword set is made."""

    voices: tuple[Voice, ...]
    train_per_class: int
    test_per_class: int
    description: str


SPEECH_SPECS: dict[str, SpeechSpec] = {
    "kws": SpeechSpec(SOURCE_VOICES, 400, 100,
                      f"keyword spotting (12 classes, MFCC 1×49×10) by {len(SOURCE_VOICES)} "
                      "espeak-ng pre-training voices"),
    "kws-newvoice": SpeechSpec((TARGET_VOICE,), 40, 50,
                               f"keyword spotting by a held-out espeak-ng voice "
                               f"({TARGET_VOICE.name}) never used in pre-training"),
}
SPEECH_SETS: dict[str, str] = {name: spec.description for name, spec in SPEECH_SPECS.items()}
FEATURES = ("NCHW float32 1×49×10 MFCCs of 1 s at 16 kHz (zoo/mfcc.py: 40 ms periodic Hann "
            "frames every 20 ms, |rfft|² into 40 HTK-mel bands 20-4000 Hz, natural log floored "
            "at 1e-6, orthonormal DCT-II, first 10)")
FEATURE_LAYOUT = f"{FEATURES}, taken as they are: no input normalisation"


# ---------------------------------------------------------------- synthesis

def espeak_path() -> str:
    """The espeak-ng executable, or a one-line error saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise MedyateError("espeak-ng is not installed, the keyword sets are synthesized with it; "
                           "install it: apt-get install espeak-ng (or make install)")
    return path


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """espeak-ng's version (part of the cache key: another version speaks differently)."""
    out = subprocess.run([espeak_path(), "--version"], capture_output=True, text=True, check=False)
    words = out.stdout.split()
    return words[words.index("text-to-speech:") + 1] if "text-to-speech:" in words else "unknown"


def synthesize(word: str, voice: Voice, pitch: int, speed: int) -> np.ndarray:
    """``word`` spoken by espeak-ng: float64 samples in [-1, 1] at :data:`ESPEAK_RATE`."""
    command = [espeak_path(), "-v", voice.name, "-p", str(pitch), "-s", str(speed), "--stdout",
               word]
    done = subprocess.run(command, capture_output=True, check=False, timeout=60)
    if done.returncode != 0 or not done.stdout:
        raise MedyateError(f"espeak-ng failed on {word!r} with voice {voice.name}: "
                           f"{done.stderr.decode(errors='replace').strip()[:200]}")
    with wave.open(io.BytesIO(done.stdout)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise MedyateError(f"espeak-ng wrote {wav.getnchannels()}-channel "
                               f"{8 * wav.getsampwidth()}-bit audio; expected mono 16-bit")
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())  # espeak streams: nframes is a large placeholder
    if rate != ESPEAK_RATE:
        raise MedyateError(f"espeak-ng wrote {rate} Hz audio; expected {ESPEAK_RATE} Hz")
    return np.frombuffer(pcm[:len(pcm) // 2 * 2], "<i2").astype(np.float64) / 32768.0


def resample(signal: np.ndarray, rate_in: int = ESPEAK_RATE,
             rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by the FFT: the signal, zero-padded to a whole number of
    ``rate_in / gcd`` blocks, keeps the spectrum below the new Nyquist frequency (an ideal
    low-pass) and is transformed back at the new length. Circular, so meant for signals that
    start and end near zero, as espeak-ng's utterances do."""
    step = np.gcd(rate_in, rate_out)
    block_in, block_out = rate_in // step, rate_out // step
    length = -(-len(signal) // block_in) * block_in
    out_length = length // block_in * block_out
    spectrum = np.fft.rfft(signal, length)[:out_length // 2 + 1]
    return np.fft.irfft(spectrum, out_length) * (out_length / length)


def trim(signal: np.ndarray, db: float = TRIM_DB) -> np.ndarray:
    """``signal`` without its leading and trailing samples more than ``-db`` dB below the peak."""
    loud = np.flatnonzero(np.abs(signal) >= np.abs(signal).max() * 10 ** (db / 20))
    return signal[loud[0]:loud[-1] + 1] if len(loud) else signal


def coloured_noise(rng: np.random.Generator, samples: int, colour: str) -> np.ndarray:
    """Unit-RMS noise: ``white`` (flat), ``pink`` (power ∝ 1/f) or ``brown`` (∝ 1/f²), shaped
    in the frequency domain from white Gaussian noise."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # no infinite DC gain
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    noise = np.fft.irfft(spectrum / f ** exponent, samples)
    noise -= noise.mean()
    return noise / np.sqrt(np.mean(noise ** 2))


NOISE_COLOURS = ("white", "pink", "brown")


def make_clip(label: int, voices: tuple[Voice, ...], rng: np.random.Generator) -> np.ndarray:
    """One 1 s clip of class ``KWS_CLASSES[label]`` at 16 kHz, every choice drawn from ``rng``."""
    colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
    noise = coloured_noise(rng, CLIP_SAMPLES, colour)
    if KWS_CLASSES[label] == "silence":
        return noise * 10 ** (rng.uniform(*SILENCE_DB) / 20)
    word = (UNKNOWN_WORDS[int(rng.integers(len(UNKNOWN_WORDS)))]
            if KWS_CLASSES[label] == "unknown" else KWS_CLASSES[label])
    voice = voices[int(rng.integers(len(voices)))]
    pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
    speed = int(rng.integers(SPEED[0], SPEED[1] + 1))
    speech = trim(resample(synthesize(word, voice, pitch, speed)))[:CLIP_SAMPLES]
    speech = speech / np.abs(speech).max() * 10 ** (rng.uniform(*LEVEL_DB) / 20)
    clip = np.zeros(CLIP_SAMPLES)
    start = int(rng.integers(CLIP_SAMPLES - len(speech) + 1))
    clip[start:start + len(speech)] = speech
    speech_rms = np.sqrt(np.mean(speech ** 2))
    return clip + noise * speech_rms * 10 ** (-rng.uniform(*SNR_DB) / 20)


# ---------------------------------------------------------------- the sets

def _spec(name: str) -> SpeechSpec:
    if name not in SPEECH_SPECS:
        raise MedyateError(f"unknown keyword set {name!r}; choose one of "
                           f"{', '.join(SPEECH_SPECS)}")
    return SPEECH_SPECS[name]


def _features(job: tuple[int, tuple[Voice, ...], list[int]]) -> np.ndarray:
    label, voices, key = job
    return mfcc(make_clip(label, voices, np.random.default_rng(key)), MFCC)


def _synthesize_split(name: str, seed: int, stream: int, per_class: int,
                      pool: ThreadPoolExecutor, advance: Callable[[], None]) -> Dataset:
    spec = _spec(name)
    set_id = list(SPEECH_SPECS).index(name)
    jobs = [(label, spec.voices, [seed, set_id, stream, label, i])
            for label in range(len(KWS_CLASSES)) for i in range(per_class)]
    features = []
    for feature in pool.map(_features, jobs):
        features.append(feature)
        advance()
    x = np.stack(features)[:, None].astype(np.float32)
    y = np.repeat(np.arange(len(KWS_CLASSES), dtype=np.int64), per_class)
    return Dataset(x, y, KWS_CLASSES)


def cache_path(name: str, seed: int, train_per_class: int, test_per_class: int) -> Path:
    """Where the set built with these arguments is cached."""
    return cache_dir() / (f"{name}-v{VERSION}-espeak{espeak_version()}-seed{seed}"
                          f"-train{train_per_class}-test{test_per_class}.npz")


def _load_cached(path: Path) -> tuple[Dataset, Dataset] | None:
    try:
        with np.load(path) as data:
            return (Dataset(data["x_train"], data["y_train"], KWS_CLASSES),
                    Dataset(data["x_test"], data["y_test"], KWS_CLASSES))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # missing or damaged: rebuilt


def _with_progress(name: str, seed: int, train_pc: int, test_pc: int,
                   pool: ThreadPoolExecutor) -> tuple[Dataset, Dataset]:
    started = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task(f"synthesizing {name}", total=(train_pc + test_pc)
                                 * len(KWS_CLASSES), status="")
        train, test = (_synthesize_split(name, seed, stream, count, pool,
                                         lambda: progress.advance(task))
                       for stream, count in ((0, train_pc), (1, test_pc)))
        progress.update(task, status=f"{time.perf_counter() - started:.0f} s")
    return train, test


def build_speech(name: str, seed: int = 0, train_per_class: int | None = None,
                 small: bool = False) -> Split:
    """Build (or load from the cache) keyword set ``name`` (see :data:`SPEECH_SETS`).

    ``small``: :data:`SMALL_PER_CLASS` test samples per class, and as many training samples
    unless ``train_per_class`` says otherwise (a fast build for CI). Same arguments, same bytes.
    """
    spec = _spec(name)
    default_train = SMALL_PER_CLASS if small else spec.train_per_class
    train_pc = default_train if train_per_class is None else train_per_class
    test_pc = SMALL_PER_CLASS if small else spec.test_per_class
    if train_pc < 1:
        raise MedyateError(f"{name}: samples per class must be at least 1 (got {train_pc})")
    espeak_path()
    path = cache_path(name, seed, train_pc, test_pc)
    cached = _load_cached(path) if path.is_file() else None
    if cached is not None:
        return Split(name, *cached)
    with ThreadPoolExecutor(THREADS) as pool:
        if (train_pc + test_pc) * len(KWS_CLASSES) < PROGRESS_FROM:
            train, test = (_synthesize_split(name, seed, stream, count, pool, lambda: None)
                           for stream, count in ((0, train_pc), (1, test_pc)))
        else:
            train, test = _with_progress(name, seed, train_pc, test_pc, pool)
    write_npz_atomic(path, x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y)
    return Split(name, train, test)
