"""Family-specific behaviour: the unet lung-field prior, Mask R-CNN anchors/scoring, Grad-CAM, backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.errors import ConfigError
from pneumo.models import create_model
from pneumo.models.base import Target
from pneumo.models.common import box_masks, union_masks
from pneumo.models.unet import fit_lung_prior, opacity_outside_prior_fraction

SIZE = 128



# ---- box masks ----------------------------------------------------------------------------------------


def test_box_masks_fill_pixel_centres_inside_the_box():
    masks = box_masks(torch.tensor([[2.0, 1.0, 5.0, 3.0], [6.2, 6.2, 6.4, 6.4]]), 8, 8)
    assert masks.shape == (2, 8, 8) and masks.dtype == torch.uint8
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[1:3, 2:5] = 1
    np.testing.assert_array_equal(masks[0].numpy(), expected)
    assert masks[1].sum() == 1 and masks[1, 6, 6] == 1, "a sub-pixel box still marks its centre pixel"
    assert box_masks(torch.zeros((0, 4)), 8, 8).shape == (0, 8, 8)
    union = union_masks([Target(torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]]), 1)], 8, 8, torch.device("cpu"))
    assert union.shape == (1, 1, 8, 8) and union.sum() == 16 + 16 - 4


# ---- lung-field prior ---------------------------------------------------------------------------------


def test_fit_lung_prior_marks_where_boxes_occur():
    size = 256
    boxes = [np.array([[32.0, 64.0, 96.0, 192.0]]), np.zeros((0, 4)), np.array([[160.0, 64.0, 224.0, 192.0, 0.9]])]
    prior = fit_lung_prior(boxes, size)
    assert prior.shape == (64, 64) and prior.dtype == np.float32
    assert prior.min() >= 0.0 and prior.max() == pytest.approx(1.0)
    # box centres (grid units: size 256 -> 64) are high, the corners and the centre gap low
    assert prior[32, 16] > 0.8 and prior[32, 48] > 0.8
    assert prior[2, 2] < 0.01 and prior[62, 62] < 0.01
    assert prior[32, 32] < prior[32, 16]
    # no boxes at all: no evidence, so nothing is suppressed
    np.testing.assert_array_equal(fit_lung_prior([np.zeros((0, 4))], size), np.ones((64, 64), np.float32))
    with pytest.raises(Exception):
        fit_lung_prior([np.array([[1.0, 2.0]])], size)


def test_opacity_outside_prior_fraction():
    prior = np.zeros((64, 64), dtype=np.float32)
    prior[:, :32] = 1.0  # left half of the canvas is "lung"
    size = 128
    assert opacity_outside_prior_fraction(np.array([[10.0, 10.0, 50.0, 50.0]]), prior, size) == 0.0
    assert opacity_outside_prior_fraction(np.array([[70.0, 10.0, 120.0, 50.0]]), prior, size) == 1.0
    # bilinear upsampling (as the model's filter) puts the 0.5 level exactly on the half-way column 64
    half = np.array([[44.0, 0.0, 84.0, 10.0]])
    assert opacity_outside_prior_fraction(half, prior, size, floor=0.5) == pytest.approx(0.5)
    assert 0.45 < opacity_outside_prior_fraction(half, prior, size) < 0.5  # a low floor widens the field a little
    per_image = [np.array([[10.0, 10.0, 50.0, 50.0, 0.9]]), np.array([[70.0, 10.0, 110.0, 50.0, 0.4]]), np.zeros((0, 5))]
    assert opacity_outside_prior_fraction(per_image, prior, size) == pytest.approx(0.5)
    assert opacity_outside_prior_fraction(np.zeros((0, 4)), prior, size) == 0.0


def _always_opaque_unet(mode: str):
    """A unet whose map says "opacity everywhere" (seg bias +10), with a prior covering a central field."""
    torch.manual_seed(0)
    model = create_model("unet", {"lung_prior": mode, "encoder_depth": 3}).eval()
    with torch.no_grad():
        model.seg_head.weight.zero_()
        model.seg_head.bias.fill_(10.0)
    prior = np.zeros((64, 64), dtype=np.float32)
    prior[16:56, 8:56] = 1.0
    model.set_lung_prior(prior)
    return model, prior


def test_filter_mode_removes_opacity_outside_the_lung_field():
    images = torch.rand((1, 1, SIZE, SIZE))
    off_model, prior = _always_opaque_unet("off")
    off = off_model.infer(images)[0]
    filt_model, _ = _always_opaque_unet("filter")
    filt = filt_model.infer(images)[0]
    # without the prior the whole canvas (borders, abdomen) is called opacity
    assert opacity_outside_prior_fraction(off.boxes, prior, SIZE) > 0.4
    assert off.heatmap[0, 0] > 0.99
    # with the filter nothing is left outside the field, and the box is the field itself
    assert len(filt.boxes) == 1
    assert opacity_outside_prior_fraction(filt.boxes, prior, SIZE) == 0.0
    np.testing.assert_allclose(filt.boxes[0, :4], [16.0, 32.0, 112.0, 112.0], atol=2.0)
    assert filt.heatmap[0, 0] == 0.0 and filt.heatmap[64, 64] > 0.99
    assert filt.probability == off.probability, "the prior must not change the image-level probability"


def test_input_mode_feeds_the_prior_to_the_decoder():
    torch.manual_seed(0)
    model = create_model("unet", {"lung_prior": "input", "encoder_depth": 3}).eval()
    images = torch.rand((1, 1, SIZE, SIZE))
    with torch.no_grad():
        before = model(images)[0]
        prior = np.zeros((64, 64), dtype=np.float32)
        prior[20:40, 20:40] = 1.0
        model.set_lung_prior(prior)
        after = model(images)[0]
    assert not torch.allclose(before, after), "the prior channel must reach the decoder"
    with pytest.raises(ConfigError):
        model.set_lung_prior(np.ones((32, 32)))


def test_unet_weak_positive_does_not_supervise_the_map():
    torch.manual_seed(0)
    model = create_model("unet", {"encoder_depth": 3}).train()
    images = torch.rand((2, 1, SIZE, SIZE))
    weak = [Target(torch.zeros((0, 4)), 1), Target(torch.zeros((0, 4)), 1)]
    losses = model.compute_loss(images, weak)
    assert losses["seg_bce"] == 0.0 and losses["dice"] == 0.0
    assert losses["loss"].item() == pytest.approx(losses["cls_bce"].item())


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
def test_unet_encoder_options():
    for encoder, depth in (("resnet34", 4), ("efficientnet-lite0", 5)):
        model = create_model("unet", {"encoder": encoder, "encoder_depth": depth}).eval()
        seg, logit = model(torch.rand((1, 1, SIZE, SIZE)))
        assert seg.shape == (1, 1, SIZE, SIZE) and logit.shape == (1,)
    with pytest.raises(ConfigError, match="offline"):
        create_model("unet", {"encoder": "resnet18", "pretrained": True})


# ---- Mask R-CNN -----------------------------------------------------------------------------------------


def test_maskrcnn_anchors_follow_the_input_size_and_rsna_shapes():
    from pneumo.models.maskrcnn import RSNA_ANCHOR_SIZES_1024

    model = create_model("maskrcnn", {"image_size": 256})
    generator = model.detector.rpn.anchor_generator
    assert [s[0] for s in generator.sizes] == [round(s * 256 / 1024) for s in RSNA_ANCHOR_SIZES_1024]
    ratios = generator.aspect_ratios[0]
    assert min(ratios) <= 0.75 and max(ratios) >= 2.0, "RSNA boxes are mostly 0.7-3 times taller than wide"
    assert model.detector.roi_heads.detections_per_img == 10


def test_maskrcnn_does_not_resize_and_scores_by_max():
    torch.manual_seed(0)
    model = create_model("maskrcnn", {"image_size": 256, "box_score_thresh": 0.0}).eval()
    images = torch.rand((2, 1, SIZE, SIZE))
    batched, _ = model.detector.transform(list(images))
    assert tuple(batched.tensors.shape[-2:]) == (SIZE, SIZE)
    for out in model.infer(images):
        assert len(out.boxes) > 0
        assert out.probability == pytest.approx(float(out.boxes[:, 4].max()))
        assert out.boxes[:, :4].max() <= SIZE
    from pneumo.models.maskrcnn import image_probability

    assert image_probability(np.array([0.5, 0.5]), "noisy_or") == pytest.approx(0.75)
    assert image_probability(np.array([0.5, 0.2]), "max") == pytest.approx(0.5)
    assert image_probability(np.zeros(0), "max") == 0.0
    with pytest.raises(ConfigError):
        create_model("maskrcnn", {"image_score": "mean"})


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
def test_maskrcnn_efficientnet_backbone_is_imagenet_initialised_and_trains():
    from pneumo.models.backbones import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, efficientnet_lite0_weights_path

    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = create_model("maskrcnn", {"backbone": "efficientnet-lite0", "pretrained": True, "image_size": SIZE})
    body = model.detector.backbone.body
    torch.testing.assert_close(body.stem[0].weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert model.detector.transform.image_mean == [IMAGENET_GREY_MEAN]
    assert model.detector.transform.image_std == [IMAGENET_GREY_STD]
    images = torch.rand((2, 1, SIZE, SIZE))
    targets = [Target(torch.tensor([[10.0, 12.0, 40.0, 52.0]]), 1), Target(torch.zeros((0, 4)), 0)]
    losses = model.train().compute_loss(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(losses)
    losses["loss"].backward()
    assert body.stem[0].weight.grad is not None and torch.isfinite(body.stem[0].weight.grad).all()
    for out in model.infer(images):
        assert 0.0 <= out.probability <= 1.0 and out.heatmap.shape == (SIZE, SIZE)
    with pytest.raises(ConfigError, match="offline"):
        create_model("maskrcnn", {"backbone": "resnet18", "pretrained": True})
    with pytest.raises(ConfigError, match="backbone"):
        create_model("maskrcnn", {"backbone": "vgg16"})


def test_maskrcnn_loss_needs_train_mode_and_skips_weak_positives():
    torch.manual_seed(0)
    model = create_model("maskrcnn", {"image_size": SIZE})
    images = torch.rand((2, 1, SIZE, SIZE))
    targets = [Target(torch.zeros((0, 4)), 1), Target(torch.zeros((0, 4)), 1)]
    with pytest.raises(RuntimeError, match="train mode"):
        model.eval().compute_loss(images, targets)
    losses = model.train().compute_loss(images, targets)
    assert losses["loss"].item() == 0.0 and losses["loss"].requires_grad


# ---- CheXNet / Grad-CAM ---------------------------------------------------------------------------------


def test_chexnet_pos_weight_scales_positive_loss():
    images = torch.rand((2, 1, SIZE, SIZE))
    targets = [Target(torch.zeros((0, 4)), 1), Target(torch.zeros((0, 4)), 1)]
    torch.manual_seed(0)
    plain = create_model("chexnet", {"backbone": "efficientnet-lite0"}).eval()
    torch.manual_seed(0)
    weighted = create_model("chexnet", {"backbone": "efficientnet-lite0", "pos_weight": 3.0}).eval()
    a = plain.compute_loss(images, targets)["loss"].item()
    b = weighted.compute_loss(images, targets)["loss"].item()
    assert b == pytest.approx(3.0 * a, rel=1e-5)


def test_grad_cam_works_under_no_grad_and_boxes_scale_with_probability():
    torch.manual_seed(0)
    model = create_model("chexnet", {"backbone": "efficientnet-lite0", "cam_threshold": 0.3}).eval()
    images = torch.rand((2, 1, SIZE, SIZE))
    with torch.no_grad():
        probs, cams = model.grad_cam(images)
        outputs = model.infer(images)
    assert cams.shape == (2, SIZE, SIZE) and float(cams.max()) == pytest.approx(1.0)
    assert float(cams.min()) >= 0.0
    assert all(p.grad is None for p in model.parameters())
    for out, p in zip(outputs, probs.tolist()):
        assert out.probability == pytest.approx(p)
        assert len(out.boxes) >= 1, "a heatmap normalised to peak 1 has at least one component above 0.3"
        assert (out.boxes[:, 4] <= p + 1e-6).all()
        # the confidence is probability x mean heat of the component
        x1, y1, x2, y2 = (int(round(v)) for v in out.boxes[0, :4])
        assert out.boxes[0, 4] <= p * out.heatmap[y1:y2, x1:x2].max() + 1e-5


def test_grad_cam_follows_the_evidence():
    """With a classifier that only looks at one channel, the heatmap peaks where that channel fires."""
    torch.manual_seed(0)
    model = create_model("chexnet", {"backbone": "efficientnet-lite0"}).eval()
    images = torch.zeros((1, 1, SIZE, SIZE))
    with torch.no_grad():
        acts = model.activations(images)[0]
    spread = acts.flatten(1).std(dim=1)
    channel = int(spread.argmax())
    with torch.no_grad():
        model.classifier[1].weight.zero_()
        model.classifier[1].weight[0, channel] = 1.0
    _, cam = model.grad_cam(images)
    act_map = torch.nn.functional.interpolate(acts[None, channel : channel + 1], size=(SIZE, SIZE), mode="bilinear")[0, 0]
    peak_cam = np.unravel_index(int(cam[0].argmax()), (SIZE, SIZE))
    assert act_map[peak_cam] >= 0.9 * act_map.max()


def test_chexnet_rejects_pretrained_densenet():
    with pytest.raises(ConfigError, match="offline"):
        create_model("chexnet", {"pretrained": True})


# ---- backbones ------------------------------------------------------------------------------------------


def test_efficientnet_lite0_imagenet_weights_are_loaded_and_stem_summed():
    from pneumo.models.backbones import EfficientNetLite0Encoder, efficientnet_lite0_weights_path

    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    encoder = EfficientNetLite0Encoder(pretrained=True)
    torch.testing.assert_close(encoder.stem[0].weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(encoder.stages[2][0]._depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"])
    random = EfficientNetLite0Encoder(pretrained=False)
    assert not torch.allclose(random.stages[2][0]._depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"])
    features = encoder(torch.rand((1, 1, 96, 96)))
    assert [f.shape[-1] for f in features] == [48, 24, 12, 6, 3]
    assert [f.shape[1] for f in features] == encoder.channels == [16, 24, 40, 112, 320]


def test_maskrcnn_size_taper_fades_a_thinning_box_out_continuously() -> None:
    """A box that thins to nothing (torchvision drops it below 0.01 px) must take its score down with it,
    so the image probability (the top score) cannot jump when it disappears; real-sized boxes keep theirs."""
    from pneumo.decode.maskrcnn import MaskRCNNConfig, output_from_detections, size_taper

    config = MaskRCNNConfig(image_size=256)
    real = [40.0, 60.0, 120.0, 160.0]
    probabilities = []
    for width in (5.12, 2.0, 0.5, 0.1, 0.02):
        boxes = np.array([[255.9 - width, 10.0, 255.9, 90.0], real], dtype=np.float32)
        out = output_from_detections(boxes, np.array([0.9, 0.3]), np.zeros((2, 256, 256)), (256, 256), config)
        probabilities.append(out.probability)
    assert probabilities[0] == pytest.approx(0.9, abs=1e-6)  # 2 % of 256 = 5.12 px: not tapered
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[-1] == pytest.approx(0.3, abs=1e-6)  # the sliver's 0.9 x 0.02 / 5.12 < 0.3
    np.testing.assert_allclose(size_taper(np.array([real, [0, 0, 2.56, 100]]), 5.12), [1.0, 0.5])
    assert size_taper(np.array([[3.0, 3.0, 3.0, 50.0]]), 5.12)[0] == 0.0  # an empty box counts for nothing
    assert (size_taper(np.array([[0, 0, 0.1, 0.1]]), 0.0) == 1.0).all()  # min_side 0 turns it off
