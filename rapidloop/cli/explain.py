"""`rapidloop explain SHA256 --from CAPTURE_OR_REPLAY`: the story of one file, as text.

``--from`` is a capture directory (``rapidloop capture``) or a replay's
decisions JSONL (``rapidloop replay --output``). From a capture the reports
and feedback come from the capture; the decisions from, in order of
preference: ``--decisions FILE`` (a replay's output), the capture's own
``decisions.jsonl.gz`` (what the live job decided), or a replay of the
capture run now with ``--config`` (also forced by ``--replay``: what the
current configuration would decide). Scores: each decision's
``classifiers``, and (from a capture or input files) the score at every one
of the file's reports, by replaying the models over the input. ``--org ORG``
gives that tenant's view.

``--from`` may also be a directory of plain input files, such as a world
written by ``rapidloop simulate --out`` (``reports.jsonl[.gz]`` and
optionally ``feedback.jsonl[.gz]``, no manifest): the decisions then come
from ``--decisions FILE`` or a replay run on the spot.

``--html FILE`` also writes the story as one self-contained page (inline CSS
and SVG, no network): each classifier's score over event time with the
decisions marked, and the text story, for attaching to a ticket.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rapidloop.base.config import Config
from rapidloop.cli import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="the story of one file from a capture or a replay",
                       description=__doc__.splitlines()[0])
    p.add_argument("sha256", help="the file's SHA-256 (64 hex digits)")
    p.add_argument("--from", dest="source", required=True, metavar="CAPTURE_OR_REPLAY",
                   help="a capture directory, or a replay's decisions JSONL (.gz ok)")
    p.add_argument("--decisions", metavar="FILE",
                   help="with a capture: take the decisions from this replay output")
    p.add_argument("--replay", action="store_true",
                   help="with a capture: re-run the replay now (with --config) for the decisions")
    p.add_argument("--config", metavar="FILE", help="TOML configuration for --replay")
    p.add_argument("--org", metavar="ORG",
                   help="that organization's own view: other tenants appear only as counts")
    p.add_argument("--no-timeline", action="store_true", help="summary and scores only")
    p.add_argument("--no-report-scores", action="store_true",
                   help="skip replaying the models for the score at each report")
    p.add_argument("--html", metavar="FILE",
                   help="also write the story as a self-contained HTML page with a chart")
    p.set_defaults(func=run)


def _lines(path: str) -> Iterable[bytes]:
    from rapidloop.tools.capture import iter_values

    return iter_values(path)


def _captured(cfg: Config, src: Path) -> tuple[list[bytes], list[bytes]]:
    """A capture's reports and feedback lines, every topic's (tenants' own included), as the
    job took them: a line a tenant's topic could not carry (another org's claim, a sandbox
    verdict) was a dead letter live, and is no part of the file's story."""
    from rapidloop.schemas.intake import FEEDBACK, Intake
    from rapidloop.schemas.model import RawMessage
    from rapidloop.schemas.wire import Limits, WireParser
    from rapidloop.tools.capture import replay_inputs

    files, kinds = replay_inputs(src)
    intake = Intake(WireParser(Limits.from_config(cfg)), kinds)
    reports: list[bytes] = []
    feedback: list[bytes] = []
    for path, topic in files:
        kind = kinds[topic]
        out = feedback if kind == FEEDBACK else reports
        bound = getattr(kind, "org", None) is not None
        for line in _lines(path):
            if not bound or intake.parse([RawMessage(topic, line)], 0.0).events:
                out.append(line)
    return reports, feedback


def _check_file(cfg: Config, path: str, kind: str, hint: str = "") -> None:
    """A file the user named must read to its end and hold ``kind`` (decisions, reports,
    verdicts): otherwise one line and a non-zero exit, not an empty story that looks like
    "nothing happened to this file" (``check_content``)."""
    from rapidloop.flows.file_io import InputFileError, check_content, check_readable
    from rapidloop.schemas.wire import Limits

    if not Path(path).is_file():
        return   # the callers say "not found" in their own words
    limits = Limits.from_config(cfg)
    try:
        check_readable(path)
        check_content(path, kind, limits.max_message_bytes, limits)
    except InputFileError as exc:
        raise CliError(f"{exc}{hint if exc.found is not None else ''}") from None


def _plain_inputs(directory: Path) -> dict[str, str] | None:
    """A directory of plain input files (no manifest): kind → path, or None."""
    found = {}
    for kind in ("reports", "feedback"):
        for name in (f"{kind}.jsonl.gz", f"{kind}.jsonl"):
            if (directory / name).is_file():
                found[kind] = str(directory / name)
                break
    return found if "reports" in found else None


def _inputs(directory: str, plain: dict[str, str] | None
            ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The replay inputs of a capture or of a directory of plain files (CaptureError)."""
    from rapidloop.schemas.intake import FEEDBACK, REPORT
    from rapidloop.tools.capture import replay_inputs

    if plain is None:
        return replay_inputs(directory)
    kind_of = {"reports": REPORT, "feedback": FEEDBACK}
    return ([(path, kind) for kind, path in plain.items()],
            {kind: kind_of[kind] for kind in plain})


def _replayed(directory: str, config: str | None, tmp: str,
              plain: dict[str, str] | None = None) -> str:
    """A replay of the inputs run now (``rapidloop.flows.replay``): its decisions' path."""
    from rapidloop.base.config import load_config
    from rapidloop.cli.common import one_line
    from rapidloop.flows.job import JobError
    from rapidloop.flows.replay import replay_files

    files, kinds = _inputs(directory, plain)
    output = os.path.join(tmp, "decisions.jsonl")
    with one_line(JobError):
        replay_files(load_config(config), files, kinds, output)
    return output


def run(args: argparse.Namespace) -> int:
    from rapidloop.base.config import load_config
    from rapidloop.flows.file_io import DECISION
    from rapidloop.schemas.intake import FEEDBACK, REPORT
    from rapidloop.tools.capture import CaptureError, read_manifest
    from rapidloop.tools.explain import normalise_sha256, render, select

    sha = normalise_sha256(args.sha256)
    if sha is None:
        raise CliError(f"not a sha256 (64 hex digits): {args.sha256[:80]!r}")
    if args.org is not None and not args.org.strip():
        raise CliError("--org must not be empty")
    src = Path(args.source)
    cfg = load_config(args.config)
    if args.decisions:
        _check_file(cfg, args.decisions, DECISION, " (--decisions takes a replay's output)")
    with tempfile.TemporaryDirectory(prefix="rapidloop-explain-") as tmp:
        try:
            plain = (_plain_inputs(src) if src.is_dir() and not (src / "manifest.json").exists()
                     else None)
            if plain is not None:
                for kind, path in plain.items():
                    _check_file(cfg, path, REPORT if kind == "reports" else FEEDBACK)
                if args.decisions and args.replay:
                    raise CliError("--decisions and --replay are alternatives: give one")
                if args.decisions:
                    decisions_path = args.decisions
                    origin = f"decisions from {args.decisions}"
                else:
                    decisions_path = _replayed(str(src), args.config, tmp, plain)
                    origin = ("decisions from a replay of the files, run now with "
                              f"{args.config or 'the default configuration'}")
                if not Path(decisions_path).is_file():
                    raise CliError(f"decisions file not found: {decisions_path}")
                story = select(sha, _lines(plain["reports"]),
                               _lines(plain["feedback"]) if "feedback" in plain else (),
                               _lines(decisions_path))
                source = f"input files in {src}; {origin}"
            elif src.is_dir():
                manifest = read_manifest(src)
                topics = manifest["topics"]
                if args.decisions and args.replay:
                    raise CliError("--decisions and --replay are alternatives: give one")
                if args.decisions:
                    decisions_path = args.decisions
                    origin = f"decisions from {args.decisions}"
                elif "decisions" in topics and not args.replay:
                    decisions_path = str(src / topics["decisions"]["file"])
                    origin = f"decisions captured from {topics['decisions']['topic']} (live)"
                else:
                    decisions_path = _replayed(str(src), args.config, tmp)
                    origin = ("decisions from a replay of the capture, run now with "
                              f"{args.config or 'the default configuration'}")
                if not Path(decisions_path).is_file():
                    raise CliError(f"decisions file not found: {decisions_path}")
                reports, feedback = _captured(cfg, src)
                source = (f"capture {src} ({manifest.get('since')} → {manifest.get('until')}); "
                          f"{origin}")
                story = select(sha, reports, feedback, _lines(decisions_path))
            if plain is not None or src.is_dir():
                if not args.no_report_scores:
                    from rapidloop.tools.modelwalk import score_history

                    files, kinds = _inputs(str(src), plain)
                    story.scores = score_history(cfg, files, kinds, sha)
            elif src.is_file():
                if args.decisions or args.replay:
                    raise CliError("--decisions and --replay need --from a capture directory")
                _check_file(cfg, str(src), DECISION, " (--from takes a replay's decisions, or a "
                                                     "capture or input directory)")
                story = select(sha, (), (), _lines(str(src)))
                source = (f"replay output {src} (decisions only: give --from a capture "
                          "for the reports and feedback)")
            else:
                raise CliError(f"not found: {src} (a capture directory or a decisions JSONL)")
        except CaptureError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except EOFError as exc:   # a truncated .gz
            raise CliError(f"truncated file: {exc}") from None
    text = render(story, org=args.org, source=source, timeline=not args.no_timeline)
    if args.html:
        from rapidloop.tools.explain_html import render_html

        try:
            Path(args.html).write_text(render_html(story, org=args.org, source=source),
                                       encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}") from None
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
