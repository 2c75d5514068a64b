"""MdeqImageProcessor: images -> `pixel_values` the way an MDEQ folder was trained on them.

Saved next to the weights (preprocessor_config.json + this file), so that without zoo installed

    from transformers import AutoImageProcessor, AutoModelForImageClassification
    processor = AutoImageProcessor.from_pretrained("org/mdeq-digits", trust_remote_code=True)
    model = AutoModelForImageClassification.from_pretrained("org/mdeq-digits", trust_remote_code=True)
    logits = model(**processor(images)).logits

Steps: to float, times `rescale_factor` (1/16 for scikit-learn's 0..16 digits, 1/255 for 8-bit images),
minus `image_mean`, divided by `image_std` (one value, or one per channel), then to `size`: with
`crop_fraction` (the original ImageNet evaluation: 0.875) the shorter side is resized to
size / crop_fraction and the centre cropped, otherwise images of another size are resized (bilinear,
antialiased). Images are H x W (grey), H x W x C (channels last: PIL, numpy) or C x H x W tensors.
Resizing is torch's, not PIL's: expect small differences to torchvision's PIL-based `Resize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

__all__ = ["MdeqImageProcessor"]


class MdeqImageProcessor(BaseImageProcessor):
    """Rescale, normalise and (if needed) resize images into an MDEQ's `pixel_values` [B, C, H, W].

        processor = MdeqImageProcessor(rescale_factor=1 / 16, image_mean=0.3, image_std=0.4, size=[8, 8],
                                       num_channels=1)
        batch = processor(digit_images)        # {"pixel_values": float32 tensor [B, 1, 8, 8]}
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        rescale_factor: float = 1 / 255,
        image_mean: float | Sequence[float] = 0.0,
        image_std: float | Sequence[float] = 1.0,
        size: Sequence[int] | None = None,
        num_channels: int = 3,
        crop_fraction: float | None = None,
        max_pixels: int = 4096 * 4096,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.rescale_factor = float(rescale_factor)
        self.image_mean = image_mean if isinstance(image_mean, (int, float)) else [float(v) for v in image_mean]
        self.image_std = image_std if isinstance(image_std, (int, float)) else [float(v) for v in image_std]
        self.size = [int(v) for v in size] if size is not None else None
        self.num_channels = int(num_channels)
        if crop_fraction is not None and not 0 < float(crop_fraction) <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        if crop_fraction is not None and self.size is None:
            raise ValueError("crop_fraction needs size (the crop)")
        self.crop_fraction = None if crop_fraction is None else float(crop_fraction)
        self.max_pixels = int(max_pixels)

    def _to_chw(self, image: Any, index: int) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            array = image.detach().cpu().float()
            channels_first = True
        else:
            array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # PIL / numpy: channels last
            channels_first = False
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and not channels_first:
            array = array.permute(2, 0, 1)
        elif array.ndim != 3:
            raise ValueError(f"image {index}: expected H x W or 3-d, got shape {tuple(array.shape)}")
        if array.shape[1] * array.shape[2] > self.max_pixels:
            raise ValueError(f"image {index}: {array.shape[1]} x {array.shape[2]} pixels is more than "
                             f"max_pixels={self.max_pixels}")
        if array.shape[0] != self.num_channels:
            if array.shape[0] == 1:
                array = array.expand(self.num_channels, -1, -1)
            elif self.num_channels == 1 and array.shape[0] in (3, 4):
                array = array[:3].mean(0, keepdim=True)
            else:
                raise ValueError(f"image {index}: {array.shape[0]} channels, the model takes {self.num_channels}")
        if not torch.isfinite(array).all():
            raise ValueError(f"image {index}: holds NaN or infinite values")
        return array

    def _resize_and_crop(self, array: torch.Tensor) -> torch.Tensor:
        height, width = array.shape[1:]
        shorter = int(self.size[0] / self.crop_fraction)
        scale = shorter / min(height, width)
        target = (max(shorter, round(height * scale)), max(shorter, round(width * scale)))
        if target != (height, width):
            array = torch.nn.functional.interpolate(array[None], size=target, mode="bilinear", align_corners=False,
                                                    antialias=True)[0]
        top, left = (target[0] - self.size[0]) // 2, (target[1] - self.size[1]) // 2
        return array[:, top:top + self.size[0], left:left + self.size[1]]

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        if return_tensors not in (None, "pt"):
            raise ValueError(f"MdeqImageProcessor returns PyTorch tensors only, got return_tensors={return_tensors!r}")
        single = isinstance(images, torch.Tensor) and images.ndim <= 3 or (
            isinstance(images, np.ndarray) and images.ndim <= 2) or hasattr(images, "getpixel")
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        elif isinstance(images, np.ndarray) and images.ndim >= 3 and not single:
            images = list(images)
        elif single:
            images = [images]
        if len(images) == 0:
            raise ValueError("no images given")
        out = []
        for index, image in enumerate(images):
            array = self._to_chw(image, index) * self.rescale_factor
            mean = torch.as_tensor(self.image_mean, dtype=torch.float32).reshape(-1, 1, 1)
            std = torch.as_tensor(self.image_std, dtype=torch.float32).reshape(-1, 1, 1)
            array = (array - mean) / std
            if self.crop_fraction is not None:
                array = self._resize_and_crop(array)
            elif self.size is not None and list(array.shape[1:]) != self.size:
                array = torch.nn.functional.interpolate(array[None], size=tuple(self.size), mode="bilinear",
                                                        align_corners=False, antialias=True)[0]
            out.append(array)
        shapes = {tuple(a.shape) for a in out}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes {sorted(shapes)}: set `size` to resize them to one")
        return BatchFeature({"pixel_values": torch.stack(out)})
