import os

import pytest
import torch

# Two cores in CI: one intra-op thread per test process keeps pytest-xdist workers from thrashing.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def fixtures_dir():
    from pathlib import Path

    return Path(FIXTURES)
