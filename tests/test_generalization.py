"""Beyond FERPlus for the report: non-face crops and CK+ through any router."""

import numpy as np

from ferroute.evaluate.ferplus import LabelledFaces
from ferroute.evaluate.generalization import generalization, per_subject, shares


def test_per_subject_counts_each_subject_once():
    right = np.array([1, 1, 1, 0], bool)
    assert per_subject(right, np.array([0, 0, 0, 1])) == 0.5  # per image it would be 0.75


def test_shares_of_the_three_decisions():
    assert shares(np.array(["accept", "reject", "reject", "ambiguous"])) == {"accept": 0.25, "ambiguous": 0.25, "reject": 0.5}


def test_a_router_that_rejects_everything_rejects_every_nonface_kind():
    probs_of = lambda f: np.full((len(f), 2, 8), 1 / 8, np.float32)  # noqa: E731
    out = generalization(probs_of, lambda p, f: np.array(["reject"] * len(p), object), None)
    assert out["nonface_rejected"] == 1.0 and set(out["nonface_rejected_by_kind"].values()) == {1.0}
    assert "ckplus_accuracy" not in out


def test_ckplus_accuracy_on_its_own_labels():
    rng = np.random.default_rng(0)
    n = 30
    labels = rng.choice([1, 2, 3], n)  # a set with three of the eight emotions
    probs = np.full((n, 2, 8), 0.01, np.float32)
    probs[np.arange(n), :, 0] = 0.5  # neutral wins overall: wrong on every face
    probs[np.arange(n), :, labels] = 0.3  # but among the set's own labels the right one wins
    ck = LabelledFaces(images=np.zeros((n, 48, 48), np.uint8), labels=labels, groups=np.arange(n) % 5)
    out = generalization(lambda f: probs if len(f) == n else np.full((len(f), 2, 8), 1 / 8, np.float32),
                         lambda p, f: np.array(["accept"] * len(p), object), ck)
    assert out["ckplus_accuracy"] == 0.0 and out["ckplus_accuracy_own_labels"] == 1.0
    assert out["ckplus_own_labels"] == [1, 2, 3] and out["n_ckplus_subjects"] == 5
