"""PriorGrad audio front end: wav loading, peak normalisation, HiFi-GAN log-mel and the energy prior.

Reproduces the original data pipeline (`preprocess.get_mel`, `dataset.NumpyDataset`): int16 / 32768,
peak-normalise the whole file to 0.95, drop the last (length mod hop) samples; reflect-pad, STFT with a
periodic Hann window of 4 * hop, magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filterbank (librosa,
imported lazily), natural log clamped at 1e-5; prior std from the frame energy and the training-set
statistics (`stats_priorgrad/energy_{min,max}_train.npy`).

    from zoo.models.priorgrad import PriorGradFeatureExtractor
    fe = PriorGradFeatureExtractor(energy_min=0.028, energy_max=4.70)
    features = fe(fe.load_audio("speech.wav"), sampling_rate=22050)   # spectrogram, target_std, ...
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.feature_extraction_utils import FeatureExtractionMixin

from .modeling_priorgrad import prior_std_from_log_mel

__all__ = ["PriorGradFeatureExtractor", "STATS_DIR", "load_energy_stats"]

MAX_WAV_VALUE = 32768.0
STATS_DIR = "stats_priorgrad"
STATS_FILES = {"energy_max": "energy_max_train.npy", "energy_min": "energy_min_train.npy"}


def load_energy_stats(folder: str | os.PathLike) -> dict[str, float]:
    """Read `energy_min` / `energy_max` from a data root (holding stats_priorgrad/) or the stats folder itself."""
    folder = Path(folder)
    if (folder / STATS_DIR).is_dir():
        folder = folder / STATS_DIR
    stats = {}
    for key, name in STATS_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing PriorGrad energy statistics file ({name})")
        try:
            value = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: not a numeric .npy file ({error})") from None
        if value.size != 1 or not np.isfinite(value).all():
            raise ValueError(f"{path}: expected one finite number, got shape {value.shape}")
        stats[key] = float(value)
    if not stats["energy_min"] < stats["energy_max"]:
        raise ValueError(f"{folder}: energy_min {stats['energy_min']} must be below energy_max {stats['energy_max']}")
    return stats


def _save_npy_atomic(path: Path, value: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, value)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PriorGradFeatureExtractor(FeatureExtractionMixin):
    """Waveform -> (normalised audio, log-mel, prior std), exactly as the original PriorGrad pipeline.

    Calling it on one or several waveforms (numpy int16 PCM, or floats already divided by 32768) returns
    a `BatchFeature` with `spectrogram` [B, n_mels, max frames] (zero-padded), `target_std` [B, max
    samples] (the prior per sample, 1 in the padding), `audio` [B, max samples] and `frame_lengths` [B].

        fe = PriorGradFeatureExtractor.from_pretrained("converted/priorgrad_ljspeech")
        batch = fe([fe.load_audio("a.wav"), fe.load_audio("b.wav")], sampling_rate=22050)
        stats = fe.compute_energy_stats(["a.wav", "b.wav"], save_to="data_root")
    """

    model_input_names = ["spectrogram", "target_std"]

    def __init__(
        self,
        sampling_rate: int = 22050,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        peak: float = 0.95,
        use_prior: bool = True,
        std_min: float = 0.1,
        max_energy_override: float | None = 4.0,
        energy_min: float | None = None,
        energy_max: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = fmax
        self.peak = peak
        self.use_prior = use_prior
        self.std_min = std_min
        self.max_energy_override = max_energy_override
        self.energy_min = energy_min
        self.energy_max = energy_max
        self._mel_basis: torch.Tensor | None = None

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_mel_basis", None)
        return output

    @property
    def win_length(self) -> int:
        """The original always windows with 4 * hop samples."""
        return 4 * self.hop_length

    @property
    def mel_basis(self) -> torch.Tensor:
        """The Slaney-scale, area-normalised mel filterbank [n_mels, n_fft // 2 + 1] (librosa)."""
        if self._mel_basis is None:
            try:
                import librosa
            except ImportError as error:
                raise ImportError("the PriorGrad mel front end needs librosa: pip install librosa") from error
            basis = librosa.filters.mel(
                sr=self.sampling_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax
            )
            self._mel_basis = torch.from_numpy(basis).float()
        return self._mel_basis

    # -- audio ----------------------------------------------------------------------------------------
    def load_audio(self, path: str | os.PathLike) -> np.ndarray:
        """Read a mono PCM wav as the raw sample array, refusing a sample rate other than `sampling_rate`."""
        from scipy.io import wavfile

        path = Path(path)
        try:
            rate, data = wavfile.read(path)
        except FileNotFoundError:
            raise
        except (ValueError, EOFError, OSError, struct.error) as error:
            raise ValueError(f"{path}: cannot read as a wav file ({error or type(error).__name__})") from None
        if rate != self.sampling_rate:
            raise ValueError(
                f"{path}: sample rate {rate} Hz, but this model works at {self.sampling_rate} Hz; resample it first "
                "(the original pipeline does not resample)"
            )
        if data.ndim != 1:
            raise ValueError(f"{path}: expected mono audio, got {data.shape[1]} channels")
        return data

    def normalize(self, audio: np.ndarray, name: str = "audio") -> np.ndarray:
        """int16 (or float / 32768-scaled) samples -> float32 peak-normalised to `peak`, cut to whole hops."""
        audio = _real_waveform(audio, name)
        if audio.dtype == np.int16:
            audio = audio / MAX_WAV_VALUE
        elif np.issubdtype(audio.dtype, np.integer):
            raise ValueError(f"{name}: only 16-bit PCM is supported (got {audio.dtype})")
        audio = audio.astype(np.float64)
        if not np.isfinite(audio).all():
            raise ValueError(f"{name}: the waveform contains NaN or infinite samples")
        peak = np.abs(audio).max() if audio.size else 0.0
        if peak == 0:
            raise ValueError(f"{name}: the waveform is silent (all zeros); there is nothing to normalise or vocode")
        audio = audio / peak * self.peak
        audio = audio[: len(audio) - len(audio) % self.hop_length]
        if len(audio) < 2 * self.hop_length:
            raise ValueError(
                f"{name}: too short: {len(audio)} samples after trimming to whole hops; need at least "
                f"{2 * self.hop_length} ({2 * self.hop_length / self.sampling_rate * 1000:.0f} ms)"
            )
        return audio.astype(np.float32)

    def log_mel(self, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Natural-log mel magnitude [n_mels, samples / hop] of a normalised float waveform [samples]."""
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() != 1 or audio.shape[0] % self.hop_length or audio.shape[0] < 2 * self.hop_length:
            raise ValueError(
                f"log_mel expects a 1-D waveform of a whole number (>= 2) of {self.hop_length}-sample hops, got "
                f"shape {list(audio.shape)}"
            )
        pad = (self.n_fft - self.hop_length) // 2
        padded = F.pad(audio.view(1, 1, -1), (pad, pad), mode="reflect").view(1, -1)
        spec = torch.stft(
            padded, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
            window=torch.hann_window(self.win_length), center=False, normalized=False, onesided=True,
            return_complex=True,
        )
        magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
        return torch.log(torch.clamp(torch.matmul(self.mel_basis, magnitude), min=1e-5))[0]

    def frame_energy(self, log_mel: torch.Tensor) -> torch.Tensor:
        """sqrt(sum over mel bins of exp(log_mel)) per frame."""
        return log_mel.exp().sum(-2).sqrt()

    def prior_std(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Per-frame prior std of a log-mel (the original `target_std` before repeating it per sample)."""
        if not self.use_prior:
            return torch.ones_like(log_mel[..., 0, :])
        if self.energy_min is None or (self.energy_max is None and self.max_energy_override is None):
            raise ValueError(
                "the prior needs training-set energy statistics: set energy_min / energy_max (see "
                "compute_energy_stats or load_energy_stats)"
            )
        return prior_std_from_log_mel(log_mel, self.energy_min, self.energy_max, self.max_energy_override, self.std_min)

    # -- statistics -----------------------------------------------------------------------------------
    def compute_energy_stats(
        self, wavs: str | os.PathLike | Iterable[str | os.PathLike], save_to: str | os.PathLike | None = None
    ) -> dict[str, float]:
        """Min and max frame energy over a folder (every *.wav in it) or a list of wavs; optionally saved as
        `save_to/stats_priorgrad/energy_{max,min}_train.npy` (0-d float32, the original layout)."""
        if isinstance(wavs, (str, os.PathLike)) and Path(wavs).is_dir():
            paths = sorted(Path(wavs).glob("*.wav"))
        else:
            paths = [Path(p) for p in ([wavs] if isinstance(wavs, (str, os.PathLike)) else wavs)]
        if not paths:
            raise ValueError(f"no wav files found in {wavs}")
        energies = []
        for path in _progress(paths, "energy statistics"):
            audio = self.normalize(self.load_audio(path), name=str(path))
            energies.append(self.frame_energy(self.log_mel(audio)))
        energy = torch.cat(energies)
        stats = {"energy_min": float(energy.min()), "energy_max": float(energy.max())}
        if save_to is not None:
            folder = Path(save_to) / STATS_DIR
            folder.mkdir(parents=True, exist_ok=True)
            _save_npy_atomic(folder / STATS_FILES["energy_max"], energy.max().numpy())
            _save_npy_atomic(folder / STATS_FILES["energy_min"], energy.min().numpy())
        return stats

    # -- batches --------------------------------------------------------------------------------------
    def __call__(
        self,
        raw_audio: np.ndarray | Sequence[np.ndarray],
        sampling_rate: int | None = None,
        normalize: bool = True,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Features of one waveform or a list of them (see the class docstring)."""
        if sampling_rate is None:
            raise ValueError(f"pass sampling_rate= (this feature extractor expects {self.sampling_rate} Hz audio)")
        if sampling_rate != self.sampling_rate:
            raise ValueError(
                f"audio sampled at {sampling_rate} Hz, but this model works at {self.sampling_rate} Hz; resample first"
            )
        if isinstance(raw_audio, np.ndarray | torch.Tensor):
            if np.ndim(raw_audio) != 1:
                raise ValueError(
                    f"raw_audio: one array of shape {tuple(raw_audio.shape)}; pass one mono waveform (1-D) or a list "
                    "of them (a (channels, samples) stereo array is not a batch: mix it down first, e.g. .mean(0))"
                )
            raw_audio = [raw_audio]
        if isinstance(raw_audio, str | bytes) or len(raw_audio) == 0:
            raise ValueError("raw_audio: pass one mono waveform (1-D array) or a non-empty list of them")
        clips, mels = [], []
        for index, clip in enumerate(raw_audio):
            name = f"audio[{index}]"
            clip = _real_waveform(clip, name)
            if normalize:
                clip = self.normalize(clip, name=name)
            elif not np.isfinite(clip).all():
                raise ValueError(f"{name}: the waveform contains NaN or infinite samples")
            clips.append(clip.astype(np.float32))
            mels.append(self.log_mel(clip))
        frames = [mel.shape[-1] for mel in mels]
        hop = self.hop_length
        spectrogram = torch.zeros(len(mels), self.n_mels, max(frames))
        target_std = torch.ones(len(mels), max(frames) * hop)
        audio = torch.zeros(len(mels), max(frames) * hop)
        for index, (mel, clip) in enumerate(zip(mels, clips)):
            spectrogram[index, :, : mel.shape[-1]] = mel
            target_std[index, : len(clip)] = torch.repeat_interleave(self.prior_std(mel), hop)
            audio[index, : len(clip)] = torch.from_numpy(clip)
        data = {
            "spectrogram": spectrogram, "target_std": target_std, "audio": audio,
            "frame_lengths": torch.tensor(frames),
        }
        return BatchFeature(data, tensor_type=return_tensors)


def _real_waveform(audio, name: str) -> np.ndarray:
    """A 1-D array of real samples (complex input would silently lose its imaginary part in the float cast)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D mono waveform, got shape {audio.shape}")
    if audio.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected real-valued samples (int16 PCM or floats), got {audio.dtype}")
    return audio


def _progress(items: list, description: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, disable=len(items) < 20)
