"""Which paths a user may name, and the limits every user works under: the rules the Engine applies.

    python -c "from lab.core.access import allowed_roots; from lab.core.settings import LabSettings; \
print(*allowed_roots(LabSettings(), 'alice'), sep='\\n')"

A path in a job config, a sweep or a request is resolved as the job would open it (relative paths
against the lab's folder, as DatasetSpec.resolved does, since jobs run there; `~` expanded; every
symlink followed) and is allowed only inside the bundled assets/, the requester's own workspace
<data>/users/<user>/, or the lab's own outputs (<data>/jobs, adapters, models). The knowledge caches
(<data>/knowledge) are not among them: a RAG index or a CAG cache holds the text of whoever's
document it was built from. A model id a signed-in user types is checked the same way when it
names a folder (`allowed_model`). Admins (LAB_ADMINS) manage everyone's jobs but read files under
the same rule.

Each limit is a setting (lab/core/settings.py) with an environment variable; a refusal names the
limit and the variable that raises it. No message here ever quotes the content of a file: a YAML
error says where in the file it is, never what the line holds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml

from lab.core.names import LOCAL_USER, WAITING_OR_ACTIVE_STATES, is_hub_id, user_name
from lab.core.settings import EMBEDDED_MODEL, REPO_ROOT, LabSettings

ASSETS = REPO_ROOT / "assets"
OUTPUT_DIRS = ("jobs", "adapters", "models")
"""The lab's own outputs under the data directory, readable by every job (it is one shared box). Not `knowledge`:
its caches hold the text of other users' documents."""


class QuotaError(PermissionError):
    """A request over one of the lab's limits; the message names the limit and its variable."""


def resolve(path: str | Path, base: Path = REPO_ROOT) -> Path:
    """The real path a job would open: `~` expanded, relative to `base` (the lab's folder, where jobs run), every
    symlink followed."""
    path = Path(path).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def allowed_roots(settings: LabSettings, user: str) -> list[Path]:
    """assets/, the user's own workspace and the lab's outputs, as real paths (nothing is created)."""
    data = Path(settings.data_dir)
    return [resolve(ASSETS), resolve(data / "users" / user_name(user)),
            *(resolve(data / name) for name in OUTPUT_DIRS)]


def allowed_path(settings: LabSettings, user: str, path: str | Path, what: str, base: Path = REPO_ROOT) -> Path:
    """The real path of `path` (relative ones against `base`) when `user` may use it; PermissionError naming the
    path as typed and the roots."""
    roots = allowed_roots(settings, user)
    real = resolve(path, base)
    if any(real == root or real.is_relative_to(root) for root in roots):
        return real
    raise PermissionError(f"{what} {str(path)!r} is outside the folders you may use: "
                          f"{', '.join(str(root) for root in roots)} (the bundled assets, your own workspace and "
                          "the lab's outputs). Upload the file to your workspace and name it there.")


def allowed_model(settings: LabSettings, user: str, model_id: str, what: str = "Model") -> None:
    """Refuse (PermissionError naming the id and the roots) a model or adapter id that names a folder `user` may not
    read. Always allowed: the lab's default model (LAB_MODEL, chosen by whoever runs the lab), 'embedded' and a Hub
    id that is no local folder. The web process opens a typed folder relative to its working directory, so a
    relative id is checked from there. The local user is the machine's own and is not confined."""
    model_id = model_id.strip()
    if user == LOCAL_USER or model_id in (EMBEDDED_MODEL, settings.model_id.strip()):
        return
    local = Path(model_id).expanduser()
    if is_hub_id(model_id) and not model_id.startswith(".") and not local.exists():
        return  # a Hub id: the loader fetches it (or says the Hub cannot be reached); no file here is named
    allowed_path(settings, user, model_id, what, base=Path.cwd())


def allowed_adapter(settings: LabSettings, user: str, ref: str, what: str = "Adapter") -> None:
    """Refuse an adapter given as a folder path (`ft:/path`, 'model + adapter /path') that `user` may not read.
    A plain name is looked up under <data>/adapters, the lab's own output, and needs no check."""
    ref = ref.strip()
    if user != LOCAL_USER and ("/" in ref or ref.startswith(("~", "."))):
        allowed_path(settings, user, ref, what, base=Path.cwd())


def is_admin(settings: LabSettings, user: str) -> bool:
    return user in settings.admin_names()


def unload_refusal(settings: LabSettings, user: str) -> str | None:
    """Why `user` may not unload what the session manager holds, or None when they may. With sign-in on, models,
    caches and reservations serve everyone, so only admins may drop them; without it the one local user may."""
    if settings.sign_in_on() and not is_admin(settings, user):
        return ("Only admins (LAB_ADMINS) can unload while sign-in is on: what is loaded serves every signed-in user "
                "and is evicted by itself when memory is needed.")
    return None


def owner_refusal(admins: Collection[str], user: str, owner: str | None, what: str, action: str) -> str | None:
    """Why `user` may not `action` `what` (a job, a sweep, an adapter, a model request) that belongs to `owner`, or
    None when they may: it is their own, or they are among `admins` (settings.admin_names(), LAB_ADMINS). What was
    made before sign-in has no owner and belongs to the local user. The one rule and message for every such check."""
    owner = owner or LOCAL_USER
    if user == owner or user in admins:
        return None
    return f"{what} belongs to {owner}; only they (or an admin, LAB_ADMINS) can {action} it."


def cancel_refusal(settings: LabSettings, user: str, owner: str) -> str | None:
    """Why `user` may not cancel a model request of `owner`, or None when they may: their own, or anyone's for an
    admin (LAB_ADMINS) or for the one local user without sign-in (requests then belong to browser sessions)."""
    if not settings.sign_in_on():
        return None
    return owner_refusal(settings.admin_names(), user, owner, "This request", "cancel")


# ---- limits -----------------------------------------------------------------------------------------------------
def _refuse(what: str, limit: Any, env: str, fix: str) -> QuotaError:
    return QuotaError(f"{what} (the limit is {env}={limit:g}). {fix}, or ask whoever runs the lab to raise {env}.")


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def check_sweep_points(settings: LabSettings, points: int) -> None:
    if points > settings.max_sweep_points:
        raise _refuse(f"This sweep has {points} points; a sweep may have at most {settings.max_sweep_points}",
                      settings.max_sweep_points, "LAB_MAX_SWEEP_POINTS", "Make the grid smaller")


def check_queued_jobs(settings: LabSettings, user: str, jobs: Iterable[dict]) -> None:
    """Refuse a new job or sweep while `user` already has max_queued_jobs queued or running."""
    active = sum(j.get("owner") == user and j["state"] in WAITING_OR_ACTIVE_STATES for j in jobs)
    if active >= settings.max_queued_jobs:
        raise _refuse(f"{user} already has {active} queued or running jobs, the most one user may have",
                      settings.max_queued_jobs, "LAB_MAX_QUEUED_JOBS", "Wait for one to finish or stop one")


def check_upload_size(settings: LabSettings, name: str, size: int) -> None:
    if size > settings.max_upload_bytes():
        raise _refuse(f"{name!r} is {_size(size)}; an upload may be at most {settings.max_upload_mb:g} MB",
                      settings.max_upload_mb, "LAB_MAX_UPLOAD_MB", "Upload a smaller file")


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (symlinks are not followed or counted)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) \
        if folder.is_dir() else 0


def check_workspace_quota(settings: LabSettings, user: str, adding: int = 0) -> None:
    """Refuse when `user`'s workspace, plus `adding` bytes about to be written, is over workspace_quota_mb."""
    used = folder_bytes(Path(settings.data_dir) / "users" / user_name(user))
    if used + adding > settings.workspace_quota_mb * 2**20:
        raise _refuse(f"{user}'s workspace holds {_size(used)} and this adds {_size(adding)}, over the "
                      f"{settings.workspace_quota_mb:g} MB each user may keep", settings.workspace_quota_mb,
                      "LAB_WORKSPACE_QUOTA_MB", "Delete uploads or evaluations you no longer need")


# ---- reading a user-named YAML file -----------------------------------------------------------------------------
def load_yaml_file(path: str | Path) -> Any:
    """yaml.safe_load of a file; an error names the file and the line and column, never the text there."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = (exc.problem_mark or exc.context_mark) if isinstance(exc, yaml.MarkedYAMLError) else None
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{path.name} is not valid YAML{where}") from None
