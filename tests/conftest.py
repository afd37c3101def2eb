import pytest


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory):
    """Measurements of ``auto`` mixed precision go to a temporary cache, not the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SEQ2SEQ_CACHE_DIR", str(tmp_path_factory.mktemp("seq2seq-cache")))
    yield
    patch.undo()
