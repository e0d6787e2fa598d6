"""The training checkpoint: tensors in safetensors, everything else in JSON, so nothing is ever unpickled.

The folder ``CHECKPOINT_DIR`` of a run holds:

* ``model.safetensors``: the network's weights.
* ``optimizer.safetensors``: the optimiser's tensors, keyed ``<parameter index>.<name>``, and the
  torch RNG state under ``torch_rng`` (the random-subset policy draws from it).
* ``CHECKPOINT_STATE_FILE``: the loop's state (step, epoch, step in the epoch, seconds) and the
  optimiser's parameter groups; its presence marks a complete checkpoint.

The folder is replaced as a whole (:func:`magms.files.replace_folder`), so a stop or crash while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from magms.errors import ConfigError
from magms.files import replace_folder
from magms.protocol import CHECKPOINT_STATE_FILE

__all__ = ["read_checkpoint", "write_checkpoint"]

_MODEL_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_RNG_KEY = "torch_rng"


def write_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Replace ``folder`` with the weights, the optimiser, the torch RNG and ``state``.

    Args:
        folder: the checkpoint folder (``out/CHECKPOINT_DIR``); its parent must exist.
        model: the bare network (not its DDP wrapper), whose keys the bundle uses too.
        optimizer: its tensors go to safetensors, its parameter groups to the JSON state.
        state: JSON-able loop state, written as it is.
    """

    def fill(tmp: Path) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(weights, str(tmp / _MODEL_FILE))
        opt = optimizer.state_dict()
        # flat "<parameter index>.<name>" keys: safetensors holds one level of named tensors
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
        tensors[_RNG_KEY] = torch.get_rng_state()
        safetensors.torch.save_file(tensors, str(tmp / _OPTIMIZER_FILE))
        (tmp / CHECKPOINT_STATE_FILE).write_text(json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1))

    replace_folder(folder, fill)


def read_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a checkpoint into ``model`` and ``optimizer``, restore the torch RNG and return the loop state.

    Args:
        folder: a folder written by :func:`write_checkpoint`.
        model: the bare network; its weights must match exactly (``strict=True``).
        optimizer: built over ``model``'s parameters as when the checkpoint was written.
    Returns:
        The loop state as written, without the optimiser's parameter groups.
    Raises:
        ConfigError: the folder is incomplete or does not fit the model.
    """
    try:
        state = json.loads((folder / CHECKPOINT_STATE_FILE).read_text())
        model.load_state_dict(safetensors.torch.load_file(str(folder / _MODEL_FILE)), strict=True)
        tensors = safetensors.torch.load_file(str(folder / _OPTIMIZER_FILE))
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{folder}: cannot resume from this checkpoint ({err})") from err
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key == _RNG_KEY:
            continue
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors[_RNG_KEY])
    return state
