"""Where trained model artifacts are stored: the "models" storage of STORAGES."""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage, storages

from registry.storage import PrivateFolderStorage


class ModelArtifactStorage(PrivateFolderStorage):
    """Files under MODEL_ARTIFACT_DIR, never served: artifacts are unpickled by the registry's
    own processes only."""

    folder_setting = "MODEL_ARTIFACT_DIR"
    refusal = "Model artifacts are not served."


def model_storage() -> FileSystemStorage:
    return storages["models"]
