"""The Engine's operations on users and their uploads: who is signed in, what each may read and keep, which model
folders each may name, and who may unload what the session manager holds."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from lab.core import access
from lab.core.users import LOCAL_USER, check_name, latest_upload, list_uploads, load_users, private_file, save_upload, \
    upload_path, uploads_dir, user_of
from lab.inference.endpoints import is_endpoint
from lab.inference.generate import GenerationEvent, GenerationSettings
from lab.inference.models import LoadedModel
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

    def latest_upload(self, user: str) -> str | None:
        """The name of `user`'s most recently saved upload, or None."""
        return latest_upload(self.settings, user)

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

    # ---- models a user names, and what the session manager holds -------------------------------------------------
    def check_model_access(self, model_id: str | None, user: str, adapter: str | None = None) -> None:
        """Refuse (PermissionError naming the id and the allowed roots) a model or adapter folder `user` may not
        read. A signed-in user may name the default model, 'embedded', a Hub id, an endpoint (LAB_ENDPOINTS), an
        adapter by name, and folders inside assets/, their own workspace and the lab's outputs."""
        if user == LOCAL_USER or not model_id or is_endpoint(model_id):
            return  # an endpoint's adapter is a LoRA name served there, not a folder here
        access.allowed_model(self.settings, user, model_id)
        if adapter:
            access.allowed_adapter(self.settings, user, adapter)

    def load(self, model_id: str | None = None, load_in_4bit: bool | None = None,
             user: str = LOCAL_USER) -> LoadedModel:
        """Load a model into the shared session manager (once), after checking `user` may name it."""
        self.check_model_access(model_id, user)
        return super().load(model_id, load_in_4bit)

    def generate(self, prompt: str, settings: GenerationSettings | None = None, model_id: str | None = None,
                 system: str | None = None, caller: str | None = None,
                 user: str = LOCAL_USER) -> Iterator[GenerationEvent]:
        """Stream an answer (Runtime.generate) after checking, at once, that `user` may name the model."""
        self.check_model_access(model_id, user)
        return super().generate(prompt, settings, model_id, system, caller)

    def unload_refusal(self, user: str) -> str | None:
        """Why `user` may not unload entries (the System tab shows it beside a disabled button), or None."""
        return access.unload_refusal(self.settings, user)

    def unload(self, key: str, user: str = LOCAL_USER) -> bool:
        """Drop a model, adapter, KV cache or reservation from the session manager; True if it was held. With
        sign-in on only admins (LAB_ADMINS) may (PermissionError); nobody may drop what a request or a running job
        is using (ValueError naming the entry and why)."""
        refusal = self.unload_refusal(user)
        if refusal:
            raise PermissionError(refusal)
        return self.sessions.unload(key)
