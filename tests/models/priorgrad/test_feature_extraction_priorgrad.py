"""PriorGrad audio front end: round trip through the Auto class and bad input."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor

import zoo  # noqa: F401
from zoo.models.priorgrad import PriorGradFeatureExtractor, load_energy_stats

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "priorgrad"


def _clips(folder: Path) -> list[Path]:
    """A case's non-training clips, longest first."""
    return sorted((p for p in (folder / "wav").glob("*.wav") if not p.name.startswith("train_")),
                  key=lambda p: -p.stat().st_size)


def _case_with_params(**params) -> tuple[Path, dict]:
    """A case whose params are `params` (the released data settings these front-end tests use) and which has two
    clips to batch."""
    for meta_path in sorted(FIXTURES.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if all(meta["params"][k] == v for k, v in params.items()) and len(_clips(meta_path.parent)) >= 2:
            return meta_path.parent, meta
    raise AssertionError(f"no case under {FIXTURES} has params {params} and two test clips")


_DEFAULT = PriorGradFeatureExtractor()
CASE, _META = _case_with_params(
    sample_rate=_DEFAULT.sampling_rate, n_fft=_DEFAULT.n_fft, hop_samples=_DEFAULT.hop_length,
    n_mels=_DEFAULT.n_mels, fmin=_DEFAULT.fmin, fmax=_DEFAULT.fmax, std_min=_DEFAULT.std_min,
    max_energy_override=_DEFAULT.max_energy_override)
CLIPS = _clips(CASE)


def write_wav(path: Path, samples: np.ndarray, rate: int = 22050, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return path


@pytest.fixture
def fe():
    return PriorGradFeatureExtractor(**load_energy_stats(CASE))


def test_save_and_reload_through_auto_class(fe, tmp_path):
    fe.save_pretrained(tmp_path)
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, PriorGradFeatureExtractor)
    assert reloaded.to_dict() == fe.to_dict()
    audio = fe.load_audio(CLIPS[0])
    torch.testing.assert_close(reloaded(audio, sampling_rate=22050)["target_std"], fe(audio, sampling_rate=22050)["target_std"])


def test_batch_of_different_lengths(fe):
    a, b = fe.load_audio(CLIPS[0]), fe.load_audio(CLIPS[1])
    long_frames, short_frames = len(a) // fe.hop_length, len(b) // fe.hop_length
    assert long_frames > short_frames
    batch = fe([a, b], sampling_rate=fe.sampling_rate)
    assert batch["frame_lengths"].tolist() == [long_frames, short_frames]
    assert batch["spectrogram"].shape == (2, fe.n_mels, long_frames)
    assert batch["target_std"].shape == (2, long_frames * fe.hop_length)
    single = fe(b, sampling_rate=fe.sampling_rate)
    torch.testing.assert_close(batch["spectrogram"][1, :, :short_frames], single["spectrogram"][0], atol=0, rtol=0)
    assert batch["spectrogram"][1, :, short_frames:].abs().sum() == 0


def test_wrong_sample_rate_is_refused(fe, tmp_path):
    path = write_wav(tmp_path / "16k.wav", np.full(4000, 1000), rate=16000)
    with pytest.raises(ValueError, match=r"16k.wav: sample rate 16000 Hz, but this model works at 22050"):
        fe.load_audio(path)
    with pytest.raises(ValueError, match="sampled at 16000 Hz"):
        fe(np.zeros(1024, dtype=np.int16), sampling_rate=16000)
    with pytest.raises(ValueError, match="pass sampling_rate"):
        fe(np.zeros(1024, dtype=np.int16))


def test_silent_short_nan_and_stereo_audio_are_refused(fe, tmp_path):
    with pytest.raises(ValueError, match=r"audio\[0\]: the waveform is silent"):
        fe(np.zeros(2048, dtype=np.int16), sampling_rate=22050)
    with pytest.raises(ValueError, match="too short"):
        fe(np.full(500, 100, dtype=np.int16), sampling_rate=22050)
    noisy = np.random.default_rng(0).normal(size=2048) * 0.1
    noisy[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fe(noisy, sampling_rate=22050)
    stereo = write_wav(tmp_path / "stereo.wav", np.full(4000, 1000), channels=2)
    with pytest.raises(ValueError, match="mono"):
        fe.load_audio(stereo)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    with pytest.raises(ValueError, match="broken.wav: cannot read"):
        fe.load_audio(broken)


def test_missing_or_bad_statistics(tmp_path):
    with pytest.raises(FileNotFoundError, match="energy_max_train.npy"):
        load_energy_stats(tmp_path)
    (tmp_path / "stats_priorgrad").mkdir()
    np.save(tmp_path / "stats_priorgrad" / "energy_max_train.npy", np.float32(0.01))
    np.save(tmp_path / "stats_priorgrad" / "energy_min_train.npy", np.float32(0.5))
    with pytest.raises(ValueError, match="must be below"):
        load_energy_stats(tmp_path)
    with pytest.raises(ValueError, match="energy statistics"):
        PriorGradFeatureExtractor()(np.full(1024, 300, dtype=np.int16), sampling_rate=22050)
