"""Where built releases are stored: the "releases" storage of STORAGES."""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage, storages

from registry.storage import PrivateFolderStorage


class ReleaseStorage(PrivateFolderStorage):
    """Files under RELEASE_DIR, never served by URL: downloads go through the release views,
    which check the team and the access period and record each download."""

    folder_setting = "RELEASE_DIR"
    refusal = "Release files are served only through the release download view."


def release_storage() -> FileSystemStorage:
    return storages["releases"]
