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


def pytest_configure(config):
    """Fixture-usage check (tests/fixture_usage.py): on a full run, every data file under tests/fixtures/ must
    be read by some test; a discovery failure (tests/fixture_cases.BrokenCase) fails the test that gets it."""
    from pathlib import Path

    from tests.fixture_usage import FixtureUsage

    here = Path(__file__).resolve().parent
    config.pluginmanager.register(FixtureUsage(config, here / "fixtures", here), "zoo-fixture-usage")
