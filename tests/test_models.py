"""Video encoders and the registry: shapes for clips and single frames, the feature grid, export to torchvision,
gradients."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import video as tv_video

from mmssl.models import VIDEO_ENCODERS, VideoEncoder, build_video_encoder, repeat_frames
from mmssl.models.heads import (
    barlow_twins_projector,
    byol_predictor,
    byol_projector,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
    vicreg_expander,
)
from mmssl.registry import Registry, UnknownNameError

TORCHVISION_DIMS = {"r3d_18": 512, "mc3_18": 512, "r2plus1d_18": 512, "s3d": 1024}
FEATURE_DIMS = {**TORCHVISION_DIMS, "tiny3d": 256, "vit_tiny": 192}
CLIP_SIZES = {name: (4, 32, 32) for name in TORCHVISION_DIMS} | {"tiny3d": (8, 64, 64), "vit_tiny": (8, 64, 64)}  # T, H, W


@pytest.fixture(scope="module", params=sorted(FEATURE_DIMS))
def named_encoder(request: pytest.FixtureRequest) -> tuple[str, VideoEncoder]:
    torch.manual_seed(0)
    return request.param, build_video_encoder(request.param)


def test_registry_lists_every_encoder() -> None:
    assert set(FEATURE_DIMS) <= set(VIDEO_ENCODERS)


def test_clip_and_frame_shapes(named_encoder: tuple[str, VideoEncoder]) -> None:
    name, encoder = named_encoder
    frames, height, width = CLIP_SIZES[name]
    assert encoder.feature_dim == FEATURE_DIMS[name]
    encoder.eval()
    with torch.no_grad():
        for num_frames in (frames, 1):
            features = encoder(torch.randn(2, 3, num_frames, height, width))
            assert features.shape == (2, FEATURE_DIMS[name])
            assert torch.isfinite(features).all()


@pytest.fixture(scope="module", params=sorted(VIDEO_ENCODERS))
def registered_encoder(request: pytest.FixtureRequest) -> VideoEncoder:
    torch.manual_seed(0)
    return build_video_encoder(request.param).eval()


def test_feature_map_is_the_grid_forward_pools(registered_encoder: VideoEncoder) -> None:
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        grid = registered_encoder.feature_map(x)
        features = registered_encoder(x)
        assert grid.ndim == 5 and grid.shape[:2] == (1, registered_encoder.map_dim)
        assert min(grid.shape[2:]) >= 1
        assert torch.equal(registered_encoder.pool(grid), features)


def test_vit_grid_cells_are_its_tokens_before_the_final_norm() -> None:
    torch.manual_seed(0)
    encoder = build_video_encoder("vit_tiny").eval()
    x = torch.randn(2, 3, 4, 32, 48)
    with torch.no_grad():
        grid = encoder.feature_map(x)
        assert grid.shape == (2, 192, *encoder.grid(x.shape)) == (2, 192, 2, 4, 6)
        tokens = encoder.norm(grid.flatten(2).transpose(1, 2))  # (t, h, w) order, as the tokens are
        assert torch.allclose(tokens, encoder.forward_features(x), atol=1e-5)
        assert torch.allclose(encoder.norm(grid.mean(dim=(2, 3, 4))), encoder(x), atol=1e-5)


def test_tiny3d_grid_is_spatially_resolved() -> None:
    torch.manual_seed(0)
    encoder = build_video_encoder("tiny3d").eval()
    x = torch.randn(1, 3, 8, 64, 64)
    corner = x.clone()
    corner[..., :8, :8] += 1.0  # the top-left 8x8 pixels of every frame
    with torch.no_grad():
        change = (encoder.feature_map(corner) - encoder.feature_map(x)).abs().amax(dim=(0, 1, 2))
    assert change.shape == (4, 4)
    assert change[0, 0] > 0
    assert change[-1, -1] == 0 and change[2:, 2:].eq(0).all()  # beyond the receptive field of the corner


def test_gradients_reach_first_layer(named_encoder: tuple[str, VideoEncoder]) -> None:
    name, encoder = named_encoder
    encoder.train()
    encoder.zero_grad()
    encoder(torch.randn(2, 3, *CLIP_SIZES[name])).square().mean().backward()
    first = next(encoder.parameters())
    assert first.ndim == 5 and first.shape[1] == 3  # the first conv3d, reading RGB
    assert first.grad is not None and first.grad.abs().sum() > 0


def _torchvision_map(model: nn.Module, x: Tensor) -> Tensor:
    """The last stage's output, computed from torchvision's own submodules."""
    if isinstance(model, tv_video.S3D):
        return model.features(x)
    return nn.Sequential(model.stem, model.layer1, model.layer2, model.layer3, model.layer4)(x)


def _torchvision_pool(model: nn.Module, grid: Tensor) -> Tensor:
    """Pooled backbone features of that output, as torchvision pools them."""
    return grid.mean(dim=(2, 3, 4)) if isinstance(model, tv_video.S3D) else model.avgpool(grid).flatten(1)


@pytest.mark.parametrize("name", sorted(TORCHVISION_DIMS))
def test_export_loads_into_torchvision(name: str) -> None:
    torch.manual_seed(0)
    encoder = build_video_encoder(name)
    x = torch.randn(2, 3, 8, 32, 32)
    encoder.train()
    with torch.no_grad():
        encoder(x)  # moves BatchNorm running statistics away from their defaults
    model = getattr(tv_video, name)(num_classes=7)
    missing, unexpected = model.load_state_dict(encoder.export_state_dict(), strict=False)
    classifier = "classifier." if name == "s3d" else "fc."
    assert unexpected == []
    assert missing and all(key.startswith(classifier) for key in missing)
    encoder.eval()
    model.eval()
    with torch.no_grad():
        features, grid, torchvision_grid = encoder(x), encoder.feature_map(x), _torchvision_map(model, x)
    assert torch.equal(features, _torchvision_pool(model, torchvision_grid))
    assert torch.equal(grid, torchvision_grid)
    assert torch.allclose(grid.mean(dim=(2, 3, 4)), features, atol=1e-6)  # features are the grid's mean


def test_s3d_stretches_short_clips_to_five_frames() -> None:
    encoder = build_video_encoder("s3d").eval()
    frame = torch.randn(2, 3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(frame), encoder(frame.expand(-1, -1, 5, -1, -1)))
        assert torch.equal(encoder.feature_map(frame), encoder.feature_map(frame.expand(-1, -1, 5, -1, -1)))


def test_repeat_frames_keeps_order() -> None:
    clip = torch.arange(3.0).view(1, 1, 3, 1, 1)
    assert repeat_frames(clip, 5).flatten().tolist() == [0, 0, 1, 1, 2, 2]
    assert repeat_frames(clip, 3) is clip


def test_rejects_wrong_layout() -> None:
    encoder = build_video_encoder("tiny3d")
    for method in (encoder, encoder.feature_map):
        with pytest.raises(ValueError, match=r"float \[B, 3, T, H, W\]"):
            method(torch.randn(2, 8, 3, 64, 64))  # [B, T, C, H, W]
        with pytest.raises(ValueError, match="uint8"):
            method(torch.zeros(2, 3, 8, 64, 64, dtype=torch.uint8))


def test_build_passes_kwargs() -> None:
    encoder = build_video_encoder("tiny3d", widths=(8, 16), in_channels=1, dim=32)
    assert encoder.feature_dim == 32
    assert encoder(torch.randn(2, 1, 4, 16, 16)).shape == (2, 32)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError, match="unknown video encoder 'nope'; known: .*r3d_18.*tiny3d"):
        build_video_encoder("nope")


def test_registry_register_and_duplicate() -> None:
    registry: Registry[nn.Module] = Registry("thing")

    @registry.register("linear")
    def make_linear(width: int = 4) -> nn.Module:
        return nn.Linear(width, width)

    assert make_linear(2).in_features == 2  # the decorator returns the builder unchanged
    assert "linear" in registry and list(registry) == ["linear"] and len(registry) == 1
    assert registry.build("linear", width=3).out_features == 3
    with pytest.raises(ValueError, match="already registered"):
        registry.register("linear")(make_linear)
    with pytest.raises(UnknownNameError, match="known: linear"):
        registry.build("conv")


def test_named_heads_have_their_papers_layers() -> None:
    """Linear widths and BatchNorm placement of each method's projector and predictor."""
    def layers(module: nn.Module) -> list[tuple[str, int]]:
        return [(type(m).__name__, m.out_features if isinstance(m, nn.Linear) else m.num_features)
                for m in module.modules() if isinstance(m, nn.Linear | nn.BatchNorm1d)]

    two = [("Linear", 32), ("BatchNorm1d", 32), ("Linear", 8)]
    three = [("Linear", 32), ("BatchNorm1d", 32), ("Linear", 32), ("BatchNorm1d", 32), ("Linear", 8)]
    assert layers(simclr_projector(16, 32, 8)) == two
    assert layers(byol_projector(16, 32, 8)) == two
    assert layers(byol_predictor(8, 32)) == two
    assert layers(simsiam_projector(16, 32, 8)) == [*three, ("BatchNorm1d", 8)]  # BN on the output too
    assert not simsiam_projector(16, 32, 8)[-1].affine
    assert layers(simsiam_predictor(8)) == [("Linear", 2), ("BatchNorm1d", 2), ("Linear", 8)]  # bottleneck
    assert layers(barlow_twins_projector(16, 32, 8)) == three
    assert layers(vicreg_expander(16, 32, 8)) == three
    z = simclr_projector(16, 32, 8).eval()(torch.randn(4, 16))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4))  # SimCLR and MoCo compare L2-normalised embeddings
