"""Imports every command module so each registers its commands on ``cli``."""

from . import repo_cmds  # noqa: F401
from . import maint_cmds  # noqa: F401
from . import diff_cmds  # noqa: F401
from . import checkout_cmds  # noqa: F401
from . import mount_cmds  # noqa: F401
from . import run_cmds  # noqa: F401
from . import lineage_cmds  # noqa: F401
from . import pipeline_cmds  # noqa: F401
from . import remote_cmds  # noqa: F401
from . import ui_cmds  # noqa: F401
from . import watch_cmds  # noqa: F401
