"""Listening-history data: one module per on-disk format, the synthetic generator and the split."""
