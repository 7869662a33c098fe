"""The mechanisms, one function each: bound a contribution (`clip_update`), add Gaussian noise to a sum
(`add_gaussian_noise`). Every path (simulation, deployed server, in-process engine) calls these and nothing else."""

from fedrec.shared.privacy.mechanisms.clip import clip_update, l2_norm
from fedrec.shared.privacy.mechanisms.gaussian import add_gaussian_noise

__all__ = ["add_gaussian_noise", "clip_update", "l2_norm"]
