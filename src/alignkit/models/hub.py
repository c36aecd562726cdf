"""``push_to_hub``: final/ uploaded to the Hugging Face Hub, the hub checked before any training.

TRL pushes with ``huggingface_hub``; so does this. The check (a logged-in ``whoami`` against the
configured endpoint) runs before the model is even loaded, so a run that cannot push stops at once
instead of after hours of training.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi

from alignkit.errors import AlignkitError


def hub_repo(config) -> str:
    """The repository to push to: ``hub_model_id``, else the run directory's folder name."""
    return config.hub_model_id or Path(config.output_dir).resolve().name


def check_hub(config) -> None:
    """With ``push_to_hub``: fail now, clearly, when the hub cannot be reached or no token is set."""
    if not config.push_to_hub:
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        HfApi().whoami()
    except Exception as exc:  # noqa: BLE001 -- no token, no network, refused: each says why in its message
        raise AlignkitError(
            f"push_to_hub: cannot push to '{hub_repo(config)}' at {endpoint} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Log in (HF_TOKEN or `hf auth login`) where the hub is "
            "reachable, or set push_to_hub false and upload final/ later"
        ) from None


def push_final(config, folder: Path) -> str:
    """Upload ``folder`` (a run's final/) to the hub repository of ``config``; its URL."""
    api = HfApi()
    repo = hub_repo(config)
    api.create_repo(repo, private=config.hub_private_repo, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="alignkit: final model")
    return str(getattr(info, "commit_url", repo))
