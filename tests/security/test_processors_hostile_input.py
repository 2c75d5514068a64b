"""Hostile or malformed input to the processors: a clear error naming the input, never NaN output, a silently
reinterpreted array or a cryptic backend error (issue 13, item 11)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from zoo.models.deq import DeqConvergenceWarning, MdeqConfig, MdeqForImageClassification, MdeqModel
from zoo.models.nasbert.resources import mlnet_tokenizer
from zoo.models.priorgrad.feature_extraction_priorgrad import PriorGradFeatureExtractor

# -- MDEQ ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mdeq():
    torch.manual_seed(0)
    config = MdeqConfig(num_channels=[4, 8], head_channels=[2, 4], final_chansize=8, expansion_factor=2, num_groups=2,
                        image_size=[8, 8], num_labels=3, f_max_iter=4, b_max_iter=4, f_tol=1e-4, b_tol=1e-4)
    return MdeqForImageClassification(config).eval()


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        return call()


@pytest.mark.parametrize("unrolled_steps", [None, 3], ids=["solver", "unrolled"])
def test_mdeq_overflowing_input_is_refused_naming_the_sample(mdeq, unrolled_steps):
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    images[1] *= 1e30
    with pytest.raises(ValueError, match=r"pixel_values: the equilibrium solve produced NaN or infinite states for "
                                         r"sample\(s\) \[1\]"):
        _quiet(lambda: mdeq(pixel_values=images, unrolled_steps=unrolled_steps))
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        _quiet(lambda: mdeq.mdeq(pixel_values=images, unrolled_steps=unrolled_steps))
    images[1] /= 1e30
    assert torch.isfinite(_quiet(lambda: mdeq(pixel_values=images)).logits).all()


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 3, 0, 8), (2, 3, 8, 0)])
def test_mdeq_empty_batch_or_image_is_refused(mdeq, shape):
    with pytest.raises(ValueError, match=r"pixel_values is empty \(shape " + str(shape).replace("(", r"\(").replace(")", r"\)")):
        mdeq(pixel_values=torch.zeros(shape))


def test_mdeq_integer_pixels_are_refused(mdeq):
    with pytest.raises(ValueError, match="pixel_values must be a floating-point tensor.*torch.uint8"):
        MdeqModel(mdeq.config)(pixel_values=torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# -- PriorGrad -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor():
    return PriorGradFeatureExtractor(energy_min=0.0, energy_max=10.0)


def _tone(samples: int = 4096, dtype=np.int16) -> np.ndarray:
    return (np.sin(np.arange(samples) / 7.0) * 12000).astype(dtype)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_priorgrad_stereo_array_is_not_a_batch(extractor, as_tensor):
    stereo = np.stack([_tone(), _tone()[::-1].copy()])
    with pytest.raises(ValueError, match=r"raw_audio: one array of shape \(2, 4096\).*stereo"):
        extractor(torch.from_numpy(stereo) if as_tensor else stereo, sampling_rate=22050)
    with pytest.raises(ValueError, match=r"audio\[1\]: expected a 1-D mono waveform, got shape \(2, 4096\)"):
        extractor([_tone(), stereo], sampling_rate=22050)
    assert extractor([stereo[0], stereo[1]], sampling_rate=22050)["audio"].shape == (2, 4096)


@pytest.mark.parametrize("normalize", [True, False])
def test_priorgrad_complex_samples_are_refused(extractor, normalize):
    tone = _tone(dtype=np.float32) / 32768
    with pytest.raises(ValueError, match=r"audio\[1\]: expected real-valued samples.*complex64"):
        extractor([tone, tone.astype(np.complex64)], sampling_rate=22050, normalize=normalize)
    with pytest.raises(ValueError, match=r"audio: expected real-valued samples.*complex"):
        extractor.normalize(tone + 1j * tone)


@pytest.mark.parametrize("raw_audio", [[], (), "speech.wav"], ids=["list", "tuple", "path"])
def test_priorgrad_empty_or_non_audio_batch_is_refused(extractor, raw_audio):
    with pytest.raises(ValueError, match="raw_audio: pass one mono waveform"):
        extractor(raw_audio, sampling_rate=22050)


# -- NAS-BERT --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fairseq", "mlnet"])
def tokenizer(request):
    return mlnet_tokenizer(framing=request.param)


@pytest.mark.parametrize("call, where", [
    (lambda tok: tok("caf\ud800e"), "text"),
    (lambda tok: tok(["fine", "bad \udfff"]), r"text\[1\]"),
    (lambda tok: tok("fine", text_pair="bad \udc80 pair"), "text_pair"),
    (lambda tok: tok(["fine", "w\ud83d"], is_split_into_words=True), r"text\[1\]"),
    (lambda tok: tok.encode("ok", "\ud800"), "text_pair"),
], ids=["single", "batch", "pair", "words", "encode"])
def test_nasbert_lone_surrogate_is_named(tokenizer, call, where):
    with pytest.raises(ValueError, match=where + r": .* has a lone surrogate \(U\+D[89ABCDEF][0-9A-F]{2}\) at position"):
        call(tokenizer)


def test_nasbert_empty_second_text_keeps_its_separator(tokenizer):
    # the framings of the module docstring: fairseq `<s> A </s> </s> B </s>`, ML.NET `<s> A </s> B`; with B empty
    # only B's tokens disappear
    single = tokenizer("Hello world")["input_ids"]
    words = single[1:-1] if tokenizer.framing == "fairseq" else single[1:]
    expected = [0, *words, 2, 2, 2] if tokenizer.framing == "fairseq" else [0, *words, 2]
    assert tokenizer("Hello world", "")["input_ids"] == expected
    assert tokenizer(["Hello world"], [""])["input_ids"] == [expected]
    assert tokenizer.encode("Hello world", "") == expected
    as_tensors = tokenizer("Hello world", "", return_tensors="pt")
    assert as_tensors["input_ids"].tolist() == [expected] and as_tensors["attention_mask"].shape == (1, len(expected))
    again = tokenizer("again")["input_ids"]
    if tokenizer.framing == "fairseq":
        assert tokenizer("Hello world", "again")["input_ids"] == expected[:-1] + again[1:-1] + [2]
    else:
        assert tokenizer("Hello world", "again")["input_ids"] == expected + again[1:]
