import json
import threading
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ferroute.train.backbones import create_backbone
from ferroute.train.ensemble import (
    TTA_VIEWS,
    Ensemble,
    ModelError,
    RunOptions,
    preprocess,
    view,
)
from ferroute.train.graphs import PatchLinear, fold_batchnorm, inference_copy


def tiny_ensemble(m=3, width=4, stem_stride=1, stage_convs=None, meta=None, **options):
    members = []
    for k in range(m):
        torch.manual_seed(k)
        net, cfg = create_backbone("cnn", width=width, depth=2, stem_stride=stem_stride, stage_convs=stage_convs)
        members.append(net)
    return Ensemble(members, cfg, meta=meta, options=RunOptions(**options) if options else None)


def tiny_vit_ensemble(m=3, size=28):
    members = []
    for k in range(m):
        torch.manual_seed(k)
        net, cfg = create_backbone("dinov2_s14", input_size=size, depth=1, embed_dim=48, num_heads=2)
        members.append(net)
    return Ensemble(members, cfg)


def trained_like(module):
    """Non-trivial BatchNorm statistics and affine terms, as after training."""
    for mod in module.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return module


@pytest.mark.parametrize("batch,stem_stride,stage_convs", [(1, 1, None), (16, 1, None), (16, 2, None), (16, 2, (1, 2))])
def test_fused_paths_match_the_member_loop(batch, stem_stride, stage_convs):
    ens = trained_like(tiny_ensemble(4, stem_stride=stem_stride, stage_convs=stage_convs))
    x = preprocess(np.random.default_rng(0).integers(0, 256, (batch, 48, 48), dtype=np.uint8), ens.config)
    with torch.inference_mode():
        a, b, c = ens.forward_loop(x), ens.runtime.forward_vmap(x), ens.runtime.forward_stacked(x)
    assert a.shape == (batch, 4, 8)
    assert (a - b).abs().max().item() <= 1e-5
    assert (a - c).abs().max().item() <= 1e-5
    np.testing.assert_allclose(a.sum(-1).numpy(), 1.0, atol=1e-5)


def test_save_load_roundtrip_safetensors(tmp_path):
    ens = tiny_ensemble(2)
    ens.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "member_0.safetensors", "member_1.safetensors"]
    back = Ensemble.load(tmp_path)
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(back.predict_proba(faces), ens.predict_proba(faces), atol=1e-6)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        Ensemble.load(tmp_path)
    ens = tiny_ensemble(2)
    ens.save(tmp_path)
    (tmp_path / "member_1.safetensors").unlink()
    with pytest.raises(ModelError, match="member_1.safetensors: member weights missing"):
        Ensemble.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="format"):
        Ensemble.load(tmp_path)


def test_preprocess_resizes_and_replicates_channels():
    _, cfg = create_backbone("efficientnet_lite0", input_size=64)
    x = preprocess(np.zeros((2, 48, 48), np.uint8), cfg)
    assert x.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(np.zeros((2, 48, 48, 3), np.uint8), cfg)


def test_hflip_tta_averages_the_mirror_and_persists(tmp_path):
    ens = tiny_ensemble(2)
    faces = np.random.default_rng(3).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    plain = ens.predict_proba(faces)
    mirror = ens.predict_proba(faces[:, :, ::-1].copy())
    ens.configure(tta="hflip")
    np.testing.assert_allclose(ens.predict_proba(faces), (plain + mirror) / 2, atol=1e-6)
    ens.save(tmp_path)
    assert Ensemble.load(tmp_path).tta == "hflip"
    with pytest.raises(ValueError, match="tta"):
        ens.configure(tta="rot90")


def test_fused_copies_follow_dtype_and_device_moves():
    ens = tiny_ensemble(2)
    x = preprocess(np.zeros((3, 48, 48), np.uint8), ens.config)
    with torch.inference_mode():
        ens.runtime.forward_stacked(x)
        ens.to(torch.float64)
        out = ens.runtime.forward_stacked(x.double())
    assert out.dtype == torch.float64


def test_bf16_precision_is_close_to_fp32_returns_float32_and_persists(tmp_path):
    ens = tiny_ensemble(3)
    faces = np.random.default_rng(4).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    ref = ens.predict_proba(faces)
    ens.configure(precision="bf16")
    assert ens.runtime.uses_bf16("cpu")
    for fused in ("loop", "stacked"):
        ens.configure(fused=fused)
        got = ens.predict_proba(faces)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
        assert np.abs(got - ref).max() < 0.05  # bf16 keeps ~3 significant digits
    ens.save(tmp_path)
    assert Ensemble.load(tmp_path).precision == "bf16"
    assert Ensemble.load(tmp_path).meta["inference"]["precision"] == "bf16"
    ens.configure(precision="fp32")
    assert not ens.runtime.uses_bf16("cpu")
    np.testing.assert_allclose(ens.predict_proba(faces), ref, atol=1e-6)
    with pytest.raises(ValueError, match="precision"):
        ens.configure(precision="fp16")


def test_auto_precision_follows_the_hardware(monkeypatch):
    from ferroute.train import backbones

    ens = tiny_ensemble(2)
    ens.configure(precision="auto")
    monkeypatch.setattr(backbones, "fast_bf16", lambda device: False)
    assert not ens.runtime.uses_bf16("cpu")
    monkeypatch.setattr(backbones, "fast_bf16", lambda device: True)
    assert ens.runtime.uses_bf16("cpu")


def test_shifted_views_average_and_repeat_the_border():
    from ferroute.train.ensemble import view

    ens = tiny_ensemble(2)
    faces = np.random.default_rng(6).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    x = preprocess(faces, ens.config)
    with torch.inference_mode():
        views = [ens.forward_loop(view(x, *v)) for v in ((False, 0, 0), (True, 0, 0), (False, 2, 0), (True, 2, 0))]
        ens.configure(tta="hflip-shift")
        got = ens(x)
    torch.testing.assert_close(got, torch.stack(views).mean(0), atol=1e-6, rtol=0)
    shifted = view(x, False, 2, 0)
    torch.testing.assert_close(shifted[..., 2:], x[..., :-2])  # content moves right ...
    torch.testing.assert_close(shifted[..., 0], x[..., 0])  # ... and the edge column repeats


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.sampled_from([2, 4, 8]), stem_stride=st.sampled_from([1, 2]))
def test_folding_batchnorm_into_the_convolutions_keeps_the_outputs(seed, width, stem_stride):
    torch.manual_seed(seed)
    net, _ = create_backbone("cnn", width=width, depth=2, stem_stride=stem_stride)
    net = trained_like(net).eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(3, 1, 48, 48)
    with torch.inference_mode():
        a, b = net(x), folded(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", ["auto", "stacked", "loop"])
@pytest.mark.parametrize("tta,stem_stride", [("none", 1), ("hflip-shift", 1), ("hflip", 2)])
def test_inference_graph_matches_the_member_loop_over_views(fused, tta, stem_stride):
    ens = trained_like(tiny_ensemble(3, fused=fused, stem_stride=stem_stride))
    ens.configure(tta=tta)
    x = preprocess(np.random.default_rng(5).integers(0, 256, (7, 48, 48), dtype=np.uint8), ens.config)
    with torch.inference_mode():
        ref = torch.stack([ens.forward_loop(view(x, *v)) for v in TTA_VIEWS[tta]]).mean(0)
        got = ens(x)
    assert got.shape == (7, 3, 8) and got.dtype == torch.float32
    assert (got - ref).abs().max().item() <= 1e-5


def _compile_failures(record):
    return [w for w in record if "torch.compile of the ensemble failed" in str(w.message)]


def test_auto_compile_runs_large_calls_compiled_with_the_eager_results():
    ens = trained_like(tiny_ensemble(2))
    ens.configure(tta="hflip")
    ens.configure(chunk=8, compile_min_faces=16)
    faces = np.random.default_rng(6).integers(0, 256, (21, 48, 48), dtype=np.uint8)  # 2 full chunks + 5
    ens.configure(compile="off")
    eager = ens.predict_proba(faces)
    ens.configure(compile="auto")
    ens.predict_proba(faces[:15])  # below the threshold: nothing compiled
    assert not ens.runtime.is_compiled
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ens.predict_proba(faces)
    assert not _compile_failures(record) and ens.options.compile == "auto"
    assert ens.runtime.is_compiled
    np.testing.assert_allclose(got, eager, atol=1e-5)
    ens.train()  # weights may change now: the frozen copies must go
    assert not ens.runtime.is_compiled


def test_a_failing_compile_warns_and_runs_eagerly(monkeypatch):
    ens = tiny_ensemble(2)
    faces = np.random.default_rng(7).integers(0, 256, (70, 48, 48), dtype=np.uint8)
    eager = ens.predict_proba(faces)

    def broken(module, **kwargs):  # like inductor without a toolchain: fails on the first call
        def call(x):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    ens.configure(compile="on")
    with pytest.warns(UserWarning, match="torch.compile of the ensemble failed.*no C\\+\\+ compiler"):
        got = ens.predict_proba(faces)
    assert ens.options.compile == "off" and not ens.runtime.is_compiled
    assert callable(ens.compile)  # the setting does not shadow nn.Module.compile
    np.testing.assert_allclose(got, eager, atol=1e-6)


def test_compile_choices_are_checked():
    ens = tiny_ensemble(2)
    with pytest.raises(ValueError, match="compile must be"):
        ens.configure(compile="yes")
    with pytest.raises(ValueError, match="not 'vmap'"):
        tiny_ensemble(2, fused="vmap").configure(compile="on")


def test_int8_needs_its_scales_then_tracks_fp32_and_persists(tmp_path):
    ens = trained_like(tiny_ensemble(3, width=8))
    ens.configure(tta="hflip")
    rng = np.random.default_rng(7)
    calib, faces = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8), rng.integers(0, 256, (70, 48, 48), dtype=np.uint8)
    ref = ens.predict_proba(faces)
    ens.configure(precision="int8")
    assert ens.runtime.uses_int8("cpu") and not ens.runtime.uses_bf16("cpu") and not ens.is_quantized
    with pytest.raises(ModelError, match="quantize"):
        ens.predict_proba(faces)  # no activation scales yet: a loud error, not a silent fallback
    ens.quantize(calib)
    assert ens.is_quantized and ens.precision == "int8"
    got = ens.predict_proba(faces)  # 70 faces: three chunks of the int8 graph, the last one short
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 0.05
    assert np.abs(got - ref).max() > 0  # it really ran in int8
    ens.save(tmp_path)
    scales = json.loads((tmp_path / "config.json").read_text())["meta"]["inference"]["int8"]["activations"]
    assert "quant" in scales and len(scales) == 1 + 5  # the input and each of the five conv-ReLU layers
    back = Ensemble.load(tmp_path)
    assert back.precision == "int8"
    np.testing.assert_array_equal(back.predict_proba(faces), got)  # rebuilt from the stored scales, no data
    back.configure(precision="fp32")
    np.testing.assert_allclose(back.predict_proba(faces), ref, atol=1e-6)


def test_the_callers_meta_is_left_as_given():
    meta = {"inference": {"tta": "hflip", "int8": {"engine": "x86", "activations": {}}}}
    ens = tiny_ensemble(2, meta=meta)
    ens.configure(tta="none")
    ens.configure(precision="fp32")
    assert meta == {"inference": {"tta": "hflip", "int8": {"engine": "x86", "activations": {}}}}
    assert ens.int8_tta == "hflip"


def test_int8_scales_know_their_views_and_warn_when_the_views_change(tmp_path):
    ens = trained_like(tiny_ensemble(2, width=8))
    ens.configure(tta="hflip")
    faces = np.random.default_rng(3).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    ens.quantize(faces)
    ens.save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["meta"]["inference"]["int8"]["tta"]  # as stored before the record named its views
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    back = Ensemble.load(tmp_path)
    back.configure(tta="none")
    assert back.int8_tta == "hflip"  # the views in force when the scales were stored, not the current ones
    with pytest.warns(UserWarning, match="fitted on test-time augmentation 'hflip'"):
        back.predict_proba(faces)
    back.quantize(faces)
    assert back.int8_tta == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Ensemble.load(tmp_path).predict_proba(faces)  # its own views: no warning


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cpu_calls_run_chunks_on_threads_with_the_single_threaded_results(precision):
    ens = trained_like(tiny_ensemble(3, width=8))
    ens.configure(tta="hflip")
    ens.configure(chunk=32)
    faces = np.random.default_rng(5).integers(0, 256, (150, 48, 48), dtype=np.uint8)  # 5 chunks, the last one short
    if precision == "int8":
        ens.quantize(faces[:40])
    ens.configure(precision=precision)
    threads, filters = torch.get_num_threads(), list(warnings.filters)
    try:
        torch.set_num_threads(1)
        ref = ens.predict_proba(faces)  # one thread: chunk after chunk
        torch.set_num_threads(2)
        seen: set[str] = set()
        hook = ens.runtime.inference_graph("cpu").register_forward_pre_hook(lambda mod, args: seen.add(threading.current_thread().name))
        got = ens.predict_proba(faces, progress=True)
        hook.remove()
        assert torch.get_num_threads() == 2  # the workers' single-thread setting does not leak out
    finally:
        torch.set_num_threads(threads)
    assert seen and all(name.startswith("ferroute-chunk") for name in seen)
    np.testing.assert_array_equal(got, ref)
    assert warnings.filters == filters
    torch.set_num_threads(2)
    try:  # one chunk's worth, or chunks_side_by_side off, runs on torch's own threads, no pool
        seen.clear()
        hook = ens.runtime.inference_graph("cpu").register_forward_pre_hook(lambda mod, args: seen.add(threading.current_thread().name))
        ens.predict_proba(faces[:40])
        ens.configure(side_by_side=False)
        ens.predict_proba(faces)
        hook.remove()
    finally:
        torch.set_num_threads(threads)
    assert seen == {threading.current_thread().name}


def test_quieting_quantization_notices_is_thread_safe():
    from ferroute.train.graphs import _quiet_quantization

    inside = threading.Barrier(4)
    counts = []

    def quiet():
        with _quiet_quantization():
            inside.wait()  # all four inside at once
            counts.append(sum(f[1] is not None and "quantized tensor creation" in f[1].pattern for f in warnings.filters))
            inside.wait()
            warnings.warn("torch.quantize_per_tensor ... quantized tensor creation functions are deprecated", UserWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        workers = [threading.Thread(target=quiet) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert counts == [1, 1, 1, 1]  # one filter, added once
        assert warnings.filters == before  # and removed by the last one out
        assert not caught
        warnings.warn("torch.quantize_per_tensor ... quantized tensor creation functions are deprecated", UserWarning)
        assert len(caught) == 1  # outside, the notice shows again


def test_int8_is_refused_where_it_cannot_run(tmp_path):
    net, cfg = create_backbone("efficientnet_lite0", pretrained=False)
    ens = Ensemble([net], cfg)
    with pytest.raises(ValueError, match="int8 needs CNN members"):
        ens.configure(precision="int8")
    cnn = tiny_ensemble(2)
    cnn.quantize(np.zeros((4, 48, 48), np.uint8))
    cnn.meta["inference"]["int8"]["activations"].pop("quant")
    cnn.save(tmp_path)
    with pytest.raises(ModelError, match="missing"):
        Ensemble.load(tmp_path).predict_proba(np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        tiny_ensemble(2).quantize(np.zeros((0, 48, 48), np.uint8))


def test_int8_falls_back_to_auto_without_the_x86_engine(monkeypatch):
    from ferroute.train import backbones
    from ferroute.train import runtime

    ens = tiny_ensemble(2)
    faces = np.random.default_rng(3).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    ens.quantize(faces)
    monkeypatch.setattr(backbones, "int8_supported", lambda: False)  # an ARM laptop, say
    monkeypatch.setattr(runtime, "int8_supported", lambda: False)
    monkeypatch.setattr(backbones, "fast_bf16", lambda device: False)
    assert ens.precision == "int8" and not ens.runtime.uses_int8("cpu") and not ens.runtime.uses_bf16("cpu")
    ens.configure(precision="fp32")
    ref = ens.predict_proba(faces)
    ens.configure(precision="int8")
    np.testing.assert_allclose(ens.predict_proba(faces), ref, atol=1e-6)  # float32, as 'auto' is here


@settings(max_examples=25, deadline=None)
@given(p=st.integers(2, 7), c=st.integers(1, 4), d=st.integers(1, 9), h=st.integers(1, 30), w=st.integers(1, 30),
       bias=st.booleans(), channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_patch_linear_is_the_patchifying_convolution(p, c, d, h, w, bias, channels_last, seed):
    torch.manual_seed(seed)
    h, w = max(h, p), max(w, p)  # sizes that are not multiples of p drop the remainder, like the conv
    conv = torch.nn.Conv2d(c, d, p, stride=p, bias=bias)
    x = torch.randn(2, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, got = conv(x), PatchLinear(conv)(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_inference_copy_rewrites_only_patchifying_convolutions():
    ens = tiny_vit_ensemble(1)
    vit = ens.members[0]
    copy_ = inference_copy(vit)
    assert isinstance(copy_.patch_embed.proj, PatchLinear) and isinstance(vit.patch_embed.proj, torch.nn.Conv2d)
    assert not PatchLinear.fits(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1))  # a CNN stem stays a convolution
    assert not PatchLinear.fits(torch.nn.Conv2d(3, 8, 1))  # so does a pointwise one


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_vit_ensembles_run_the_inference_graph_with_the_loop_results(tta):
    ens = tiny_vit_ensemble(3)
    ens.configure(tta=tta)
    x = torch.randn(5, 3, 28, 28)
    with torch.inference_mode():
        ref = torch.stack([ens.forward_loop(view(x, *v)) for v in TTA_VIEWS[tta]]).mean(0)
        got = ens(x)
    assert ens.runtime._graphs and got.shape == (5, 3, 8) and got.dtype == torch.float32
    assert (got - ref).abs().max().item() <= 1e-5
    ens.configure(precision="bf16")  # weights in bf16, probabilities still float32
    with torch.inference_mode():
        low = ens(x)
    assert low.dtype == torch.float32 and (low - ref).abs().max().item() <= 0.05


def test_vit_ensembles_compile_with_the_eager_results():
    ens = tiny_vit_ensemble(2)
    ens.configure(chunk=8, compile_min_faces=16)
    faces = np.random.default_rng(8).integers(0, 256, (19, 48, 48), dtype=np.uint8)
    ens.configure(compile="off")
    eager = ens.predict_proba(faces)
    ens.configure(compile="auto")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ens.predict_proba(faces)
    assert not _compile_failures(record) and ens.runtime.is_compiled
    np.testing.assert_allclose(got, eager, atol=1e-5)


def test_embed_gives_the_members_probabilities_features_and_logits():
    ens = tiny_ensemble(3)
    ens.configure(tta="hflip")
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    em = ens.embed(faces, batch_size=4)
    assert em.probs.shape == (10, 3, 8) and em.logits.shape == (10, 3, 8) and em.features.shape[:2] == (10, 3)
    np.testing.assert_allclose(em.probs, ens.predict_proba(faces), atol=2e-2)  # bf16 here and there on some CPUs
    with torch.no_grad():  # one view: the logits are the member's own
        ens.configure(tta="none")
        x = preprocess(faces[:2], ens.config)
        one = ens.embed(faces[:2])
        np.testing.assert_allclose(one.logits[:, 0], ens.members[0].eval()(x).numpy(), atol=5e-2)
