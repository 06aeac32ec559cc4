"""Stand-in: `fer` imports requests for its TF Serving option only, never used by the benchmark."""


def post(*args, **kwargs):
    raise RuntimeError("no network here: fer's TF Serving option is not benchmarked")
