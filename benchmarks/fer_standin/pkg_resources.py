"""Stand-in for pkg_resources.resource_filename (setuptools no longer ships pkg_resources)."""
from importlib import resources


def resource_filename(package: str, path: str) -> str:
    return str(resources.files(package) / path)
