"""The engine: training loops (`train`, `head_training`, `landmark_training`), SAM, checkpoints
and training state, evaluation, metrics, profiling, and the config loader. Uses data, models,
losses and faces; the app and the CLI use it."""
