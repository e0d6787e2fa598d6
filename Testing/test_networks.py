"""MAG-MS network: shapes, absent slots, mean fusion and gradients for every subset and backbone."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import SLOTS4, tiny_config
from magms.config import NetConfig
from magms.losses import MAGMSLoss
from magms.networks import MAGMSOutput, UNetEncoder, UNETREncoder, build_network

BACKBONES = ("unet", "unetr")
SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(SLOTS4, r)]
assert len(SUBSETS) == 15


@pytest.fixture(scope="module", params=BACKBONES)
def net_and_input(request):
    torch.manual_seed(0)
    cfg = tiny_config(request.param)
    net = build_network(cfg)
    x = torch.randn(2, len(SLOTS4), *cfg.img_size)
    return net, x, cfg


def _with_absent_garbage(x: torch.Tensor, subset) -> torch.Tensor:
    y = x.clone()
    for m, slot in enumerate(SLOTS4):
        if slot not in subset:
            y[:, m] = float("nan")  # any read of an absent channel would poison the output
    return y


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_shapes_and_absent_slots_are_never_read(net_and_input, subset):
    net, x, cfg = net_and_input
    with torch.no_grad():
        net.eval()
        y = net(x, list(subset))
        assert y.shape == (2, 4, *cfg.img_size)
        y_garbage = net(_with_absent_garbage(x, subset), list(subset))
        assert torch.equal(y, y_garbage)
        net.train()
        out = net(x, list(subset))
        out_garbage = net(_with_absent_garbage(x, subset), list(subset))
    assert isinstance(out, MAGMSOutput)
    assert out.logits.shape == (2, 4, *cfg.img_size)
    assert set(out.modality_logits) == set(subset) == set(out.modality_features)
    assert all(v.shape == (2, 4, *cfg.img_size) for v in out.modality_logits.values())
    assert len(out.fused_features) == cfg.num_levels
    assert torch.equal(out.logits, out_garbage.logits)
    for slot in subset:
        assert torch.equal(out.modality_logits[slot], out_garbage.modality_logits[slot])


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_fused_features_are_mean_of_present(net_and_input, subset):
    net, x, _ = net_and_input
    net.train()
    with torch.no_grad():
        out = net(x, list(subset))
        explicit = [net.encoders[s](x[:, SLOTS4.index(s) : SLOTS4.index(s) + 1]) for s in subset]
    for level, fused in enumerate(out.fused_features):
        mean = torch.stack([feats[level] for feats in explicit]).mean(dim=0)
        torch.testing.assert_close(fused, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.modality_features[subset[0]][level], explicit[0][level], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_gradients_reach_exactly_present_encoders_and_decoder(net_and_input, subset):
    net, x, _ = net_and_input
    net.train()
    net.zero_grad(set_to_none=True)
    target = torch.randint(0, 4, (2, 1, *x.shape[2:]))
    MAGMSLoss()(net(x, list(subset)), target).backward()
    for slot in SLOTS4:
        grads = [p.grad for p in net.encoders[slot].parameters() if p.requires_grad]
        if slot in subset:
            assert all(g is not None for g in grads), f"{slot}: some parameters got no gradient"
            assert any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), f"absent {slot} got a gradient"
    assert all(p.grad is not None for p in net.decoder.parameters())


def test_per_sample_presence_equals_separate_runs(net_and_input):
    net, x, _ = net_and_input
    net.eval()
    present = torch.tensor([[True, False, True, False], [False, True, True, True]])
    with torch.no_grad():
        both = net(x, present)
        first = net(x[:1], present[0])
        second = net(x[1:], present[1])
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-4, atol=1e-5)


def test_decode_subset_equals_a_forward_with_that_subset(net_and_input):
    """The random-subset policy decodes a subset's fusion from features already computed."""
    net, x, _ = net_and_input
    net.train()
    present = torch.tensor([[True, False, True, True], [False, True, True, True]])
    subset = torch.tensor([[True, False, False, True], [False, False, True, True]])
    with torch.no_grad():
        reused = net.decode_subset(net(x, present), subset)
        direct = net(x, subset).logits
    torch.testing.assert_close(reused, direct, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not present in the forward pass"):
        net.decode_subset(net(x, present), torch.tensor([[True, True, False, False], [False, True, False, False]]))
    with pytest.raises(ValueError, match="a True in every row"):
        net.decode_subset(net(x, present), torch.tensor([[True, False, False, False], [False, False, False, False]]))


def test_train_fused_logits_equal_eval_output(net_and_input):
    net, x, _ = net_and_input
    with torch.no_grad():
        y_eval = net.eval()(x, ["flair", "t2"])
        y_train = net.train()(x, ["flair", "t2"]).logits
    torch.testing.assert_close(y_eval, y_train, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_checkpointing_gives_the_same_gradients(backbone):
    torch.manual_seed(1)
    plain = build_network(tiny_config(backbone))
    ckpt = build_network(tiny_config(backbone, checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 4, *plain_cfg_size(backbone))
    target = torch.randint(0, 4, (1, 1, *x.shape[2:]))
    for net in (plain, ckpt):
        net.train()
        MAGMSLoss()(net(x, ["t1", "t2"]), target).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def plain_cfg_size(backbone):
    return tiny_config(backbone).img_size


def test_default_unetr_matches_reference_parameter_count():
    # the reference magnet v2 UNETR: 4 modalities, 4 classes, 96^3 -> 365,619,780 parameters
    net = build_network(NetConfig(slots=SLOTS4, out_channels=4, backbone="unetr", img_size=(96, 96, 96)))
    assert sum(p.numel() for p in net.parameters()) == 365_619_780


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ill_arguments(backbone):
    net = build_network(tiny_config(backbone)).eval()
    size = tiny_config(backbone).img_size
    with pytest.raises(ValueError, match=r"\(B, 4, D, H, W\)"):
        net(torch.zeros(1, 3, *size), ["flair"])
    with pytest.raises(ValueError, match="no modality present"):
        net(torch.zeros(1, 4, *size), [])
    with pytest.raises(ValueError, match="'pd' is not one of"):
        net(torch.zeros(1, 4, *size), ["pd"])
    with pytest.raises(ValueError, match="no modality present for sample"):
        net(torch.zeros(2, 4, *size), torch.tensor([[True, False, False, False], [False] * 4]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbone="vnet"), "backbone"),
        (dict(slots=()), "slots"),
        (dict(slots=("t1", "t1")), "slots"),
        (dict(out_channels=1), "out_channels"),
        (dict(backbone="unetr", hidden_size=100, num_heads=12), "divisible"),
        (dict(backbone="unetr", img_size=(40, 32, 32)), "divisible"),
        (dict(backbone="unetr", skip_layers=(3, 6, 11)), "skip_layers"),
        (dict(backbone="unet", img_size=(18, 16, 16), channels=(4, 8, 16)), "divisible by 4"),
    ],
)
def test_net_config_ill_arguments(kwargs, match):
    base = dict(slots=SLOTS4, out_channels=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NetConfig(**base)


def test_encoders_ill_arguments():
    with pytest.raises(ValueError, match="channels"):
        UNetEncoder((8,))
    with pytest.raises(ValueError, match="skip_layers"):
        UNETREncoder(img_size=(32, 32, 32), hidden_size=32, mlp_dim=64, num_heads=2, num_layers=4, skip_layers=(0, 1))


def test_singles_decodes_that_many_single_outputs_and_the_loss_distils_every_feature(net_and_input):
    """``--singles-per-step``: fewer decoder passes; every present encoder still fused and distilled."""
    net, x, _ = net_and_input
    net.train()
    torch.manual_seed(3)
    present = torch.tensor([[True, True, True, False], [True, False, True, True]])
    with torch.no_grad():
        every = net(x, present)
        one = net(x, present, singles=1)
        two = net(x, present, singles=2)
    assert len(every.modality_logits) == 4 and len(one.modality_logits) == 1 and len(two.modality_logits) == 2
    assert set(one.modality_features) == set(every.modality_features) == set(SLOTS4)
    torch.testing.assert_close(one.logits, every.logits)  # the fused output does not change
    slot = next(iter(one.modality_logits))
    torch.testing.assert_close(one.modality_logits[slot], every.modality_logits[slot])
    drawn = {next(iter(net(x, present, singles=1).modality_logits)) for _ in range(40)}
    assert drawn == set(SLOTS4)  # every present slot gets its turn
    y = torch.randint(0, 4, (2, 1, *x.shape[2:]))
    terms = MAGMSLoss().terms(one, y)
    assert {k for k in terms if k.startswith(("seg_", "kl_"))} == {"seg_fused", f"seg_{slot}", f"kl_{slot}"}
    assert {k for k in terms if k.startswith("feature_")} == {f"feature_{s}" for s in SLOTS4}
    with torch.no_grad():
        assert len(net(x, present, singles=9).modality_logits) == 4


# ------------------------------------------------------------------------------------------------
# click guidance


def _guided(seed: int = 0):
    torch.manual_seed(seed)
    net = build_network(tiny_config("unet", click_regions=3)).eval()
    for projection in net.guidance.projections:  # as after training: the guidance is not zero any more
        torch.nn.init.normal_(projection.weight, std=0.5)
    return net


def test_with_no_click_the_guided_network_is_the_automatic_one_bit_for_bit():
    net = _guided()
    automatic = build_network(tiny_config("unet")).eval()
    automatic.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("guidance.")})
    x = torch.randn(2, 4, 16, 16, 16)
    with torch.no_grad():
        expected = automatic(x, ["flair", "t1c"])
        assert torch.equal(net(x, ["flair", "t1c"]), expected)
        assert torch.equal(net(x, ["flair", "t1c"], clicks=torch.zeros(2, 6, 16, 16, 16)), expected)
        clicks = torch.zeros(2, 6, 16, 16, 16)
        clicks[1, 0, 8, 8, 8] = 1.0
        changed = net(x, ["flair", "t1c"], clicks=clicks)
    assert torch.equal(changed[0], expected[0]) and not torch.equal(changed[1], expected[1])  # per sample


def test_a_fresh_guidance_changes_nothing_and_fuse_then_decode_is_the_forward():
    torch.manual_seed(0)
    net = build_network(tiny_config("unet", click_regions=2)).eval()
    x, clicks = torch.randn(1, 4, 16, 16, 16), torch.rand(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, ["t2"], clicks=clicks), net(x, ["t2"]))  # zero-initialised: training starts from the model
        assert torch.equal(net.decode(net.fuse(x, ["t2"]), clicks), net(x, ["t2"], clicks=clicks))


def test_clicks_are_refused_by_a_network_without_guidance_and_in_the_wrong_shape():
    x = torch.randn(1, 4, 16, 16, 16)
    with pytest.raises(ValueError, match="takes no clicks"):
        build_network(tiny_config("unet")).eval()(x, ["flair"], clicks=torch.zeros(1, 6, 16, 16, 16))
    with pytest.raises(ValueError, match="click maps must be"):
        _guided()(x, ["flair"], clicks=torch.zeros(1, 6, 8, 16, 16))
    with pytest.raises(ValueError, match="click_regions"):
        tiny_config("unetr", click_regions=3)
    with pytest.raises(ValueError, match="click_regions"):
        tiny_config("unet", click_regions=-1)
