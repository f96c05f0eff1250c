"""Safe checkpoint reading: every checkpoint a user hands us is unpickled with ``weights_only=True``.

A checkpoint is a pickle, and a pickle can run any code while it loads. ``torch.load(weights_only=True)``
only rebuilds tensors, containers and primitive values, plus the globals on an explicit allow-list.
What ``atft train`` writes needs nothing more: the hyper-parameters are stored as plain dicts (the
LightningModule converts the OmegaConf config with ``to_container``), and the Lightning loop,
optimiser, scheduler and callback states are dicts of numbers, strings and tensors. So the allow-list
below is empty; a type added to a checkpoint later must be added here on purpose.

A file that is not a readable checkpoint (truncated, corrupt, someone else's pickle) becomes one
``InputError`` line naming the file and, for a refused pickle, the type it wanted to create.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from atft.errors import InputError

# Globals (classes/functions) beyond torch's weights-only defaults that our checkpoints may contain.
ALLOWED_GLOBALS: tuple = ()

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def refused_type(message: str) -> str:
    """The global a weights-only unpickler refused, from torch's message ('an unsupported type' if absent)."""
    match = _GLOBAL_RE.search(message)
    return match.group(1) if match else "an unsupported type"


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with our allow-list; one-line ``InputError`` on any bad file.

    Args:
        path: checkpoint file (``.ckpt`` written by ``atft train``, or any user-supplied file).
        map_location: as for ``torch.load``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"checkpoint {path} was refused: it needs {refused_type(str(exc))}, which is not "
                         f"a plain type a checkpoint of `atft train` holds (loading it could run code)") from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"checkpoint {path} is truncated or corrupt (not a readable torch checkpoint: "
                         f"{first})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise InputError(f"checkpoint {path} has no state_dict (not a checkpoint written by `atft train`)")
    return state


def checkpoint_hparams(state: dict, checkpoint: Path) -> dict:
    """The ``hyper_parameters`` (cfg, n_features, horizons) of a checkpoint written by ``atft train``."""
    hp = state.get("hyper_parameters") or {}
    if not isinstance(hp, dict) or not {"cfg", "n_features", "horizons"} <= set(hp):
        raise InputError(f"checkpoint {checkpoint} has no hyper_parameters cfg/n_features/horizons "
                         f"(not written by `atft train`)")
    return hp


def model_difference(hp: dict, features: list[str], horizons: list[int]) -> str:
    """One line naming how a checkpoint's model differs from ``features``/``horizons`` ('' if it does not)."""
    parts = []
    if [int(h) for h in hp["horizons"]] != [int(h) for h in horizons]:
        parts.append(f"horizons {list(hp['horizons'])} vs {list(horizons)}")
    if int(hp["n_features"]) != len(features):
        parts.append(f"{int(hp['n_features'])} features vs {len(features)}")
    return "; ".join(parts)


def feature_difference(expected: list[str], found: list[str]) -> str:
    """One line naming the features missing from / extra in a dataset ('' when the lists agree)."""
    missing = [f for f in expected if f not in found]
    extra = [f for f in found if f not in expected]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if extra:
        parts.append(f"extra {len(extra)} ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
    return "; ".join(parts)


def check_resume(path, features: list[str], horizons: list[int]) -> dict:
    """Load a ``--resume-from`` checkpoint safely and refuse one from a different model, naming what differs.

    The feature names are compared when the checkpoint's run folder still has its ``data.json``; the
    feature count and the horizons always are.
    """
    from atft.io_utils import read_json

    path = Path(path)
    state = load_checkpoint(path)
    hp = checkpoint_hparams(state, path)
    diff = model_difference(hp, features, horizons)
    for folder in (path.parent, path.parent.parent):
        if (folder / "data.json").is_file():
            names = feature_difference(list(read_json(folder / "data.json", "run record").get("features", [])),
                                       features)
            diff = "; ".join(p for p in (diff, names and f"dataset vs checkpoint features: {names}") if p)
            break
    if diff:
        raise InputError(f"--resume-from {path} is a checkpoint of a different model: {diff}")
    return state
