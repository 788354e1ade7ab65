"""Fixtures shared by the test files: the tiny test-made dataset and seeding."""
import pytest

from core.runtime import seed_everything
from tests.synthetic import write_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``tiny_data(n_source=200, n_target=100, circuit="5t_opamp")`` -> a data dir, written once per size per
    session (``tests.synthetic.write_dataset``).  Read-only: a test that edits data files makes its own."""
    made = {}

    def make(n_source: int = 200, n_target: int = 100, circuit: str = "5t_opamp"):
        key = (n_source, n_target, circuit)
        if key not in made:
            made[key] = write_dataset(tmp_path_factory.mktemp("data"), circuit, n_source=n_source, n_target=n_target)
        return made[key]
    return make


@pytest.fixture
def seeded():
    """Seed random, numpy and torch with 0 (``core.runtime.seed_everything``) for a test that draws numbers."""
    seed_everything(0)
    return 0
