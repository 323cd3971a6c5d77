"""voipcloud: a control plane for VoIP clouds."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voipcloud")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
