"""The release-based half of the recommender: statistics each device computes from its own history, the server's
post-processing of their noisy sums, and the device-side scoring that combines them with the text tower.

Why releases: user-level DP noise on a sum grows with the square root of the released dimension, so a few small,
well-chosen statistics (popularity counts, a co-occurrence Gram matrix over a head of items, a cross statistic
between public text features and items) keep far more signal at a given epsilon than one noisy update of a large
adapter. Each release is accounted as one Gaussian event; the device combines what was released with its own
history locally (joint DP: its own ranking is not a release).

- `text`: public text features (the whitened catalog table, a user's text profile and code).
- `statistics`: one user's contribution to each release, its L2 bound, and the registry the messages name.
- `postprocess`: what the server computes from a noisy sum (head selection, spectral denoising, EASE, ridge).
- `scorer`: the device's hybrid score over the whole catalog.
"""
