"""Empty arrays are refused by the shared conversion helper (effml._core.as_array) with a
message naming the Python call the user made and the argument, not the C wrapper's
"effml_tensor_wrap: shape[0]=0 must be >= 1"."""
import os

import numpy as np
import pytest

import effml
import effml.calibration as cal
import effml.losses as losses
import effml.peft as peft
import effml.selective as sel
from effml import _core, nn
from effml.errors import ShapeError
from effml.over_sampling import SMOTE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA = os.path.join(ROOT, "tests", "data", "peft", "lora")


def refused(call, want):
    with pytest.raises(ShapeError) as ei:
        call()
    assert str(ei.value) == want
    assert "effml_tensor_wrap" not in str(ei.value)


def test_empty_arrays_name_the_call_and_argument():
    refused(lambda: cal.ece(np.zeros(0), np.zeros(0, np.uint8)),
            "effml.calibration.ece: confidences has 0 entries (shape (0,)); "
            "an empty array cannot be processed")
    refused(lambda: cal.augrc([], []),
            "effml.calibration.augrc: scores has 0 entries (shape (0,)); "
            "an empty array cannot be processed")
    refused(lambda: sel.aurc(np.ones(3), np.zeros(0, np.uint8)),
            "effml.selective.aurc: correct has 0 entries (shape (0,)); "
            "an empty array cannot be processed")
    refused(lambda: losses.softmax_cross_entropy(np.zeros((0, 3), np.float32),
                                                 np.zeros(0, np.int64)),
            "effml.losses.softmax_cross_entropy: logits has 0 rows (shape (0, 3)); "
            "an empty array cannot be processed")
    refused(lambda: losses.softmax_cross_entropy(np.zeros((2, 0), np.float32), [0, 1]),
            "effml.losses.softmax_cross_entropy: logits has 0 columns (shape (2, 0)); "
            "an empty array cannot be processed")
    m = nn.Sequential([nn.Dense(2, 3)], seed=0)
    refused(lambda: nn.fit(m, np.zeros((0, 2), np.float32), np.zeros(0, np.int64)),
            "effml.nn.fit: X has 0 rows (shape (0, 2)); an empty array cannot be processed")
    refused(lambda: nn.predict(m, np.zeros((0, 2), np.float32)),
            "effml.nn.predict: X has 0 rows (shape (0, 2)); an empty array cannot be processed")
    refused(lambda: SMOTE().fit_resample(np.zeros((0, 2)), np.zeros(0, np.int64)),
            "SMOTE.fit_resample: X has 0 rows (shape (0, 2)); an empty array cannot be processed")
    refused(lambda: SMOTE().fit_resample([], []),
            "SMOTE.fit_resample: X has 0 rows (shape (0,)); an empty array cannot be processed")
    with peft.load(LORA) as ad:
        refused(lambda: ad.forward(0, np.zeros((0, 40), np.float32),
                                   np.zeros((24, 40), np.float32)),
                "PeftAdapter.forward: x has 0 rows (shape (0, 40)); "
                "an empty array cannot be processed")


def test_api_caller_is_the_outermost_effml_frame():
    # called from user code directly: no effml frame in between, nothing to name
    assert _core.api_caller() is None
    # a user callback run by effml that calls effml again is named by its own call
    seen = []

    def progress(epoch, step, loss):
        try:
            cal.ece([], [])
        except ShapeError as e:
            seen.append(str(e).split(":")[0])

    m = nn.Sequential([nn.Dense(2, 2)], seed=0)
    nn.fit(m, np.ones((4, 2), np.float32), [0, 1, 0, 1], progress=progress)
    assert seen and set(seen) == {"effml.calibration.ece"}
    # the C wrapper's own check stays for arrays that bypass as_array
    with _core.Scope(effml.Context()) as s:
        with pytest.raises(ShapeError, match="shape\\[0\\]=0 must be >= 1"):
            s.wrap(np.zeros((0, 3)))
