"""Where uploaded site extracts are stored: the "imports" storage of STORAGES."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages


class PrivateFolderStorage(FileSystemStorage):
    """Files under the folder a setting names (read when used, not when the storage is made,
    so a test can point it elsewhere), never served: no URL exists for them."""

    folder_setting = ""
    refusal = "These files are not served."

    @property
    def base_location(self) -> str:
        return str(getattr(settings, self.folder_setting))

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    @property
    def base_url(self):  # never served
        return None

    def url(self, name):
        raise ValueError(self.refusal)


class ImportUploadStorage(PrivateFolderStorage):
    """Files under IMPORT_UPLOAD_DIR, a folder web and worker share (one volume in compose)."""

    folder_setting = "IMPORT_UPLOAD_DIR"
    refusal = "Uploaded extracts are not served."


def import_storage() -> FileSystemStorage:
    """The storage of uploaded extracts (a callable, so the model field stays portable)."""
    return storages["imports"]
