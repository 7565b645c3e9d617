"""The Engine's operations on users and their uploads: who is signed in, what each may read and keep."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lab.core import access
from lab.core.users import check_name, list_uploads, load_users, private_file, save_upload, upload_path, \
    uploads_dir, user_of
from lab.inference.runtime import Runtime
from lab.knowledge.documents import Document, load_document


class UploadOps(Runtime):
    """Uploads live in each user's workspace; nobody names another user's file."""
    user_of = staticmethod(user_of)

    def sign_in_users(self) -> list[tuple[str, str]]:
        """The (user, password) pairs the web app asks for (LAB_AUTH and LAB_USERS_FILE); empty: no sign-in."""
        return load_users(self.settings)

    def uploads(self, user: str) -> list[str]:
        """The names of `user`'s own uploads."""
        return list_uploads(self.settings, user)

    def save_upload(self, user: str, source: str | Path) -> Document:
        """Check an uploaded file (size, type, content, the user's disk quota), then keep it in `user`'s workspace,
        readable by the lab's own user only."""
        name, size = check_name(Path(source).name, "File name"), Path(source).stat().st_size
        access.check_upload_size(self.settings, name, size)
        doc = load_document(source)
        replaced = uploads_dir(self.settings, user) / name  # the same name again replaces the old copy
        access.check_workspace_quota(self.settings, user, size - (replaced.stat().st_size if replaced.is_file() else 0))
        save_upload(self.settings, user, source)
        return doc

    def _keep_within_quota(self, user: str, written: Sequence[Path]) -> None:
        """Make files just written for `user` private; remove them again when they put the workspace over quota."""
        for path in written:
            private_file(path)
        try:
            access.check_workspace_quota(self.settings, user)
        except access.QuotaError:
            for path in written:
                path.unlink(missing_ok=True)
            raise

    def open_upload(self, user: str, name: str) -> Document:
        """One of `user`'s uploads; nobody else's can be named."""
        return load_document(upload_path(self.settings, user, name))
