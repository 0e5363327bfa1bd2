"""User-facing errors.

Every problem caused by the user's input (a bad file, an impossible option) is raised as a
:class:`SundaeError` whose message is one line that names the file and the problem. The command
line prints it as ``error: <message>`` and exits non-zero, never with a traceback.
"""


class SundaeError(Exception):
    """A clear, one-line error about the user's input or options."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class PlyError(SundaeError):
    """The PLY file cannot be read as a 3DGS scene."""


class BundleError(SundaeError):
    """The ``.sundae`` bundle is corrupt, truncated or of an unknown version."""
