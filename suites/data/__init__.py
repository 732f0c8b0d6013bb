"""Datasets: synthetic tensors for cost-only cells, the MNIST-5k transfer task and few-shot
episodes (from the MNIST-5k target classes or a user's class-per-folder directory).

Device side: turning a dataset artifact (or a synthetic spec) into batches. The host side that
builds the artifacts lives in ``suites.data.mnist`` (shipped images), ``suites.data.imagefolder``
(user directories) and ``suites.data.episodes`` (episode sampling).
"""
from .batches import Batches, make_batches

FIXED_NAMES = ("synthetic", "mnist5k-transfer", "mnist5k-fewshot")
NAMES = FIXED_NAMES + ("imagefolder:<directory>",)
IMAGEFOLDER = "imagefolder:"
"""Prefix of a data name that points at a class-per-folder directory: ``imagefolder:/data/dtd``."""


def is_episodic(name):
    """Few-shot data: each cell adapts on one episode's support set and scores on its query set."""
    return name == "mnist5k-fewshot" or name.startswith(IMAGEFOLDER)


def episode_mismatch(name, episode):
    """Why data ``name`` and the job's ``episode`` protocol do not go together, or None."""
    if is_episodic(name) and not episode:
        return ("data %r is few-shot: give the episode protocol, e.g. episode = \"5way-5shot\" or \"vvvs\""
                % name)
    if episode and not is_episodic(name):
        return "episode %r needs few-shot data (mnist5k-fewshot or imagefolder:<directory>), not %r" % (episode, name)
    return None


def known(name):
    return name in FIXED_NAMES or (name.startswith(IMAGEFOLDER) and len(name) > len(IMAGEFOLDER))


__all__ = ["Batches", "make_batches", "NAMES", "IMAGEFOLDER", "is_episodic", "episode_mismatch", "known"]
