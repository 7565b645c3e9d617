"""The command a job runs: `accelerate launch -m lab.training.jobs.launch <config>`, with every accelerate value given.

    python -m lab show-command assets/presets/sft_lora_qa.yaml
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import psutil

from lab.core.settings import REPO_ROOT
from lab.training.configs import load_config
from lab.training.configs.base import TrainConfig
from lab.training.jobs.files import CONFIG_FILE


def launch_argv(cfg: TrainConfig, config_path: str | Path, resume: bool = False,
                cuda: bool | None = None) -> list[str]:
    """The exact `accelerate launch` argument list (run from the lab's folder, without a shell)."""
    if cuda is None:
        import torch  # here, not at the top: `jobs list` and the sweeps import the runner without a model library

        cuda = torch.cuda.is_available()
    argv = [str(Path(sys.executable).parent / "accelerate"), "launch"]
    if cfg.accelerate_config is None:
        # Every value given, so a user's ~/.cache/huggingface/accelerate/default_config.yaml cannot change it.
        argv += ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        argv += [] if cuda else ["--cpu", "--num_cpu_threads_per_process", str(psutil.cpu_count(logical=False) or 1)]
    else:
        argv += ["--config_file", str(cfg.accelerate_config_path.relative_to(REPO_ROOT))]
    argv += ["-m", "lab.training.jobs.launch", str(config_path)]
    return argv + (["--resume"] if resume else [])


def command_for(job: str | Path, resume: bool = False) -> list[str]:
    """The argv that runs the job in folder `job`."""
    config = Path(job) / CONFIG_FILE
    return launch_argv(load_config(config), config, resume)


def command_preview(cfg: TrainConfig, config_path: str = "<data>/jobs/<id>/config.yaml") -> str:
    """The command as one shell-quoted line, for the Train tab and `show-command`."""
    return shlex.join(launch_argv(cfg, config_path))
