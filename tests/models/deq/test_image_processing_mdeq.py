"""MdeqImageProcessor against closed-form results: rescale + per-channel normalisation, the ImageNet-style
shorter-side resize + centre crop, the digits preprocessing of the recipe, and bad images named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conversion.convert_deq import original_image_processor
from zoo.models.deq import MdeqConfig, MdeqImageProcessor
from zoo.recipes.deq import digits_processor

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def test_cifar_constant_image_is_rescaled_and_normalised_per_channel():
    processor = original_image_processor(MdeqConfig(image_size=[32, 32]))
    image = np.full((32, 32, 3), 255, dtype=np.uint8)  # channels last, like PIL / numpy
    pixels = processor([image])["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    torch.testing.assert_close(pixels[0, :, 5, 7], torch.tensor(expected), rtol=0, atol=1e-6)


def test_imagenet_resize_shorter_side_then_centre_crop():
    processor = original_image_processor(MdeqConfig(image_size=[224, 224]))
    assert processor.crop_fraction == 0.875
    image = np.zeros((256, 512, 3), dtype=np.float32)
    image[:, 256 - 16:256 + 16] = 255  # a bright vertical band in the middle of the wide image
    pixels = processor([image])["pixel_values"][0]
    assert pixels.shape == (3, 224, 224)
    column = pixels[0].mean(0)
    band = torch.nonzero(column > column.min() + 0.5).flatten()
    # no resize (the shorter side is already 224 / 0.875 = 256), crop columns 144..368: the band 240..272 -> 96..128
    assert band.tolist() == list(range(96, 128))


def test_digits_processor_matches_the_recipe_normalisation():
    digit = np.arange(64, dtype=np.float32).reshape(8, 8) % 17  # values 0..16 as in scikit-learn's digits
    pixels = digits_processor(0.3, 0.4)([digit])["pixel_values"]
    torch.testing.assert_close(pixels[0, 0], (torch.from_numpy(digit) / 16 - 0.3) / 0.4, rtol=0, atol=1e-6)


def test_bad_images_are_named():
    processor = MdeqImageProcessor(size=[8, 8], num_channels=1)
    with pytest.raises(ValueError, match="image 1: holds NaN"):
        processor([np.zeros((8, 8)), np.full((8, 8), np.nan)])
    with pytest.raises(ValueError, match="image 0: 2 channels"):
        processor([torch.zeros(2, 8, 8)])
    with pytest.raises(ValueError, match="crop_fraction needs size"):
        MdeqImageProcessor(crop_fraction=0.875)
    with pytest.raises(ValueError, match="max_pixels"):
        MdeqImageProcessor(max_pixels=16)([np.zeros((8, 8))])
