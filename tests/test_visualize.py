"""Looking inside a model: Grad-CAM, kernel and feature-map grids, and what TensorBoard gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_in_process
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from torchcamp.tasks.models import LeNet
from torchcamp.trainer import visualize
from torchcamp.trainer.errors import UserError

SIZE = 32  # synthetic images: SIZE x SIZE, one channel
SQUARE = 8  # the object that makes class 1: a filled square
BAR = (2, 12)  # the distractor every image has: a thin bar


class TinyCNN(nn.Module):
    """Two convolutions at full resolution, global average pooling, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def squares_and_bars(count: int, generator: torch.Generator):
    """Noisy images that all hold a bar; class 1 also holds a square elsewhere (its box is
    returned, (top, left)), class 0 a second bar. Only the square decides the class."""
    images = 0.1 * torch.randn(count, 1, SIZE, SIZE, generator=generator)
    labels = torch.arange(count) % 2
    boxes = []
    for image, label in zip(images, labels, strict=True):
        # The square in one half of the image, the bar in the other, so they never overlap.
        top_half = bool(torch.randint(2, (), generator=generator))
        square_rows = (0, SIZE // 2 - SQUARE) if top_half else (SIZE // 2, SIZE - SQUARE)
        bar_rows = (SIZE // 2, SIZE - BAR[0]) if top_half else (0, SIZE // 2 - BAR[0])
        top = int(torch.randint(square_rows[0], square_rows[1] + 1, (), generator=generator))
        left = int(torch.randint(0, SIZE - SQUARE + 1, (), generator=generator))
        bar_top = int(torch.randint(bar_rows[0], bar_rows[1] + 1, (), generator=generator))
        bar_left = int(torch.randint(0, SIZE - BAR[1] + 1, (), generator=generator))
        image[0, bar_top : bar_top + BAR[0], bar_left : bar_left + BAR[1]] = 1.0
        if label == 1:
            image[0, top : top + SQUARE, left : left + SQUARE] = 1.0
        else:  # a second bar where the square would be
            image[0, top : top + BAR[0], left : left + BAR[1] // 2] = 1.0
        boxes.append((top, left))
    return images, labels, boxes


@pytest.fixture(scope="module")
def trained_cnn() -> TinyCNN:
    """TinyCNN taught squares from bars (60 steps of Adam, a second or so on the CPU)."""
    torch.manual_seed(0)
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        images, labels, _ = squares_and_bars(32, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_grad_cam_puts_the_heat_on_the_square_that_decides_the_class(trained_cnn):
    images, labels, boxes = squares_and_bars(16, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (trained_cnn(images).argmax(1) == labels).float().mean() == 1.0
    layer_name = visualize.grad_cam_layer(trained_cnn)
    assert layer_name == "features"  # the block before global pooling
    layer = visualize.find_layer(trained_cnn, layer_name)
    squares = labels == 1
    heatmaps = visualize.grad_cam(trained_cnn, layer, images[squares])
    assert heatmaps.shape == (int(squares.sum()), SIZE, SIZE)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    square_boxes = [box for box, is_square in zip(boxes, squares, strict=True) if is_square]
    for heat, (top, left) in zip(heatmaps, square_boxes, strict=True):
        inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        inside[max(top - 1, 0) : top + SQUARE + 1, max(left - 1, 0) : left + SQUARE + 1] = True
        peak = divmod(int(heat.argmax()), SIZE)
        assert inside[peak], (peak, top, left)
        # Most of the heat is on the square (about 10 % of the image), not on the bar.
        assert heat[inside].sum() > 0.6 * heat.sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grad_cam_and_feature_maps_on_cuda_match_the_cpu(trained_cnn):
    import copy

    images, _, _ = squares_and_bars(4, torch.Generator().manual_seed(2))
    layer_name = visualize.grad_cam_layer(trained_cnn)
    on_gpu = copy.deepcopy(trained_cnn).cuda()
    expected = visualize.grad_cam(
        trained_cnn, visualize.find_layer(trained_cnn, layer_name), images
    )
    got = visualize.grad_cam(on_gpu, visualize.find_layer(on_gpu, layer_name), images.cuda())
    assert got.device.type == "cpu" and torch.allclose(got, expected, atol=1e-4)
    conv = visualize.first_conv(trained_cnn)
    maps = visualize.feature_maps(on_gpu, visualize.find_layer(on_gpu, conv), images[0].cuda())
    reference = visualize.feature_maps(
        trained_cnn, visualize.find_layer(trained_cnn, conv), images[0]
    )
    assert torch.allclose(maps, reference, atol=1e-4)


def test_grad_cam_leaves_modes_flags_gradients_and_hooks_as_they_were(trained_cnn):
    model = trained_cnn
    model.train()
    model.features[1].eval()  # a submodule in its own mode
    model.features.requires_grad_(False)  # frozen, as finetune=frozen leaves a backbone
    model.zero_grad(set_to_none=True)
    try:
        images, _, _ = squares_and_bars(4, torch.Generator().manual_seed(2))
        heatmaps = visualize.grad_cam(model, model.features, images, torch.tensor([1, 1, 1, 1]))
        assert heatmaps.shape == (4, SIZE, SIZE)
        assert model.training and not model.features[1].training and model.fc.training
        assert not any(p.requires_grad for p in model.features.parameters())
        assert all(p.requires_grad for p in model.fc.parameters())
        assert all(p.grad is None for p in model.parameters())
        assert not model.features._forward_hooks and not model.features._backward_hooks
    finally:
        model.requires_grad_(True)
        model.eval()


def test_grad_cam_gives_none_without_class_scores():
    gan_discriminator = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(0))  # one score per image
    assert (
        visualize.grad_cam(gan_discriminator, gan_discriminator[0], torch.rand(2, 3, 8, 8)) is None
    )
    assert not gan_discriminator[0]._forward_hooks


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel", "shape"),
    [
        (3, 6, 5, (3, 44, 254)),  # RGB kernels: 6 colour tiles of 40 px (5 px x 8) in a row
        (6, 16, 5, (3, 422, 254)),  # grey: 6 input channels a row, 64 // 6 = 10 kernels
        (1, 4, 3, (3, 166, 43)),  # grey: one tile a row, 39 px (3 px x 13)
    ],
)
def test_kernel_grid_tiles(in_channels, out_channels, kernel, shape):
    grid = visualize.kernel_grid(nn.Conv2d(in_channels, out_channels, kernel).weight)
    assert grid.dtype == torch.uint8 and tuple(grid.shape) == shape
    assert grid.max() == 255  # each tile scaled to its own range


def test_feature_maps_come_from_a_hook_that_is_removed():
    torch.manual_seed(0)
    model = LeNet(num_classes=2).train()
    image = torch.randn(3, 32, 32)
    maps = visualize.feature_maps(model, model.conv1, image)
    assert torch.allclose(maps, model.conv1(image[None])[0])
    assert not model.conv1._forward_hooks and model.training
    # 6 maps of 28 px, enlarged 3x to 84 px, in a 3x2 grid with 2 px padding.
    grid = visualize.feature_map_grid(model, model.conv1, image)
    assert grid.dtype == torch.uint8 and tuple(grid.shape) == (3, 2 * 86 + 2, 3 * 86 + 2)
    with pytest.raises(UserError, match="not feature maps"):
        visualize.feature_maps(model, model.fc1, image)
    with pytest.raises(UserError, match="never pass through"):
        visualize.feature_maps(model, nn.Conv2d(3, 3, 1), image)  # not a part of the model


def test_layers_are_found_by_name_or_picked():
    model = LeNet(num_classes=2)
    assert visualize.first_conv(model) == "conv1"
    assert visualize.grad_cam_layer(model) == "conv2"  # no pooling module: the last Conv2d
    assert visualize.find_layer(model, "conv2") is model.conv2
    with pytest.raises(UserError) as error:
        visualize.find_layer(model, "conv9", "callbacks.model_views.feature_layer")
    message = str(error.value)
    assert message.startswith("callbacks.model_views.feature_layer=conv9: LeNet has no module")
    assert "conv1, conv2, fc1" in message


def test_input_grid_undoes_the_normalisation():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    image = torch.full((3, 32, 32), 0.2)
    normalised = (image - 0.5) / 0.25
    grid = visualize.input_grid(normalised[None].repeat(3, 1, 1, 1), mean, std)
    # Three 32 px images enlarged to 64 px, one row, 2 px padding.
    assert tuple(grid.shape) == (3, 68, 200)
    assert grid[:, 2:66, 2:66].unique().tolist() == [51]  # 0.2 * 255
    # Images of different sizes (detection) are resized to the first one's.
    grid = visualize.input_grid([torch.rand(3, 80, 100), torch.rand(3, 40, 90)])
    assert tuple(grid.shape) == (3, 84, 206)


def read_events(tb_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


VIEW_TAGS = {
    "train/input_batch",
    "kernels/conv1",
    "feature_maps/conv1",
    "grad_cam/conv2",
    "train/confusion_matrix",
    "val/confusion_matrix",
    "test/confusion_matrix",
}
SWITCHES_OFF = [
    *(
        f"callbacks.model_views.{switch}=false"
        for switch in ("input_grid", "graph", "kernels", "feature_maps", "grad_cam")
    ),
    "callbacks.tensorboard.confusion_matrix=false",
]


@pytest.mark.slow
def test_a_run_logs_the_views_and_switches_turn_them_off(monkeypatch, tmp_path):
    common = ("task=rmb", "data.synthetic=true", "trainer.max_epochs=1", "device=cpu")
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    code, on = train_in_process(monkeypatch, tmp_path / "on", *common)
    assert code == 0
    code, off = train_in_process(monkeypatch, tmp_path / "off", *common, *SWITCHES_OFF)
    assert code == 0

    events = read_events(on / "tb")
    assert set(events.Tags()["images"]) >= VIEW_TAGS
    assert events.Tags()["graph"]
    assert "LeNet" in str(events.Graph())
    # The input batch at the start; the views after the one epoch (4 steps).
    assert [e.step for e in events.Images("train/input_batch")] == [0]
    for tag in ("kernels/conv1", "feature_maps/conv1", "grad_cam/conv2", "val/confusion_matrix"):
        assert [e.step for e in events.Images(tag)] == [4], tag
    hparams = set(events.PluginTagToContent("hparams"))
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= hparams

    events = read_events(off / "tb")
    assert not VIEW_TAGS & set(events.Tags()["images"])
    assert not events.Tags()["graph"]
    # Looking does not change what is learned.
    metrics_on = json.loads((on / "metrics.json").read_text())
    metrics_off = json.loads((off / "metrics.json").read_text())
    assert metrics_on["train/loss"] == metrics_off["train/loss"]
    assert metrics_on["test/loss"] == metrics_off["test/loss"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("grad_cam_layer=conv7", "callbacks.model_views.grad_cam_layer=conv7: LeNet has no"),
        (
            "feature_layer=fc1",
            "callbacks.model_views.feature_layer=fc1: this Linear gives (1, 120)",
        ),
        (
            "grad_cam_layer=fc2",
            "callbacks.model_views.grad_cam_layer=fc2: this Linear gives (1, 84)",
        ),
    ],
    ids=["unknown name", "linear feature layer", "linear grad-cam layer"],
)
def test_a_bad_layer_stops_the_run_before_training(
    monkeypatch, tmp_path, capsys, setting, expected
):
    code, run_dir = train_in_process(
        monkeypatch, tmp_path, "data.synthetic=true", f"callbacks.model_views.{setting}"
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "callbacks.model_views.num_images=0",
            "callbacks.model_views.num_images=0 is not allowed: use an integer",
        ),
        (
            "callbacks.model_views.graph=maybe",
            "callbacks.model_views.graph=maybe is not allowed: use true or false",
        ),
        (
            "callbacks.model_views.feature_layer=''",
            "callbacks.model_views.feature_layer= is not allowed: use null or",
        ),
    ],
)
def test_model_views_values_are_checked(override, message):
    from hydra import compose, initialize_config_module

    from torchcamp.trainer.app.validation import validate

    with initialize_config_module("torchcamp.conf", version_base="1.3"):
        cfg = compose("config", overrides=[override])
    with pytest.raises(UserError) as error:
        validate(cfg)
    assert str(error.value).startswith(message)


def hparams_sessions(logdir: Path):
    """What TensorBoard's HParams tab shows for ``logdir``: the hyperparameter columns and, per
    session (run), its hyperparameters and metric values, from the plugin's own code."""
    from google.protobuf import json_format
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    hparams_context = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    )
    request_context = context.RequestContext()
    experiment = hparams_context.experiment_from_metadata(
        request_context,
        "",
        True,
        hparams_context.hparams_metadata(request_context, ""),
        hparams_context.hparams_from_data_provider(request_context, "", None),
    )
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, allowed_statuses=[api_pb2.STATUS_SUCCESS]
    )
    groups = list_session_groups.Handler(request_context, hparams_context, "", request).run()
    sessions = {
        group.name: (
            {name: json_format.MessageToDict(value) for name, value in group.hparams.items()},
            {metric.name.tag: metric.value for metric in group.metric_values},
        )
        for group in groups.session_groups
    }
    return {info.name for info in experiment.hparam_infos}, sessions


@pytest.mark.slow
def test_hparams_tab_lines_up_every_job_of_a_sweep(monkeypatch, tmp_path):
    code, _ = train_in_process(
        monkeypatch,
        tmp_path,
        "-m",
        "optimizer=sgd,adam",
        "data.synthetic=true",
        "trainer.max_epochs=1",
        "hydra.sweep.dir=sweep",
    )
    assert code == 0
    columns, sessions = hparams_sessions(tmp_path / "sweep")
    # Each job's own hyperparameters are columns, those only the other job has included.
    assert {"optimizer", "optimizer.lr", "optimizer.momentum", "optimizer.betas"} <= columns
    assert set(sessions) == {"0/tb", "1/tb"}
    for job, optimizer in (("0", "sgd"), ("1", "adam")):
        hparams, values = sessions[f"{job}/tb"]
        assert hparams["optimizer"] == optimizer
        final = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        for name in ("val/acc", "test/acc", "test/loss", "best/val/acc"):
            assert values[name] == pytest.approx(final[name]), name
