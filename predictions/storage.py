"""Where trained model artifacts are stored: the "models" storage of STORAGES."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages


class ModelArtifactStorage(FileSystemStorage):
    """Files under MODEL_ARTIFACT_DIR (read when used, so a test can point it elsewhere), never
    served: artifacts are unpickled by the registry's own processes only."""

    @property
    def base_location(self) -> str:
        return str(settings.MODEL_ARTIFACT_DIR)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    @property
    def base_url(self):  # never served
        return None

    def url(self, name):
        raise ValueError("Model artifacts are not served.")


def model_storage() -> FileSystemStorage:
    return storages["models"]
