"""Users and their workspaces: who is asking, and which files are theirs.

    LAB_AUTH="alice:secret,bob:other" python app.py     # or LAB_USERS_FILE=users.txt

Without sign-in the lab runs as one local user. With it, each user's uploads live in
`<data>/users/<name>/uploads/` and only that user can read them; training jobs record their
owner: everyone sees every job (it is one shared box) but only the owner (or an admin, LAB_ADMINS)
may stop, kill, resume or delete it. Names of users, files and jobs are checked so that none can
step outside its folder. What the lab writes for a user is readable by the lab's own Unix user
only: folders 0700, files 0600.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

from lab.core.access import owner_refusal
from lab.core.files import atomic_open
from lab.core.names import LOCAL_USER, check_name, file_name, user_name
from lab.core.settings import LabSettings


def user_of(username: str | None) -> str:
    """The lab user behind a request (gradio's request.username, None without sign-in)."""
    return user_name(username) if username else LOCAL_USER


def load_users(settings: LabSettings) -> list[tuple[str, str]]:
    """Sign-in pairs from LAB_AUTH and from the file LAB_USERS_FILE ('user:password' per line)."""
    pairs = settings.auth_pairs()
    if settings.users_file:
        path = Path(settings.users_file)
        if not path.is_file():
            raise ValueError(f"LAB_USERS_FILE={path} does not exist; create it with one 'user:password' per line.")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"{path} line {number} is not 'user:password'.")
            pairs.append((user, password))
    for user, _ in pairs:
        user_name(user)
        if user == LOCAL_USER:
            raise ValueError(f"'{LOCAL_USER}' is reserved for the lab's own user (no sign-in, the command line); "
                             "choose another sign-in name.")
    return pairs


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) readable by the lab's own user only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, and the folder may predate this rule
    return path


def private_file(path: str | Path) -> Path:
    """Make a file the lab wrote for a user readable by the lab's own user only (0600)."""
    os.chmod(path, 0o600)
    return Path(path)


def workspace(settings: LabSettings, user: str) -> Path:
    """The user's own folder (created on first use, 0700 like <data>/users/ above it)."""
    private_dir(settings.subdir("users"))
    return private_dir(settings.data_dir / "users" / user_name(user))


def workspace_dir(settings: LabSettings, user: str, name: str) -> Path:
    """A folder of the user's workspace (uploads, evaluations), created 0700."""
    return private_dir(workspace(settings, user) / check_name(name, "Folder name"))


def uploads_dir(settings: LabSettings, user: str) -> Path:
    return workspace_dir(settings, user, "uploads")


def save_upload(settings: LabSettings, user: str, source: str | Path, name: str | None = None) -> Path:
    """Copy an uploaded file into the user's workspace under a checked name (0600); returns its new path."""
    target = uploads_dir(settings, user) / file_name(name or Path(source).name)
    # A copy that fails halfway (a full disk) leaves an earlier file of the same name whole; 0600 from the start.
    with open(source, "rb") as src, atomic_open(target, binary=True, private=True) as dst:
        shutil.copyfileobj(src, dst)
    return private_file(target)


def list_uploads(settings: LabSettings, user: str) -> list[str]:
    folder = workspace(settings, user) / "uploads"
    # Hidden names are uploads still being written (see save_upload); a checked name never starts with '.'.
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def latest_upload(settings: LabSettings, user: str) -> str | None:
    """The name of the user's most recently saved upload (None without any): what "my uploads" means when no
    name is picked. Saving a name again makes it the latest, since the copy is written anew."""
    folder = uploads_dir(settings, user)
    names = list_uploads(settings, user)
    return max(names, key=lambda name: (folder / name).stat().st_mtime_ns, default=None)


def upload_path(settings: LabSettings, user: str, name: str) -> Path:
    """The path of one of the user's own uploads. Another user's file cannot be named: the name
    may not contain a path, and the lookup happens only inside the asker's folder."""
    path = uploads_dir(settings, user) / file_name(name)
    if not path.is_file():
        raise ValueError(f"You have no upload named {name!r}; your uploads: "
                         f"{', '.join(list_uploads(settings, user)) or 'none'}.")
    return path


def check_job_owner(status: dict, user: str, action: str, admins: Collection[str] = ()) -> None:
    """Only the owner of a job (or an admin) may change it (access.owner_refusal); PermissionError otherwise."""
    refusal = owner_refusal(admins, user, status.get("owner"), f"Job {status.get('id')}", action)
    if refusal:
        raise PermissionError(refusal)
