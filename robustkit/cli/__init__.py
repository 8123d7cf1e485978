"""The ``robustkit`` command line. Sub-commands load lazily so ``robustkit --help`` is instant."""

from __future__ import annotations

import importlib
import sys

import click

from robustkit import __version__
from robustkit.errors import RobustkitError, RobustkitWarning

#: the largest seed (numpy and torch generators both take seeds below 2³²).
SEED_MAX = 2**32 - 1

#: command name → "module:attribute" of its click command, imported only when used.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("robustkit.cli.data:data", "Build, prepare and inspect datasets (built-in brain data, fastMRI, …)."),
    "train": ("robustkit.cli.train:train", "Train MoDL, MOL, MOL-SN or MnM-MOL into your model zoo (./models)."),
    "models": ("robustkit.cli.models:models", "List and inspect the model zoos (yours and the shipped one)."),
    "attack": ("robustkit.cli.studies:attack", "k-space attacks (adversarial, Gaussian, spikes, motion, coil-map): PSNR/SSIM damage vs ε per model."),
    "sweep-delta": ("robustkit.cli.studies:sweep_delta", "Compare MnM-MOL models trained with different ball radii δ."),
    "init-test": ("robustkit.cli.studies:init_test", "Do DEQ models reach the same fixed point from SENSE, zero, ball and noise starts?"),
    "audit": ("robustkit.cli.studies:audit", "Per-slice L[H_θ](x*; δ), Jacobian norm and end-to-end amplification."),
    "features": ("robustkit.cli.studies:features", "Small features (discs, blobs, crosses) and false negatives; FNAF search."),
    "bound": ("robustkit.cli.studies:bound", "The monotone bound ‖Δx*‖ ≤ ‖Aᴴγ‖/m per L estimate beside the measured attack."),
    "leaderboard": ("robustkit.cli.report:leaderboard", "One row per model from stored runs: reports/leaderboard.html and .csv."),
    "shift": ("robustkit.cli.studies:shift", "Distribution shift: PSNR/SSIM under other accelerations, masks, noise, coils, anatomy."),
    "run": ("robustkit.cli.studies:run_file", "Run every study of a shipped suite (quick, paper) or a TOML study file."),
    "report": ("robustkit.cli.report:report", "Build the HTML report of study runs (reports/index.html)."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, so listing commands imports none of them.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="robustkit")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to compute: auto uses CUDA whenever it is available.",
)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True,
              help=f"Seed for every random draw, an integer from 0 to {SEED_MAX}.")
@click.option(
    "--zoo",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Your model zoo: where train writes and names are looked up first, before the shipped zoo. "
    "[default: $ROBUSTKIT_ZOO, else ./models]",
)
@click.pass_context
def cli(ctx: click.Context, device: str, seed: int, zoo: str | None) -> None:
    """robustkit: train MoDL, MOL and MnM-MOL MRI reconstruction networks and measure how robust
    (k-space attacks) and how convergent (fixed-point and L[H_θ] audits) they are."""
    ctx.obj = {"device": device, "seed": seed,
               "seed_given": ctx.get_parameter_source("seed") is not click.core.ParameterSource.DEFAULT}
    if zoo is not None:
        from robustkit.locations import using_zoo

        ctx.with_resource(using_zoo(zoo))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """robustkit's own warnings as one ``robustkit: warning:`` line; others as Python prints them."""
    import warnings

    if issubclass(category, RobustkitWarning):
        click.echo(f"robustkit: warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True, nl=False)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    import warnings

    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="robustkit", standalone_mode=False)
    except RobustkitError as exc:
        click.echo(f"robustkit: error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except click.exceptions.Abort:
        click.echo("robustkit: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("robustkit: interrupted; completed work is kept", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # a bad option value or a missing argument: one line too
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # a bare group: its help, as written
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "robustkit"
        message = " ".join(exc.format_message().split()).rstrip(".")
        click.echo(f"robustkit: error: {message}; see '{where} --help'", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
