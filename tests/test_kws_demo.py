"""The keyword-spotting demo of the README, small: a tiny held-out-voice set synthesized by
espeak-ng (`zoo kws --voice new --small`), the bundled ds-cnn-kws compiled for the nRF52840's
stand-in with compact int8 samples and its own pre-trained classifier, the host engine's table
with the accuracy before training, `verify` and `verify --qemu`. The full set and the figures
are in docs/kws.md (`medyate-mcu experiment ds-cnn-kws`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from arm_support import require_tool
from click.testing import CliRunner

from medyate_mcu.cli.main import main
from medyate_mcu.zoo.speech import KWS_CLASSES


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_the_kws_demo_small(tmp_path: Path) -> None:
    for tool in ("espeak-ng", "arm-none-eabi-gcc", "qemu-system-arm"):
        require_tool(tool)
    data = tmp_path / "new.npz"
    _cli("zoo", "kws", "--voice", "new", "--small", "--out", str(data))
    with np.load(data) as arrays:
        assert arrays["x"].shape[1:] == (1, 49, 10) and arrays["x"].dtype == np.float32
        assert arrays["x"].min() < 0 < arrays["x"].max()  # MFCCs of both signs
        assert [str(n) for n in arrays["class_names"]] == list(KWS_CLASSES)
    build = tmp_path / "kws"
    output = _cli("compile", "ds-cnn-kws", "--data", str(data), "--board", "qemu-mps2-an386",
                  "--budget", "auto", "--sample-format", "int8", "--epochs", "2", "-o",
                  str(build))
    assert "fine-tuning starts from its own classifier" in output
    assert "input: int8 samples" in output
    manifest = json.loads((build / "medyate_build.json").read_text())
    assert manifest["head"] == "pretrained" and manifest["samples"]["format"] == "int8"
    assert manifest["samples"]["std"][0] > 1  # the model's standardisation folded in
    subprocess.run(["make", "-s", "-C", str(build), "host"], check=True, capture_output=True)
    table = subprocess.run([str(build / "medyate_train")], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    before = float(table[1].split()[3])
    assert table[1].split()[0] == "0" and before >= 0.5  # the pre-trained model already works
    assert _cli("verify", str(build)).splitlines()[-1].startswith("all ")
    report = _cli("verify", "--qemu", str(build), "--samples", "8", "--epochs", "1")
    assert report.splitlines()[-1].startswith("all ")
