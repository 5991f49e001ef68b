import pytest


@pytest.fixture
def model_dir(settings, tmp_path):
    """Model artifacts of this test in a folder of their own."""
    settings.MODEL_ARTIFACT_DIR = tmp_path / "models"
    return settings.MODEL_ARTIFACT_DIR
