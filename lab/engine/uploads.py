"""Users and their uploads: who is signed in, what each may read and keep, which model folders each may name.

    python -c "from lab.engine import Engine; print(Engine().uploads.names('local'))"

Every other service that writes into a user's workspace (exports, Q&A sets) ends with keep_within_quota,
and every one that runs a model a user named asks check_model_access first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.core import access, names
from lab.core.settings import LabSettings
from lab.core.users import (
    LOCAL_USER,
    latest_upload,
    list_uploads,
    load_users,
    private_file,
    save_upload,
    upload_path,
    uploads_dir,
    user_of,
)
from lab.knowledge.documents import Document, load_document


class Uploads:
    """Uploads live in each user's workspace; nobody names another user's file."""

    def __init__(self, settings: LabSettings) -> None:
        self.settings = settings

    def user_of(self, username: str | None) -> str:
        """The lab user behind a request (gradio's request.username, None without sign-in)."""
        return user_of(username)

    def sign_in_users(self) -> list[tuple[str, str]]:
        """The (user, password) pairs the web app asks for (LAB_AUTH and LAB_USERS_FILE); empty: no sign-in."""
        return load_users(self.settings)

    def names(self, user: str) -> list[str]:
        """The names of `user`'s own uploads."""
        return list_uploads(self.settings, user)

    def latest(self, user: str) -> str | None:
        """The name of `user`'s most recently saved upload, or None."""
        return latest_upload(self.settings, user)

    def save(self, user: str, source: str | Path) -> Document:
        """Check an uploaded file (size, type, content, the user's disk quota), then keep it in `user`'s workspace,
        readable by the lab's own user only."""
        name, size = names.file_name(Path(source).name), Path(source).stat().st_size
        access.check_upload_size(self.settings, name, size)
        doc = load_document(source)
        replaced = uploads_dir(self.settings, user) / name  # the same name again replaces the old copy
        access.check_workspace_quota(self.settings, user, size - (replaced.stat().st_size if replaced.is_file() else 0))
        save_upload(self.settings, user, source)
        return doc

    def open(self, user: str, name: str) -> Document:
        """One of `user`'s uploads; nobody else's can be named."""
        return load_document(upload_path(self.settings, user, name))

    def keep_within_quota(self, user: str, written: Sequence[Path]) -> None:
        """Make files just written for `user` private; remove them again when they put the workspace over quota."""
        for path in written:
            private_file(path)
        try:
            access.check_workspace_quota(self.settings, user)
        except access.QuotaError:
            for path in written:
                path.unlink(missing_ok=True)
            raise

    def check_model_access(self, model_id: str | None, user: str, adapter: str | None = None) -> None:
        """Refuse (PermissionError naming the id and the allowed roots) a model or adapter folder `user` may not
        read. A signed-in user may name the default model, 'embedded', a Hub id, an endpoint (LAB_ENDPOINTS), an
        adapter by name, and folders inside assets/, their own workspace and the lab's outputs."""
        from lab.inference.endpoints import is_endpoint  # its module imports torch (through generate)

        if user == LOCAL_USER or not model_id or is_endpoint(model_id):
            return  # an endpoint's adapter is a LoRA name served there, not a folder here
        access.allowed_model(self.settings, user, model_id)
        if adapter:
            access.allowed_adapter(self.settings, user, adapter)
