"""`rapidloop explain SHA256 --from CAPTURE_OR_REPLAY`: the story of one file, as text.

``--from`` is a capture directory (``rapidloop capture``) or a replay's
decisions JSONL (``rapidloop replay --output``). From a capture the reports
and feedback come from the capture; the decisions from, in order of
preference: ``--decisions FILE`` (a replay's output), the capture's own
``decisions.jsonl.gz`` (what the live job decided), or a replay of the
capture run now with ``--config`` (also forced by ``--replay``: what the
current configuration would decide). The classifier scores shown are the
decisions' ``classifiers`` field. ``--org ORG`` gives that tenant's view.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

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
    p.set_defaults(func=run)


def _lines(path: str) -> Iterable[bytes]:
    from rapidloop.capture import iter_values

    return iter_values(path)


def _replayed(directory: str, config: str | None, tmp: str) -> str:
    from rapidloop.cli.replay import capture_inputs, replay_files
    from rapidloop.config import load_config

    files, kinds = capture_inputs(directory)
    output = os.path.join(tmp, "decisions.jsonl")
    replay_files(load_config(config), files, kinds, output)
    return output


def run(args: argparse.Namespace) -> int:
    from rapidloop.capture import CaptureError, read_manifest
    from rapidloop.explain import normalise_sha256, render, select

    sha = normalise_sha256(args.sha256)
    if sha is None:
        raise CliError(f"not a sha256 (64 hex digits): {args.sha256[:80]!r}")
    if args.org is not None and not args.org.strip():
        raise CliError("--org must not be empty")
    src = Path(args.source)
    with tempfile.TemporaryDirectory(prefix="rapidloop-explain-") as tmp:
        try:
            if src.is_dir():
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
                reports = _lines(str(src / topics["reports"]["file"]))
                feedback = (_lines(str(src / topics["feedback"]["file"]))
                            if "feedback" in topics else ())
                source = (f"capture {src} ({manifest.get('since')} → {manifest.get('until')}); "
                          f"{origin}")
                story = select(sha, reports, feedback, _lines(decisions_path))
            elif src.is_file():
                if args.decisions or args.replay:
                    raise CliError("--decisions and --replay need --from a capture directory")
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
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
