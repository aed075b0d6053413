"""Bottom layer: typed config schemas, batch keys and where the Hydra config tree lives."""

from pathlib import Path

#: The Hydra config tree. ``vla_lab/conf`` links to the repository's top-level ``conf/`` and is copied
#: into wheels, so installed and editable packages find the same files.
CONF_DIR = (Path(__file__).resolve().parent.parent / "conf").resolve()
