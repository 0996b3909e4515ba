"""Where one file's story comes from: a capture, a directory of input files, or decisions.

``rapidloop explain SHA256 --from SOURCE`` reads, by what ``SOURCE`` is:

* a capture directory (``rapidloop capture``): the reports and feedback of
  the capture, every topic's (tenants' own included) as the job took them;
  the decisions from, in order of preference: ``--decisions FILE`` (a
  replay's output), the capture's own ``decisions.jsonl.gz`` (what the live
  job decided), or a replay of the capture run now with ``--config`` (also
  forced by ``--replay``: what the current configuration would decide);
* a directory of plain input files, such as a world written by ``rapidloop
  simulate --out`` (``reports.jsonl[.gz]`` and optionally
  ``feedback.jsonl[.gz]``, no manifest): the decisions from ``--decisions
  FILE`` or a replay run on the spot;
* a replay's decisions JSONL (``rapidloop replay --output``): the decisions
  only.

Scores: each decision's ``classifiers``, and (from a capture or input files)
the score at every one of the file's reports, by replaying the models over
the input (:func:`rapidloop.tools.modelwalk.score_history`). The story is
then told by :mod:`rapidloop.tools.explain` (text) and
:mod:`rapidloop.tools.explain_html` (a page). Failures are one line
(:class:`SourceError`, or the replay's :class:`~rapidloop.flows.job.JobError`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rapidloop.base.config import Config
from rapidloop.tools.explain import Story


class SourceError(RuntimeError):
    """The story cannot be read from what was given (one line: what, and why)."""


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
        raise SourceError(f"{exc}{hint if exc.found is not None else ''}") from None


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


def _replayed(cfg: Config, directory: str, tmp: str,
              plain: dict[str, str] | None = None) -> str:
    """A replay of the inputs run now (``rapidloop.flows.replay``): its decisions' path."""
    from rapidloop.flows.replay import replay_files

    files, kinds = _inputs(directory, plain)
    output = os.path.join(tmp, "decisions.jsonl")
    replay_files(cfg, files, kinds, output)
    return output


def _decisions_of(cfg: Config, src: Path, decisions: str | None, replay: bool,
                  config_name: str, tmp: str, plain: dict[str, str] | None,
                  captured: dict[str, str] | None = None) -> tuple[str, str]:
    """(the decisions' path, where they come from) for a capture or input directory:
    ``decisions`` if given, else the capture's own (``captured``: its manifest's entry)
    unless ``replay``, else a replay run now."""
    if decisions and replay:
        raise SourceError("--decisions and --replay are alternatives: give one")
    what = "the files" if plain is not None else "the capture"
    if decisions:
        path, origin = decisions, f"decisions from {decisions}"
    elif captured is not None and not replay:
        path = str(src / captured["file"])
        origin = f"decisions captured from {captured['topic']} (live)"
    else:
        path = _replayed(cfg, str(src), tmp, plain)
        origin = f"decisions from a replay of {what}, run now with {config_name}"
    if not Path(path).is_file():
        raise SourceError(f"decisions file not found: {path}")
    return path, origin


def gather(cfg: Config, sha: str, source: str, *, decisions: str | None = None,
           replay: bool = False, config: str | None = None,
           report_scores: bool = True) -> tuple[Story, str]:
    """The story of the file ``sha`` (lower-case) from ``source``, and where it came from.

    ``decisions``: a replay's output to take the decisions from; ``replay``:
    replay the input now (with ``cfg``, read from ``config``, named in the
    source line) instead of taking the decisions a capture holds;
    ``report_scores``: replay the models for the score at each report.
    SourceError, or JobError from a replay.
    """
    from rapidloop.flows.file_io import DECISION
    from rapidloop.schemas.intake import FEEDBACK, REPORT
    from rapidloop.tools.capture import CaptureError, read_manifest
    from rapidloop.tools.explain import select

    src = Path(source)
    config_name = config or "the default configuration"
    if decisions:
        _check_file(cfg, decisions, DECISION, " (--decisions takes a replay's output)")
    with tempfile.TemporaryDirectory(prefix="rapidloop-explain-") as tmp:
        try:
            plain = (_plain_inputs(src) if src.is_dir() and not (src / "manifest.json").exists()
                     else None)
            if plain is not None:
                for kind, path in plain.items():
                    _check_file(cfg, path, REPORT if kind == "reports" else FEEDBACK)
                decisions_path, origin = _decisions_of(cfg, src, decisions, replay,
                                                       config_name, tmp, plain)
                story = select(sha, _lines(plain["reports"]),
                               _lines(plain["feedback"]) if "feedback" in plain else (),
                               _lines(decisions_path))
                told = f"input files in {src}; {origin}"
            elif src.is_dir():
                manifest = read_manifest(src)
                decisions_path, origin = _decisions_of(
                    cfg, src, decisions, replay, config_name, tmp, None,
                    manifest["topics"].get("decisions"))
                reports, feedback = _captured(cfg, src)
                told = (f"capture {src} ({manifest.get('since')} → {manifest.get('until')}); "
                        f"{origin}")
                story = select(sha, reports, feedback, _lines(decisions_path))
            elif src.is_file():
                if decisions or replay:
                    raise SourceError("--decisions and --replay need --from a capture "
                                      "directory")
                _check_file(cfg, str(src), DECISION, " (--from takes a replay's decisions, or a "
                                                     "capture or input directory)")
                story = select(sha, (), (), _lines(str(src)))
                told = (f"replay output {src} (decisions only: give --from a capture "
                        "for the reports and feedback)")
            else:
                raise SourceError(f"not found: {src} (a capture directory or a decisions "
                                  "JSONL)")
            if (plain is not None or src.is_dir()) and report_scores:
                from rapidloop.tools.modelwalk import score_history

                files, kinds = _inputs(str(src), plain)
                story.scores = score_history(cfg, files, kinds, sha)
        except CaptureError as exc:
            raise SourceError(str(exc)) from None
        except OSError as exc:
            raise SourceError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except EOFError as exc:   # a truncated .gz
            raise SourceError(f"truncated file: {exc}") from None
    return story, told
