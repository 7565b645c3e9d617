"""The engine: the one facade the tabs, the CLI and the tests call, a thin object that owns services.

    python -m lab info

An Engine builds the process's Runtime (settings, device, session manager) and one service per area, each a
plain class in this package whose dependencies are passed to its constructor:

    engine.uploads    sign-in users, a user's uploads, model and adapter access checks     (uploads.py)
    engine.models     load, generate, unload, the Playground's model list                 (models.py)
    engine.requests   caller ids, queue positions, requests in flight and cancelling      (requests.py)
    engine.jobs       configs and presets, submitting and controlling training jobs       (jobs.py)
    engine.adapters   trained adapters: listing, owners, rename, delete, merge            (adapters.py)
    engine.datasets   Q&A training sets built from a document                             (datasets.py)
    engine.knowledge  documents, Compare, evaluations and their exports                   (knowledge.py)
    engine.arena      the Arena's model choices and streamed columns                      (arena.py)
    engine.history    each user's kept records                                            (history.py)
    engine.battles    blind battles, votes and the leaderboard                            (battles.py)
    engine.explain    the catalog and the calculators                                     (explain.py)
    engine.sweeps     sweeps: grids of jobs, their table and decision                     (sweeps.py)
    engine.devices    lab info, memory, job queue estimates, who holds what on a device   (devices.py)

Every decision about who may touch which file, job, model or quota is made in this package, once: a method
that acts for a user takes that user's name. The packages under lab/ take a Runtime and never import this one,
so there is no cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.core.device import DeviceChoice
from lab.core.settings import LabSettings
from lab.engine.adapters import Adapters
from lab.engine.arena import Arena
from lab.engine.battles import Battles
from lab.engine.datasets import Datasets
from lab.engine.devices import Devices
from lab.engine.explain import Explain
from lab.engine.history import History
from lab.engine.jobs import Jobs
from lab.engine.knowledge import Knowledge
from lab.engine.models import Models
from lab.engine.requests import Requests
from lab.engine.sweeps import Sweeps
from lab.engine.uploads import Uploads
from lab.engine.workflows import Workflows
from lab.inference.runtime import Runtime
from lab.knowledge import disk

if TYPE_CHECKING:
    from lab.inference.session import SessionManager

__all__ = ["Engine"]


class Engine:
    """The Runtime and the services over it; `settings`, `device` and `sessions` are the Runtime's.

    Building one loads no model library: the Runtime finds its device and builds its session manager on first
    use, and the services import the model modules inside the methods that need them, so the bookkeeping
    commands (history, arena ratings, jobs list) start without torch (tests/app/test_cli_startup.py).
    """

    def __init__(self, settings: LabSettings | None = None, device: DeviceChoice | None = None,
                 runtime: Runtime | None = None) -> None:
        self.runtime = runtime or Runtime(settings, device)
        self.settings = self.runtime.settings
        disk.set_cap(self.settings.data_dir / "knowledge", int(self.settings.knowledge_cache_gb * 2**30))
        self.uploads = Uploads(self.settings)
        self.models = Models(self.runtime, self.uploads)
        self.requests = Requests(self.runtime)
        self.jobs = Jobs(self.runtime)
        self.adapters = Adapters(self.settings, self.jobs)
        self.datasets = Datasets(self.runtime, self.uploads)
        self.knowledge = Knowledge(self.runtime, self.uploads, self.adapters)
        self.arena = Arena(self.runtime, self.uploads, self.adapters, self.models)
        self.history = History(self.runtime, self.uploads)
        self.battles = Battles(self.runtime, self.history, self.uploads, self.knowledge, self.arena)
        self.explain = Explain(self.runtime, self.uploads)
        self.sweeps = Sweeps(self.runtime, self.jobs)
        self.devices = Devices(self.runtime, self.jobs, self.knowledge)
        self.workflows = Workflows(self.knowledge, self.history)

    @property
    def device(self) -> DeviceChoice:
        return self.runtime.device

    @property
    def sessions(self) -> SessionManager:
        return self.runtime.sessions

    def close(self) -> None:
        """Stop the job runner's polling thread if this engine started one; jobs it launched keep running."""
        self.jobs.close()
