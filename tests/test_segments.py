"""A job's steps in segments on different models (Hybrid SD: a large model early, a small one late),
each segment placed anew by the scheduler; the result equals running the same switch in one process."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cluster.client import Client
from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.loading import load_pipeline
from pipelines.sampling import decode_latents
from runtime.jobs.image_session import RenderSession
from runtime.pool import PoolConfig

STEPS, SWITCH = 8, 5


@pytest.fixture(scope="module")
def other_model(builtin_image_dir, tmp_path_factory):
    """The built-in pipeline with its UNet weights perturbed: another model in the same latent space."""
    path = tmp_path_factory.mktemp("models") / "perturbed"
    shutil.copytree(builtin_image_dir, path)
    weights = path / "unet" / "diffusion_pytorch_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {
        k: v + 0.05 * v.std() * torch.randn(v.shape, generator=generator) if v.numel() > 1 else v
        for k, v in load_file(weights).items()
    }
    save_file(tensors, weights)
    return str(path)


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"))
    client.outputs = root / "outputs"
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _spec(client, other_model, **extra):
    spec = {
        "height": 64,
        "width": 64,
        "steps": STEPS,
        "seed": 4,
        "sampler": "dpm++",  # a multistep sampler: its history must cross the switch
        "output_dir": str(client.outputs),
        "segments": [{"steps": SWITCH}, {"steps": STEPS - SWITCH, "model": other_model}],
    }
    spec.update(extra)
    return spec


def _in_one_process(first_model: str, second_model: str) -> np.ndarray:
    torch.set_num_threads(1)
    task = RenderSpec(
        first_model, "float32", "blue and yellow vertical stripes", "", 64, 64, STEPS, 4, 5.0, sampler="dpm++"
    )
    first = RenderSession(load_pipeline(first_model), task)
    for _ in range(SWITCH):
        first.step()
    second_pipe = load_pipeline(second_model)
    second = RenderSession(
        second_pipe, replace(task, model=second_model), resume=first.loop.state_dict()
    )
    while second.step() < STEPS:
        pass
    image = decode_latents(second_pipe, second.latents())
    return (np.clip(image, 0, 1) * 255).round().astype(int)


def test_two_models_in_segments_equal_the_switch_in_one_process(client, other_model, builtin_image_dir):
    record = client.submit(_spec(client, other_model)).wait(timeout_s=300)
    assert record["state"] == "succeeded", client.job(record["id"]).logs()
    metadata = json.loads(open(record["outputs"]["metadata"]).read())
    segments = metadata["segments"]
    assert [s["steps"] for s in segments] == [[0, SWITCH], [SWITCH, STEPS]]
    assert [s["model_path"] for s in segments] == [str(builtin_image_dir), other_model]
    with Image.open(record["outputs"]["image"]) as png:
        image = np.asarray(png.convert("RGB")).astype(int)
    expected = _in_one_process(str(builtin_image_dir), other_model)
    assert np.abs(image - expected).max() <= 1
    only_first = _in_one_process(str(builtin_image_dir), str(builtin_image_dir))
    assert np.abs(image - only_first).max() > 8  # the second model really ran the late steps


def test_bad_segments_are_refused_at_submit(client, other_model, tmp_path):
    before = client.jobs()
    with pytest.raises(SpecError) as caught:
        client.submit(_spec(client, other_model, steps=STEPS + 1))
    assert caught.value.field == "segments"
    with pytest.raises(SpecError) as caught:
        client.submit(_spec(client, other_model, segments=[{"steps": STEPS, "model": str(tmp_path)}]))
    assert caught.value.field == "segments[0].model"
    with pytest.raises(SpecError) as caught:
        client.submit(_spec(client, other_model, segments=[{"steps": STEPS, "size": 3}]))
    assert caught.value.field == "segments[0].size"
    assert client.jobs() == before
