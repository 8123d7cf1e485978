"""``robustkit data``: build the built-in dataset, convert real-format files, inspect prepared files."""

from __future__ import annotations

import click

from robustkit.cli.data_build import build
from robustkit.cli.data_prepare import info, prepare


@click.group()
def data() -> None:
    """Build, prepare and inspect datasets (built-in brain data, fastMRI, Calgary-Campinas, MoDL, BART)."""


data.add_command(build)
data.add_command(prepare)
data.add_command(info)
