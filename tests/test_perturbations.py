"""Contract tests over the perturbation registry (as timm's tests/test_models.py does over
its models), and physical checks of each perturbation on a real photo
(skimage.data.astronaut, NASA, public domain)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from audit.robustness.perturbations import (  # noqa: E402
    FAMILIES,
    JPEG_QUALITY,
    create_perturbation,
    default_plan,
    list_perturbations,
    luminance,
    register_perturbation,
)

ALL = [n for n in list_perturbations() if not create_perturbation(n).recrops]  # tensor changes
CROPS = list_perturbations(family="crop")  # the photo cut again (tests/test_raw_photos.py)


@pytest.fixture(scope="module")
def photo():
    """The astronaut's face region as a (4, 3, 112, 112) batch in [0, 1]."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()[30:230, 140:340].copy()).permute(2, 0, 1)
    x = F.interpolate(img[None].float() / 255, size=(112, 112), mode="area")
    return x.repeat(4, 1, 1, 1)


def _highpass_energy(x):
    """Mean squared Laplacian of the luma: the image's fine detail."""
    y = luminance(x)
    lap = (
        -4 * y[..., 1:-1, 1:-1]
        + y[..., :-2, 1:-1]
        + y[..., 2:, 1:-1]
        + y[..., 1:-1, :-2]
        + y[..., 1:-1, 2:]
    )
    return float((lap**2).mean())


def test_the_registry_covers_every_family_of_the_issue():
    assert len(ALL) >= 20
    families = {create_perturbation(n).family for n in ALL + CROPS}
    assert families == set(FAMILIES)
    assert list_perturbations("*blur") == ["gaussian_blur", "motion_blur"]
    assert list_perturbations(family="occlusion") == ["sunglasses", "surgical_mask", "patch"]
    # The default plan is about 110 passes per photo, as the issue says.
    assert 100 <= len(default_plan()) <= 115


def test_registering_a_name_twice_or_an_unknown_family_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_perturbation("jpeg", "compression", str)(lambda *a: None)
    with pytest.raises(ValueError, match="unknown perturbation family"):
        register_perturbation("new", "weather", str)
    with pytest.raises(ValueError, match="unknown perturbation"):
        create_perturbation("fog")


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_severity_zero_is_the_identity(name, photo):
    p = create_perturbation(name)
    assert torch.equal(p(photo, 0), photo)


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_shape_dtype_and_range_are_kept(name, photo):
    p = create_perturbation(name)
    for s in p.levels:
        y = p(photo, s, [1, 2, 3, 4])
        assert y.shape == photo.shape and y.dtype == photo.dtype and y.device == photo.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, photo)
        assert p.describe(s) and p.describe(s) != p.describe(0)


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_the_same_seed_gives_the_same_image_whatever_the_batch(name, photo):
    p = create_perturbation(name)
    s = p.levels[-1]
    whole = p(photo, s, [11, 12, 13, 14])
    alone = p(photo[2:3], s, [13])
    assert torch.allclose(whole[2:3], alone, atol=1e-6)
    assert torch.equal(p(photo, s, [11, 12, 13, 14]), whole)


@pytest.mark.parametrize(
    "name",
    [n for n in ALL if len(create_perturbation(n).levels) > 1],
    ids=[n for n in ALL if len(create_perturbation(n).levels) > 1],
)
def test_damage_grows_with_severity(name, photo):
    p = create_perturbation(name)
    damage = [float((p(photo, s, [5, 6, 7, 8]) - photo).abs().mean()) for s in p.levels]
    assert all(b > a for a, b in zip(damage, damage[1:])), damage


def test_crop_variants_are_registered_and_never_applied_to_a_cut_image(photo):
    assert set(CROPS) == {"crop_margin", "landmark_jitter", "alignment"}
    for name in CROPS:
        p = create_perturbation(name)
        assert p.recrops and p.family == "crop" and p.describe(p.levels[-1])
        with pytest.raises(ValueError, match="changes the crop"):
            p(photo, p.levels[-1], [1, 2, 3, 4])


def test_random_perturbations_differ_between_seeds(photo):
    for name in ["gaussian_noise", "poisson_noise", "patch", "motion_blur", "crop_jitter"]:
        p = create_perturbation(name)
        a, b = p(photo[:1], 3, [1]), p(photo[:1], 3, [2])
        assert not torch.equal(a, b), name


def test_darker_lighting_lowers_brightness(photo):
    means = [
        float(luminance(create_perturbation("brightness")(photo, s)).mean()) for s in (0, 1, 3, 5)
    ]
    assert means == sorted(means, reverse=True)
    # severity 3 is one stop: half the light, in linear light
    from audit.robustness.perturbations import srgb_to_linear

    lin = srgb_to_linear(photo).mean()
    lin3 = srgb_to_linear(create_perturbation("brightness")(photo, 3)).mean()
    assert float(lin3 / lin) == pytest.approx(0.5, rel=0.02)


def test_shading_darkens_one_side_only(photo):
    y = create_perturbation("shading")(photo, 5, [1, 2, 3, 4])
    ratio = luminance(y) / luminance(photo).clamp(min=1e-3)
    left, right = ratio[..., :, :10].mean(dim=(1, 2, 3)), ratio[..., :, -10:].mean(dim=(1, 2, 3))
    assert bool(((left - right).abs() > 0.3).all())  # one side about full, the other dim


def test_contrast_saturation_hue_and_colour_temperature(photo):
    lum = luminance(photo)
    low = luminance(create_perturbation("contrast")(photo, 2))
    assert float(low.std() / lum.std()) == pytest.approx(0.70, abs=0.02)
    chroma = (photo - lum).abs().mean()
    vivid = create_perturbation("saturation")(photo, 2)
    assert float((vivid - luminance(vivid)).abs().mean() / chroma) > 1.3
    turned = create_perturbation("hue")(photo, 5)
    assert float((luminance(turned) - lum).abs().mean()) < 0.03  # hue moves, brightness stays
    warm = create_perturbation("color_temperature")(photo, 5)
    rb = photo[:, 0].mean() / photo[:, 2].mean()
    assert float(warm[:, 0].mean() / warm[:, 2].mean()) > 1.5 * float(rb)


def test_blur_and_downscale_remove_high_frequencies(photo):
    base = _highpass_energy(photo)
    for name in ["gaussian_blur", "motion_blur", "downscale"]:
        p = create_perturbation(name)
        energies = [_highpass_energy(p(photo, s)) for s in p.levels]
        assert energies[0] < base and energies[-1] < 0.5 * base, (name, base, energies)


def test_skin_smoothing_removes_fine_texture_and_keeps_edges():
    """A flat 'skin' with faint wrinkles (texture of 2% of the range) beside a strong edge."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 112, 112), 0.6) + 0.02 * torch.randn(1, 1, 112, 112, generator=g)
    x[..., :, 80:] = 0.1  # a dark region: the face's outline
    y = create_perturbation("skin_smoothing")(x.clamp(0, 1), 5)
    texture = lambda im: float(im[..., 10:100, 10:60].std())  # noqa: E731
    assert texture(y) < 0.5 * texture(x)
    edge = lambda im: float(im[..., :, 75].mean() - im[..., :, 85].mean())  # noqa: E731
    assert edge(y) > 0.8 * edge(x)


def test_noise_has_its_stated_size():
    grey = torch.full((2, 3, 112, 112), 0.5)
    y = create_perturbation("gaussian_noise")(grey, 4, [1, 2])
    assert float((y - grey).std()) == pytest.approx(0.08, rel=0.03)
    # shot noise: variance grows with the signal (Poisson), unlike read noise
    dim, bright = torch.full((1, 3, 112, 112), 0.2), torch.full((1, 3, 112, 112), 0.8)
    p = create_perturbation("poisson_noise")
    from audit.robustness.perturbations import srgb_to_linear

    v_dim = float(srgb_to_linear(p(dim, 3, [1])).var())
    v_bright = float(srgb_to_linear(p(bright, 3, [1])).var())
    assert v_bright > 3 * v_dim


def test_jpeg_is_a_real_codec_round_trip(photo):
    from torchvision.io import decode_jpeg, encode_jpeg

    y = create_perturbation("jpeg")(photo[:1], 4)
    u8 = (photo[0] * 255).round().to(torch.uint8)
    expected = decode_jpeg(encode_jpeg(u8, quality=JPEG_QUALITY[4])).float() / 255
    assert torch.equal(y[0], expected)
    # 8x8 block edges: the jump across block borders exceeds the jump inside blocks
    d = (y[0, :, :, 1:] - y[0, :, :, :-1]).abs().mean(dim=(0, 1))
    border = d[7::8].mean()
    inside = torch.cat([d[k::8] for k in range(7)]).mean()
    assert float(border) > float(inside)


def test_flip_and_geometry(photo):
    assert torch.equal(create_perturbation("flip")(photo, 1), photo.flip(-1))
    # an in-plane rotation keeps the centre pixel and moves the corners
    y = create_perturbation("rotation")(photo, 5, [1, 1, 1, 1])
    assert float((y[..., 54:58, 54:58] - photo[..., 54:58, 54:58]).abs().mean()) < 0.02
    assert float((y[..., :10, :10] - photo[..., :10, :10]).abs().mean()) > 0.05
    # yaw foreshortens one side: the two halves change unequally
    w = create_perturbation("yaw")(photo, 5, [1, 1, 1, 1])
    left = float((w[..., :56] - photo[..., :56]).abs().mean())
    right = float((w[..., 56:] - photo[..., 56:]).abs().mean())
    assert abs(left - right) > 0.01


def test_occlusions_cover_their_region_only(photo):
    from audit.robustness.perturbations import LAYOUTS

    layout = LAYOUTS["arcface"]
    eye_row = int(layout.eye_y * 112)
    glasses = create_perturbation("sunglasses", layout="arcface")(photo, 5)
    assert float(luminance(glasses)[..., eye_row, 30:50].mean()) < 0.1  # opaque lens
    assert torch.equal(glasses[..., 100:, :], photo[..., 100:, :])  # chin untouched
    mask = create_perturbation("surgical_mask", layout="arcface")(photo, 5)
    assert torch.equal(mask[..., :eye_row, :], photo[..., :eye_row, :])  # eyes and above kept
    assert float((mask[..., 100:, 40:70] - photo[..., 100:, 40:70]).abs().mean()) > 0.1
    covered = [
        float((create_perturbation("patch")(photo, s, [3] * 4) != photo).float().mean())
        for s in (1, 5)
    ]
    assert covered[0] == pytest.approx(0.04, abs=0.01) and covered[1] == pytest.approx(
        0.20, abs=0.02
    )


def test_bad_calls_say_what_is_wrong(photo):
    p = create_perturbation("jpeg")
    with pytest.raises(ValueError, match="severity 7"):
        p(photo, 7)
    with pytest.raises(ValueError, match="2 seeds for 4 images"):
        p(photo, 1, [1, 2])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        p(photo[0], 1)
    with pytest.raises(ValueError, match="unknown face layout"):
        create_perturbation("sunglasses", layout="cartoon")
