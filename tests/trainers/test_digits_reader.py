"""trainers.data.digits reads scikit-learn's digits file without importing scikit-learn; the values
equal ``sklearn.datasets.load_digits()`` exactly; a missing or malformed file falls back to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainers.data import digits

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def check(raw, reference):
    x, y = reference
    assert raw.x.dtype == np.float64 and raw.y.dtype == np.int64
    assert raw.x.shape == (1797, 64) and raw.n_classes == 10 and raw.x_test is None
    np.testing.assert_array_equal(raw.x, x)
    np.testing.assert_array_equal(raw.y, y)


def test_read_equals_load_digits(reference):
    assert digits.digits_file() is not None
    check(digits.read_digits(), reference)


def test_read_does_not_import_sklearn():
    code = ("import sys; from trainers.data.digits import read_digits; r = read_digits(); "
            "print(r.x.shape, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["(1797,", "64)", "False"]


@pytest.mark.parametrize("content", [None, "1,2,3\n4,5,6\n", ",".join(["1"] * 64 + ["0.5"]) + "\n"],
                         ids=["missing", "wrong-columns", "fractional-label"])
def test_missing_or_malformed_file_falls_back_to_sklearn(tmp_path, monkeypatch, reference, content):
    path = None
    if content is not None:
        path = tmp_path / "digits.csv"
        path.write_text(content)
    monkeypatch.setattr(digits, "digits_file", lambda: path)
    check(digits.read_digits(), reference)
