"""Opt-in: publish to the real Hugging Face Hub. Runs only with HF_TOKEN and ZOO_REAL_HUB=1 set.

    HF_TOKEN=hf_... ZOO_REAL_HUB=1 python -m pytest tests/test_hub_real.py

Creates a private repo `<your user>/zoo-hub-test-<random>`, publishes the toy model with hub_upload's
logic (one commit + tag), reloads it with from_pretrained (native and trust_remote_code), then deletes it.
"""

from __future__ import annotations

import os
import uuid

import pytest
import torch

from tests.hub.helpers import make_toy_folder, toy_logits
from zoo.hub import DEFAULT_ENDPOINT, hub_session, upload_folder

ENABLED = bool(os.environ.get("HF_TOKEN")) and (
    os.environ.get("ZOO_REAL_HUB") == "1" or os.environ.get("ZOO_TEST_REAL_HUB") == "1"
)
pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(not ENABLED, reason="opt-in: set HF_TOKEN and ZOO_REAL_HUB=1 to publish to the real Hub"),
]


def test_publish_to_the_real_hub_and_reload(tmp_path):
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification

    token = os.environ["HF_TOKEN"]
    endpoint = os.environ.get("ZOO_REAL_HUB_ENDPOINT", DEFAULT_ENDPOINT)
    with hub_session(endpoint, token):
        api = HfApi(endpoint=endpoint, token=token)
        repo_id = f"{api.whoami()['name']}/zoo-hub-test-{uuid.uuid4().hex[:8]}"
        folder = make_toy_folder(tmp_path / "toy", repo_id=repo_id)
        try:
            result = upload_folder(folder, repo_id, private=True, tag="v1", endpoint=endpoint, token=token)
            assert api.model_info(repo_id).sha == result.commit
            assert {t.name for t in api.list_repo_refs(repo_id).tags} == {"v1"}
            for remote in (False, True):
                model = AutoModelForSequenceClassification.from_pretrained(
                    repo_id, revision="v1", token=token, trust_remote_code=remote, cache_dir=tmp_path / "cache")
                torch.testing.assert_close(toy_logits(model), toy_logits(folder), rtol=0, atol=1e-6)
        finally:
            api.delete_repo(repo_id, missing_ok=True)
