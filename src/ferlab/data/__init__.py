"""Data: dataset readers (`readers/`), label sets, image reading, splits, hybrid datasets,
batch augmentation, the on-disk cache, and the arrays a training run holds in memory (`arrays`).
Imports nothing else of ferlab: every other layer builds on it."""
