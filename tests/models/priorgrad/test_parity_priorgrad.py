"""Parity with the original PriorGrad-vocoder code: every case folder under tests/fixtures/priorgrad/.

Each case holds an original-format checkpoint, the energy statistics, wavs and the original outputs
(preprocessing, forward pass, training loss, fast / full sampling with every noise draw given). The
checkpoint goes through the converter; the zoo folder must reproduce the outputs within meta.json's
tolerances.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conversion.convert_priorgrad import convert
from tests.fixture_cases import BrokenCase, Family, Unhandled
from zoo.models.priorgrad import PriorGradFeatureExtractor, PriorGradVocoder, load_energy_stats

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "priorgrad"
# the expected-output files (meta.json `shapes` keys) the tests know how to check
OUTPUT_FILES = {"preprocess", "forward", "train_loss", "sample_fast", "sample_slow"}


def classify(folder: Path, case_meta: dict) -> str:
    unknown = sorted(set(case_meta["shapes"]) - OUTPUT_FILES)
    if unknown:
        raise Unhandled(f"meta.json shapes declare output file(s) {unknown} that no PriorGrad test checks")
    missing = [field for field in ("params", "checkpoint", "tolerances") if field not in case_meta]
    if missing:
        raise Unhandled(f"meta.json lacks {missing}, which every PriorGrad test reads")
    return "vocoder"


FAMILY = Family("priorgrad", classify)


def case_params(output: str):
    """One pytest param per case whose meta.json `shapes` declares `output`.safetensors (discovery failures stay
    in as failing params; a declared file that is missing fails the test)."""
    params = []
    for param in FAMILY.cases("vocoder"):
        value = param.values[0]
        if isinstance(value, BrokenCase):
            params.append(param)
        elif output in value.meta["shapes"]:
            params.append(pytest.param(value.folder, id=param.id))
    return params or FAMILY.cases("vocoder")


def meta(case: Path) -> dict:
    return json.loads((case / "meta.json").read_text())


def tolerance(case: Path, kind: str) -> dict:
    tol = meta(case)["tolerances"][kind]
    return {"atol": tol["atol"], "rtol": tol["rtol"]}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each case's checkpoint converted once (stats found next to it, as in the original data root)."""
    cache: dict[str, Path] = {}

    def get(case: Path) -> Path:
        if case.name not in cache:
            out = tmp_path_factory.mktemp("converted") / case.name
            convert(case / meta(case)["checkpoint"]["file"], out)
            cache[case.name] = out
        return cache[case.name]

    return get


def load_vocoder(folder: Path) -> PriorGradVocoder:
    return PriorGradVocoder.from_pretrained(folder).eval()


@pytest.mark.parametrize("case", case_params("preprocess"))
def test_preprocessing_matches_original(case, converted):
    expected = load_file(case / "preprocess.safetensors")
    fe = PriorGradFeatureExtractor.from_pretrained(converted(case))
    assert fe.max_energy_override == meta(case)["params"]["max_energy_override"]
    clips = sorted(p.stem for p in (case / "wav").glob("*.wav") if f"{p.stem}.audio" in expected)
    if not clips:
        pytest.fail(f"{case}: preprocess.safetensors holds no '<clip>.audio' tensor")
    for clip in clips:
        audio = fe.normalize(fe.load_audio(case / "wav" / f"{clip}.wav"))
        torch.testing.assert_close(torch.from_numpy(audio), expected[f"{clip}.audio"], **tolerance(case, "preprocess_audio"))
        log_mel = fe.log_mel(audio)
        torch.testing.assert_close(log_mel, expected[f"{clip}.log_mel"], **tolerance(case, "log_mel"))
        batch = fe(fe.load_audio(case / "wav" / f"{clip}.wav"), sampling_rate=fe.sampling_rate)
        torch.testing.assert_close(batch["target_std"][0], expected[f"{clip}.target_std"], **tolerance(case, "target_std"))
        torch.testing.assert_close(batch["spectrogram"][0], expected[f"{clip}.log_mel"], **tolerance(case, "log_mel"))
    for clip in (c for c in clips if f"{c}.energy" in expected):
        torch.testing.assert_close(fe.frame_energy(expected[f"{clip}.log_mel"]), expected[f"{clip}.energy"], atol=1e-6,
                                   rtol=1e-6)
        torch.testing.assert_close(fe.prior_std(expected[f"{clip}.log_mel"]), expected[f"{clip}.target_std_frames"],
                                   **tolerance(case, "target_std"))
    # The training batch: crops at the recorded offsets of the normalised training files.
    offsets = meta(case)["train_crop_offsets_samples"]
    crop = meta(case)["params"]["crop_mel_frames"] * fe.hop_length
    for index, offset in enumerate(offsets):
        audio = fe.normalize(fe.load_audio(case / "wav" / f"train_{index}.wav"))[offset: offset + crop]
        torch.testing.assert_close(torch.from_numpy(audio), expected["train_batch.audio"][index], atol=0, rtol=0)
        log_mel = fe.log_mel(audio)
        torch.testing.assert_close(log_mel, expected["train_batch.log_mel"][index], **tolerance(case, "log_mel"))
        std = torch.repeat_interleave(fe.prior_std(log_mel), fe.hop_length)
        torch.testing.assert_close(std, expected["train_batch.target_std"][index], **tolerance(case, "target_std"))


@pytest.mark.parametrize("case", case_params("preprocess"))
def test_mel_basis_and_statistics(case, tmp_path):
    expected = load_file(case / "preprocess.safetensors")
    params = meta(case)["params"]
    fe = PriorGradFeatureExtractor(sampling_rate=params["sample_rate"], n_fft=params["n_fft"],
                                   hop_length=params["hop_samples"], n_mels=params["n_mels"], fmin=params["fmin"],
                                   fmax=params["fmax"], use_prior=params["use_prior"], std_min=params["std_min"],
                                   max_energy_override=params["max_energy_override"])
    if "mel_basis" in expected:
        torch.testing.assert_close(fe.mel_basis, expected["mel_basis"], atol=1e-7, rtol=0)
    wavs = sorted((case / "wav").glob("train_*.wav"))
    stats = fe.compute_energy_stats(wavs, save_to=tmp_path)
    original = load_energy_stats(case)
    assert stats == pytest.approx(original, rel=1e-6)
    assert load_energy_stats(tmp_path) == pytest.approx(original, rel=1e-6)
    assert np.load(tmp_path / "stats_priorgrad" / "energy_min_train.npy").dtype == np.float32


@pytest.mark.parametrize("case", case_params("forward"))
def test_forward_matches_original(case, converted):
    data = load_file(case / "forward.safetensors")
    model = load_vocoder(converted(case)).priorgrad
    for kind in ("int", "float"):
        step = data[f"{kind}.diffusion_step"]
        assert step.is_floating_point() == (kind == "float")
        with torch.no_grad():
            global_cond = data[f"{kind}.global_cond"] if meta(case)["params"]["condition_prior_global"] else None
            out = model(data[f"{kind}.audio"], data[f"{kind}.spectrogram"], step, global_cond)
        torch.testing.assert_close(out.predicted_noise, data[f"{kind}.output"], **tolerance(case, "forward"))


@pytest.mark.parametrize("case", case_params("train_loss"))
def test_training_loss_and_gradient_norm(case, converted):
    data = load_file(case / "train_loss.safetensors")
    vocoder = load_vocoder(converted(case)).train()
    out = vocoder(
        data["inputs.spectrogram"], labels=data["inputs.audio"], diffusion_step=data["inputs.t"],
        noise=data["inputs.noise"], target_std=data["inputs.target_std"],
    )
    spectrogram, global_cond = vocoder.network_conditioning(data["inputs.spectrogram"], out.target_std)
    torch.testing.assert_close(spectrogram, data["expected.model_spectrogram"], atol=0, rtol=0)
    if meta(case)["params"]["condition_prior_global"]:
        torch.testing.assert_close(global_cond, data["expected.model_global_cond"], atol=0, rtol=0)
    torch.testing.assert_close(out.noisy_audio, data["expected.noisy_audio"], **tolerance(case, "forward"))
    torch.testing.assert_close(out.predicted_noise, data["expected.predicted"], **tolerance(case, "forward"))
    torch.testing.assert_close(out.loss.reshape(1), data["expected.loss"], **tolerance(case, "loss"))
    out.loss.backward()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in vocoder.parameters() if p.grad is not None])
    torch.testing.assert_close(grad_norm.reshape(1), data["expected.grad_norm"], atol=0, rtol=1e-4)
    # The prior computed from the mel by the model itself gives the same loss.
    recomputed = vocoder(data["inputs.spectrogram"], labels=data["inputs.audio"], diffusion_step=data["inputs.t"],
                         noise=data["inputs.noise"])
    torch.testing.assert_close(recomputed.loss.reshape(1), data["expected.loss"], **tolerance(case, "loss"))


def sampling_params():
    """(case folder, output name) for every sampling file a case declares; discovery failures stay in."""
    params = []
    for param in FAMILY.cases("vocoder"):
        value = param.values[0]
        if isinstance(value, BrokenCase):
            params.append(pytest.param(value, None, id=param.id))
            continue
        params += [pytest.param(value.folder, name, id=f"{param.id}-{name}")
                   for name in ("sample_fast", "sample_slow") if name in value.meta["shapes"]]
    return params


@pytest.mark.parametrize("case, name", sampling_params())
def test_sampling_matches_original(case, name, converted):
    vocoder = load_vocoder(converted(case))
    full = name == "sample_slow"
    data = load_file(case / f"{name}.safetensors")
    kwargs = {"full_schedule": True} if full else {"num_inference_steps": meta(case)["fast_iter"]}
    out = vocoder.generate(data["inputs.log_mel"], noise=data["inputs.noise"], output_states=True, **kwargs)
    torch.testing.assert_close(out.reverse_steps, data["expected.reverse_step_T"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.waveform, data["expected.audio"], **tolerance(case, "sampling"))
    if "expected.states" in meta(case)["shapes"][name]:
        torch.testing.assert_close(out.states, data["expected.states"], **tolerance(case, "sampling"))
    # The given target_std is what the model computes from the mel itself.
    given = vocoder.generate(data["inputs.log_mel"], target_std=data["inputs.target_std"][0],
                             noise=data["inputs.noise"], **kwargs)
    torch.testing.assert_close(given.waveform, data["expected.audio"], **tolerance(case, "sampling"))
