"""How an ensemble runs: RunOptions are checked once and a runtime is swapped, never edited."""

import numpy as np
import pytest

from ferroute.train.ensemble import Ensemble, RunOptions
from tests.test_ensemble import tiny_ensemble, trained_like


@pytest.mark.parametrize("bad,match", [({"tta": "flip"}, "tta must be one of"), ({"precision": "fp16"}, "precision"),
                                       ({"fused": "grouped"}, "fused must be one of"), ({"compile": "yes"}, "compile must be one of"),
                                       ({"compile": "on", "fused": "vmap"}, "needs the inference graph"), ({"chunk": 0}, "positive")])
def test_run_options_refuse_what_cannot_run(bad, match):
    with pytest.raises(ValueError, match=match):
        RunOptions(**bad)
    with pytest.raises(ValueError, match=match):
        RunOptions().replace(**bad)


def test_configure_swaps_the_runtime_and_records_what_the_model_stores(tmp_path):
    ens = trained_like(tiny_ensemble(2))
    faces = np.random.default_rng(0).integers(0, 256, (70, 48, 48), dtype=np.uint8)
    before, first = ens.predict_proba(faces), ens.runtime
    assert ens.configure(tta="hflip", chunk=16) is ens and ens.runtime is not first
    assert (ens.tta, ens.options.chunk, first.options.tta) == ("hflip", 16, "none")  # the old runtime is left as it was
    assert ens.meta["inference"]["tta"] == "hflip"
    ens.save(tmp_path)
    assert Ensemble.load(tmp_path).tta == "hflip"  # views and precision travel with the model
    assert Ensemble.load(tmp_path, options=RunOptions(tta="none")).tta == "none"  # ... unless the caller chooses
    ens.configure(tta="none", side_by_side=False, fused="loop")
    np.testing.assert_allclose(ens.predict_proba(faces), before, atol=1e-6)  # how it runs never changes what it says


def test_non_cnn_members_run_the_loop_and_refuse_cnn_only_options():
    from tests.test_ensemble import tiny_vit_ensemble

    ens = tiny_vit_ensemble(2)
    assert ens.options.fused == "loop"
    with pytest.raises(ValueError, match="needs CompactCNN members"):
        ens.configure(fused="stacked")
    with pytest.raises(ValueError, match="int8 needs CNN members"):
        ens.configure(precision="int8")
