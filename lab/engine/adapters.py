"""Trained adapters: listing (with or without a sweep's), who owns each, renaming, deleting, merging.

    python -c "from lab.engine import Engine; print(Engine().adapters.names())"

An adapter belongs to the user whose job trained it; only they (or an admin) rename or delete it. Its
summary line is read from its job while that job's folder is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import access
from lab.core.settings import LabSettings
from lab.core.users import LOCAL_USER
from lab.engine.jobs import Jobs
from lab.explain.sweeps.run import sweep_jobs

if TYPE_CHECKING:
    from lab.inference.adapters import Adapter


class Adapters:
    """The adapters under <data>/adapters, as Compare, the Arena and the Train tab list them.

    lab.inference.adapters is imported inside each method: it imports torch, peft and transformers (a merge needs
    them), and the commands that list no adapter build this service too.
    """

    def __init__(self, settings: LabSettings, jobs: Jobs) -> None:
        self.settings, self.jobs = settings, jobs

    def all(self, include_sweeps: bool = True) -> list[Adapter]:
        """Every trained adapter, newest first; without include_sweeps, those a sweep's points made are left out
        (a 6-point sweep would otherwise bury the adapters people trained on purpose)."""
        from lab.inference import adapters

        found = adapters.list_adapters(self.settings.data_dir)
        if include_sweeps:
            return found
        swept = self.sweeps(found)
        return [a for a in found if a.name not in swept]

    def names(self, include_sweeps: bool = True) -> list[str]:
        return sorted(a.name for a in self.all(include_sweeps))

    def sweeps(self, found: Sequence[Adapter] | None = None) -> dict[str, str]:
        """adapter name -> the id of the sweep whose point trained it, for `found` (default: every adapter). Read
        from the sweeps' records by job id, so a renamed sweep adapter still belongs to its sweep."""
        from lab.inference import adapters

        jobs = sweep_jobs(self.settings.data_dir)
        found = adapters.list_adapters(self.settings.data_dir) if found is None else found
        return {a.name: jobs[a.job_id] for a in found if a.job_id in jobs}

    def owner(self, adapter: Adapter) -> str:
        """Who may rename or delete `adapter`: the user whose job trained it (recorded with it, else read from the
        job), or the local user for an adapter from before owners were kept or copied in by hand."""
        if adapter.owner:
            return adapter.owner
        try:
            return (self.jobs.status(adapter.job_id).get("owner") if adapter.job_id else None) or LOCAL_USER
        except (OSError, ValueError):  # the job folder was deleted
            return LOCAL_USER

    def _own(self, name: str, user: str, action: str) -> Adapter:
        from lab.inference import adapters
        from lab.inference.adapters import Adapter

        _, folder = adapters.resolve_adapter(self.settings.data_dir, adapters.check_adapter_name(name.strip()))
        adapter = Adapter.from_folder(folder)
        owner = self.owner(adapter)
        if refusal := access.owner_refusal(self.settings.admin_names(), user, owner, f"Adapter {adapter.name}", action):
            raise PermissionError(refusal)
        return adapter

    def rename(self, name: str, new_name: str, user: str = LOCAL_USER) -> Adapter:
        """Rename the adapter `name` (its owner or an admin only); Compare and the Arena list it as ft:<new_name>."""
        from lab.inference import adapters
        from lab.inference.adapters import Adapter

        self._own(name, user, "rename")
        return Adapter.from_folder(adapters.rename_adapter(self.settings.data_dir, name.strip(), new_name.strip()))

    def delete(self, name: str, user: str = LOCAL_USER) -> None:
        """Delete the adapter `name` (its owner or an admin only). Its job, if kept, stays; a merged export too."""
        from lab.inference import adapters

        self._own(name, user, "delete")
        adapters.delete_adapter(self.settings.data_dir, name.strip())

    def summary(self, adapter: Adapter) -> str:
        """One line on what an adapter is: how it was trained, on which base and data, how far and to what loss,
        e.g. 'sft lora on embedded · qa.jsonl · 55 steps · loss 0.33 · eval loss 0.41'. The numbers come from its
        job while the job's folder is kept; a hand-copied adapter says only what its files record."""
        parts = [" ".join(p for p in (adapter.kind, adapter.mode) if p) or "adapter"]
        parts[0] += f" on {Path(adapter.base_model_id).name or adapter.base_model_id}" if adapter.base_model_id else ""
        if adapter.data:
            parts.append(", ".join(adapter.data))
        try:
            status = self.jobs.status(adapter.job_id) if adapter.job_id else None
            metrics = self.jobs.metrics(adapter.job_id) if status else []
        except (OSError, ValueError):  # the job was deleted: the adapter outlives it
            status, metrics = None, []
        if status:
            parts.append(f"{status.get('step') or 0} steps")
        for key, label in (("loss", "loss"), ("eval_loss", "eval loss")):
            last = next((m[key] for m in reversed(metrics) if m.get(key) is not None), None)
            if last is not None:
                parts.append(f"{label} {last:.3g}")
        return " · ".join(parts)

    def training_seconds(self, name: str) -> float | None:
        """How long the job that trained `name` ran (started to finished), or None without a finished job."""
        from lab.inference import adapters

        return adapters.training_seconds(self.settings.data_dir, name)

    def merge(self, name: str, user: str = LOCAL_USER) -> Path:
        """Merge the adapter `name` into its base and export it under <data>/merged/<name>: its owner or an admin
        only, like rename and delete (anyone else's merge would take the folder name its owner's merge needs)."""
        from lab.inference import adapters

        adapter = self._own(name, user, "merge")
        return adapters.merge_adapter(adapter.path, self.settings.subdir("merged") / adapter.name,
                                      self.settings.data_dir)

    def export_merged(self, adapter: str | Path, out_dir: str | Path, base_model_id: str | None = None) -> Path:
        """Merge an adapter folder into its base (the one recorded with it unless given) and write it to out_dir."""
        from lab.inference import adapters

        return adapters.merge_adapter(adapter, out_dir, self.settings.data_dir, base_model_id=base_model_id)
