"""``bloodcell samples list|show|audit|lab-audit|finish|sign|reopen|export|report``: the samples kept in a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from bloodcell.cli.options import ReplaceOutput
from bloodcell.cli.signin import FormatOption, PasswordStdinOption, StoreOption, UserOption, change_as
from bloodcell.errors import ConfigError
from bloodcell.store.vocabulary import EXPORTS
from bloodcell.wording import counted

app = typer.Typer(help="Samples kept in a store: list, show, audit trail, sign off, reopen, export (CSV, FHIR), "
                       "printable report (PDF, HTML).",
                  no_args_is_help=True, rich_markup_mode=None)
SampleId = Annotated[str, typer.Argument(help="The sample id.")]
FORMATS = ("table", "json")
WbcOption = Annotated[Optional[float], typer.Option(
    "--wbc", help="The blood's white-cell concentration in 10^9/L (from the analyser), to add absolute counts per "
    "type (FHIR, report).")]


def _format(value: str) -> str:
    if value not in FORMATS:
        raise ConfigError(f"unknown --format {value!r}; choose one of {', '.join(FORMATS)}")
    return value


@app.command("list")
def list_(
    store: StoreOption = None,
    format: FormatOption = "table",
) -> None:
    """List the samples, newest first: id, status, white cells typed, photos, when counted."""
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import list_samples, summary

    _format(format)
    with open_store(store, create=False).session() as session:
        rows = [summary(sample) for sample in list_samples(session)]
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['sample_id']}\t{row['status']}\t{counted(row['wbc_classified'], 'white cell', 'white cells')}"
                   f" typed\t{counted(len(row['photos']), 'photo')}\t{row['created_at'][:19]}")
    if not rows:
        typer.echo("no samples yet: count some with `bloodcell count PHOTOS --output OUT --store STORE`")


@app.command("show")
def show(
    sample_id: SampleId,
    store: StoreOption = None,
    format: FormatOption = "table",
) -> None:
    """Show a sample: status, counts, differential, the models that counted it, who signed it."""
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import find, summary

    _format(format)
    with open_store(store, create=False).session() as session:
        row = summary(find(session, sample_id))
    if format == "json":
        typer.echo(json.dumps(row, indent=2))
        return
    typer.echo(f"sample {row['sample_id']}: {row['status'].replace('_', ' ')} (version {row['version']})"
               + (f", signed by {row['signed_by']}" if row["signed_by"] else ""))
    typer.echo("counts: " + ", ".join(f"{k} {v}" for k, v in row["counts"].items()))
    typer.echo("differential: " + (", ".join(f"{k} {v:.1f}% ({row['wbc_types'][k]})"
                                             for k, v in row["differential_percent"].items()) or "no white cells typed"))
    typer.echo(f"classifier: {row['classifier']['name']} {row['classifier']['sha256'] or ''}".rstrip())
    typer.echo(f"detector: {row['detector']['name']} {row['detector']['sha256'] or ''}".rstrip())
    check = row["lab_check"]
    if check is not None:
        typer.echo(f"lab check: {'WARNING: ' if check['unfamiliar_lab'] else ''}{check['message']}")


@app.command("audit")
def audit(
    sample_id: SampleId,
    store: StoreOption = None,
    format: FormatOption = "table",
) -> None:
    """Every change to a sample, oldest first: when, who, what, before and after."""
    from bloodcell.store.audit import trail
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import find

    _format(format)
    with open_store(store, create=False).session() as session:
        _print_trail(trail(session, find(session, sample_id)), format)


@app.command("lab-audit")
def lab_audit(
    lab: Annotated[str, typer.Argument(help="The lab's name (\"\": the samples kept without one).")],
    store: StoreOption = None,
    format: FormatOption = "table",
) -> None:
    """A lab's own changes, oldest first: adapting jobs started, done or failed, the classifier its counts use."""
    from bloodcell.smear.lab_name import look_up_lab
    from bloodcell.store.audit import lab_trail
    from bloodcell.store.database import open_store

    _format(format)
    lab = look_up_lab(lab)  # a name kept before the lab-name rule is still looked up
    with open_store(store, create=False).session() as session:
        entries = lab_trail(session, lab)
        _print_trail(entries, format)
    if not entries and format == "table":
        typer.echo(f"nothing recorded for lab {lab!r} yet: it has adapted no classifier and chosen none "
                   "(check the lab's name, as `samples show` gives it)")


def _print_trail(entries, format: str) -> None:
    from bloodcell.store.audit import entry_dict

    rows = [entry_dict(e) for e in entries]
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for e in rows:
        typer.echo(f"{e['at'][:19]}\t{e['actor']}\t{e['action']}\t{e['target']}\t"
                   f"{json.dumps(e['before'], ensure_ascii=False)} -> {json.dumps(e['after'], ensure_ascii=False)}")


@app.command("finish")
def finish(
    sample_id: SampleId,
    user: UserOption,
    store: StoreOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Mark a sample's review done, ready for a supervisor's sign-off."""
    from bloodcell.store.samples import finish_review

    by = change_as(store, user, password_stdin, lambda session, by: finish_review(session, sample_id, by))
    typer.echo(f"sample {sample_id} reviewed by {by.name}: ready for sign-off")


@app.command("sign")
def sign(
    sample_id: SampleId,
    user: UserOption,
    store: StoreOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Sign a reviewed sample off (a supervisor); it is read-only until reopened."""
    from bloodcell.store.samples import sign as sign_sample

    by = change_as(store, user, password_stdin, lambda session, by: sign_sample(session, sample_id, by))
    typer.echo(f"sample {sample_id} signed by {by.name}")


@app.command("reopen")
def reopen(
    sample_id: SampleId,
    user: UserOption,
    reason: str = typer.Option(..., "--reason", help="Why the signed sample is reopened (kept in the audit trail)."),
    store: StoreOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Reopen a signed sample for review (a supervisor, with a reason)."""
    from bloodcell.store.samples import reopen as reopen_sample

    by = change_as(store, user, password_stdin, lambda session, by: reopen_sample(session, sample_id, by, reason))
    typer.echo(f"sample {sample_id} reopened by {by.name}")


@app.command("export")
def export(
    sample_id: SampleId,
    format: str = typer.Option(..., "--format", help=f"{' or '.join(EXPORTS)}: a CSV row with a percent and a count "
                               "column per cell type, or a FHIR R4 Bundle (DiagnosticReport + Observations)."),
    output: Path = typer.Option(..., "--output", "-o", help="The file to write (.csv or .json)."),
    wbc: WbcOption = None,
    store: StoreOption = None,
    overwrite: ReplaceOutput = False,
) -> None:
    """Export a sample for a laboratory information system: final when signed, preliminary otherwise."""
    from bloodcell.store.database import open_store
    from bloodcell.store.exports import write_export
    from bloodcell.store.samples import find

    with open_store(store, create=False).session() as session:
        sample = find(session, sample_id)
        path = write_export(sample, format, output, wbc, overwrite=overwrite)
        status = sample.status
    typer.echo(f"{format} export of sample {sample_id} ({'final' if status == 'signed' else 'preliminary'}) -> {path}")


@app.command("report")
def report(
    sample_id: SampleId,
    output: Path = typer.Option(..., "--output", "-o",
                                help="The file to write: .pdf (printed with WeasyPrint) or .html."),
    wbc: WbcOption = None,
    store: StoreOption = None,
    overwrite: ReplaceOutput = False,
) -> None:
    """A sample's printable report: counts, differential with 95% intervals and reference intervals, flags where
    enough cells were counted, reviewers and sign-off, models, annotated photos. For research use only."""
    from bloodcell.workflows.sample_report import write_sample_report

    path = write_sample_report(store, sample_id, output, wbc, overwrite=overwrite)
    typer.echo(f"report of sample {sample_id} -> {path}")
