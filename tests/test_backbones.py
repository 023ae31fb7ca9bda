import json

import pytest
import torch

from ferroute.train.backbones import (
    BackboneConfig,
    build_from_config,
    check_device,
    create_backbone,
    efficientnet_lite0_weights_path,
    list_backbones,
)


def test_registry_lists_the_three_backbones():
    assert {"cnn", "efficientnet_lite0", "dinov2_s14"} <= set(list_backbones())
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet9000")


@pytest.mark.parametrize("width,depth,stem_stride", [(4, 2, 1), (8, 3, 1), (8, 3, 2)])
def test_cnn_shapes_and_config_roundtrip(width, depth, stem_stride):
    m, cfg = create_backbone("cnn", width=width, depth=depth, stem_stride=stem_stride)
    assert m(torch.zeros(2, 1, 48, 48)).shape == (2, 8)
    assert m.features[0].stride == (stem_stride, stem_stride)
    assert ("stem_stride" in cfg.kwargs) == (stem_stride != 1)  # older configs stay as they were
    cfg2 = BackboneConfig.from_dict(cfg.to_dict())
    assert cfg2 == cfg
    m2 = build_from_config(cfg2)
    assert sum(p.numel() for p in m2.parameters()) == sum(p.numel() for p in m.parameters())


def test_efficientnet_lite0_imagenet_weights_load_tensor_by_tensor():
    src = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(src) == 296
    m, cfg = create_backbone("efficientnet_lite0", pretrained=True, input_size=64)
    src_list = [v for k, v in src.items() if not k.startswith(("classifier", "_fc"))]
    dst_list = [v for k, v in m.state_dict().items() if not k.startswith("classifier")]
    assert len(src_list) == len(dst_list) == 294  # 296 less the 1000-class head
    for a, b in zip(src_list, dst_list):
        assert a.shape == b.shape and torch.equal(a, b)
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 8)
    assert cfg.in_chans == 3


def test_pretrained_efficientnet_starts_near_uniform_with_seeded_heads():
    """The new head on ImageNet features starts with small logits (a loss near ln 8, not ~7),
    and two seeds give two heads (members must not share one init)."""
    from ferroute.train.backbones import preprocess

    faces = torch.randint(0, 256, (16, 48, 48), dtype=torch.uint8).numpy()
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m, cfg = create_backbone("efficientnet_lite0", pretrained=True, input_size=64)
        with torch.no_grad():
            logits = m.eval()(preprocess(faces, cfg))
        assert logits.abs().max() < 1.0
        heads.append(m.classifier.weight.detach().clone())
    assert not torch.equal(heads[0], heads[1])


def test_dinov2_tiny_random_init():
    m, cfg = create_backbone("dinov2_s14", pretrained=False, input_size=28, depth=1, embed_dim=48, num_heads=2)
    assert m(torch.zeros(2, 3, 28, 28)).shape == (2, 8)
    assert cfg.kwargs["depth"] == 1 and cfg.name == "dinov2_s14"
    assert build_from_config(cfg)(torch.zeros(1, 3, 28, 28)).shape == (1, 8)


def test_dinov2_stays_offline_and_falls_back_with_warning():
    with pytest.warns(UserWarning, match="random init"):
        m, _ = create_backbone("dinov2_s14", pretrained=True, input_size=28, depth=1, embed_dim=48, num_heads=2)
    assert m(torch.zeros(1, 3, 28, 28)).shape == (1, 8)


def test_dinov2_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    src, _ = create_backbone("dinov2_s14", input_size=28, depth=1, embed_dim=48, num_heads=2)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    m, _ = create_backbone("dinov2_s14", pretrained=True, weights=str(tmp_path / "w.safetensors"), input_size=28, depth=1, embed_dim=48, num_heads=2)
    assert torch.equal(m.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def test_stride_two_stem_quarters_the_arithmetic_and_rejects_other_strides():
    def macs(net):
        total, x = 0, torch.zeros(1, 1, 48, 48)
        for layer in net.features:
            y = layer(x)
            if isinstance(layer, torch.nn.Conv2d):
                total += y.numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            x = y
        return total

    full, _ = create_backbone("cnn", width=16, depth=3)
    half, _ = create_backbone("cnn", width=16, depth=3, stem_stride=2)
    assert 0.2 < macs(half) / macs(full) < 0.3
    with pytest.raises(ValueError, match="stem_stride"):
        create_backbone("cnn", stem_stride=3)


def test_stage_convs_sets_the_blocks_per_stage_and_travels_with_the_config():
    m, cfg = create_backbone("cnn", width=8, depth=3, stem_stride=2, stage_convs=[1, 2, 2])
    convs = [mod for mod in m.features if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 + 2 + 1  # the stem alone in stage 0, then 2 and 2, then the final conv
    assert isinstance(m.features[3], torch.nn.MaxPool2d)  # stem, BN, ReLU, pool: nothing else at 24x24
    assert m(torch.zeros(2, 1, 48, 48)).shape == (2, 8)
    assert cfg.kwargs["stage_convs"] == [1, 2, 2]
    back = build_from_config(BackboneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))))
    assert [type(a) for a in back.features] == [type(b) for b in m.features]
    _, plain = create_backbone("cnn", width=8, depth=3, stage_convs=(2, 2, 2))
    assert "stage_convs" not in plain.kwargs  # the default leaves older configs as they were
    for bad in ([1, 2], [0, 2, 2]):
        with pytest.raises(ValueError, match="stage_convs"):
            create_backbone("cnn", depth=3, stage_convs=bad)


def test_first_width_narrows_the_first_stage_only_and_travels_with_the_config():
    m, cfg = create_backbone("cnn", width=8, depth=3, stem_stride=2, first_width=4)
    convs = [mod for mod in m.features if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 16, 16, 32, 32, 64]
    assert convs[2].in_channels == 4 and m(torch.zeros(2, 1, 48, 48)).shape == (2, 8)
    assert cfg.kwargs["first_width"] == 4
    back = build_from_config(BackboneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))))
    assert [c.out_channels for c in back.features if isinstance(c, torch.nn.Conv2d)] == [4, 4, 16, 16, 32, 32, 64]
    assert "first_width" not in create_backbone("cnn", width=8, first_width=8)[1].kwargs  # the default, left out
    with pytest.raises(ValueError, match="first_width"):
        create_backbone("cnn", first_width=0)


def test_devices_are_checked_with_a_message_that_says_what_to_do():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU; use device cpu"):
            check_device("cuda")
