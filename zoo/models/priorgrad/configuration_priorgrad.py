"""Configuration of the PriorGrad vocoder (Lee et al., ICLR 2022, arXiv 2106.06406)."""

from __future__ import annotations

from transformers import PretrainedConfig

__all__ = ["PriorGradConfig", "RELEASED_NOISE_SCHEDULE", "FAST_SCHEDULES"]

# The released training schedule: 50 betas, numpy.linspace(1e-4, 0.05, 50) as Python floats.
RELEASED_NOISE_SCHEDULE = [i * ((0.05 - 1e-4) / 49) + 1e-4 for i in range(50)]
RELEASED_NOISE_SCHEDULE[-1] = 0.05
# The original inference script's `--fast --fast_iter N` schedules; any other N is linspace(1e-4, 0.05, N).
FAST_SCHEDULES = {
    6: [0.0001, 0.001, 0.01, 0.05, 0.2, 0.5],
    12: [0.0001, 0.0005, 0.0008, 0.001, 0.005, 0.008, 0.01, 0.05, 0.08, 0.1, 0.2, 0.5],
}
# The spectrogram upsampler is two stride-16 transposed convolutions: it always upsamples by 256.
UPSAMPLE_FACTOR = 256


class PriorGradConfig(PretrainedConfig):
    """Hyper-parameters of a PriorGrad vocoder, named after the original `params.py` where they exist.

    Besides the network (`residual_layers`, `residual_channels`, `dilation_cycle_length`, the prior
    conditioning switches) it carries what inference needs without the training data: the audio
    parameters of the mel front end and the energy statistics of the training set that define the
    data-dependent prior (`energy_min`, `energy_max`, `max_energy_override`, `std_min`).

        config = PriorGradConfig()                         # the released LJSpeech configuration
        tiny = PriorGradConfig(residual_layers=4, residual_channels=16, dilation_cycle_length=2)
        print(tiny.receptive_field_frames)
    """

    model_type = "priorgrad"

    def __init__(
        self,
        sample_rate: int = 22050,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_samples: int = 256,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        residual_layers: int = 30,
        residual_channels: int = 64,
        dilation_cycle_length: int = 10,
        noise_schedule: list[float] | None = None,
        inference_noise_schedule: list[float] | None = None,
        use_prior: bool = True,
        condition_prior: bool = False,
        condition_prior_global: bool = False,
        std_min: float = 0.1,
        max_energy_override: float | None = 4.0,
        energy_min: float | None = None,
        energy_max: float | None = None,
        use_l2loss: bool = True,
        crop_mel_frames: int = 62,
        **kwargs,
    ):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_priorgrad.PriorGradConfig",
            "AutoModel": "modeling_priorgrad.PriorGradModel",
            "AutoModelForTextToWaveform": "modeling_priorgrad.PriorGradVocoder",
        })
        super().__init__(**kwargs)
        if condition_prior and condition_prior_global:
            raise ValueError("PriorGradConfig: use only one of condition_prior and condition_prior_global")
        if hop_samples != UPSAMPLE_FACTOR:
            raise ValueError(
                f"PriorGradConfig: hop_samples must be {UPSAMPLE_FACTOR} (the spectrogram upsampler is fixed "
                f"at 16x16), got {hop_samples}"
            )
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_samples = hop_samples
        self.fmin = fmin
        self.fmax = fmax
        self.residual_layers = residual_layers
        self.residual_channels = residual_channels
        self.dilation_cycle_length = dilation_cycle_length
        self.noise_schedule = list(noise_schedule) if noise_schedule is not None else list(RELEASED_NOISE_SCHEDULE)
        self.inference_noise_schedule = (
            list(inference_noise_schedule) if inference_noise_schedule is not None else list(FAST_SCHEDULES[6])
        )
        self.use_prior = use_prior
        self.condition_prior = condition_prior
        self.condition_prior_global = condition_prior_global
        self.std_min = std_min
        self.max_energy_override = max_energy_override
        self.energy_min = energy_min
        self.energy_max = energy_max
        self.use_l2loss = use_l2loss
        self.crop_mel_frames = crop_mel_frames

    @property
    def conditioner_channels(self) -> int:
        """Channels of the spectrogram the network sees: the mels, plus the prior std if `condition_prior`."""
        return self.n_mels + (1 if self.condition_prior else 0)

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.dilation_cycle_length) for i in range(self.residual_layers)]

    @property
    def receptive_field_frames(self) -> int:
        """Mel frames of context each side that fully determine one network call's output inside a chunk.

        The dilated convolutions reach sum(dilations) samples each side; the transposed-convolution
        upsampler reaches at most 391 samples (23 + 16 * 23) back from a sample to the frames it uses.
        """
        return (sum(self.dilations) + 391) // self.hop_samples
