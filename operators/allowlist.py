"""Files that are never blocked, whatever any score or verdict says.

The allow-list is the operator's last word against collateral damage: a
vendor's signed binary or a known-good hash must not be blocked by a model
gone wrong or a poisoned loop. One entry per line: a sha256, or
``signer:NAME`` to trust everything signed by NAME. ``#`` starts a comment.

>>> a = AllowList.parse(["# vendors", "signer:Contoso Ltd", "AB" * 32])
>>> a.allows("ab" * 32, None), a.allows("cd" * 32, "Contoso Ltd"), a.allows("cd" * 32, None)
(True, True, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_SHA = re.compile(r"^[0-9a-fA-F]{64}$")


class AllowListError(ValueError):
    """A line of the allow-list file that is neither a sha256 nor a signer entry."""


class AllowList:
    __slots__ = ("hashes", "signers")

    def __init__(self, hashes: Iterable[str] = (), signers: Iterable[str] = ()) -> None:
        self.hashes = frozenset(h.lower() for h in hashes)
        self.signers = frozenset(signers)

    @classmethod
    def parse(cls, lines: Iterable[str], where: str = "allow-list") -> AllowList:
        hashes: list[str] = []
        signers: list[str] = []
        for n, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            if entry.startswith("signer:"):
                signers.append(entry[len("signer:"):].strip())
            elif _SHA.match(entry):
                hashes.append(entry)
            else:
                raise AllowListError(f"{where}:{n}: expected a sha256 or 'signer:NAME', "
                                     f"got {entry[:80]!r}")
        return cls(hashes, signers)

    @classmethod
    def load(cls, path: str) -> AllowList:
        """The allow-list at ``path``; an empty path means an empty list."""
        if not path:
            return cls()
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise AllowListError(f"cannot read allow-list {path}: {exc.strerror}") from None
        return cls.parse(text.splitlines(), path)

    def allows(self, sha256: str, signer: str | None) -> bool:
        return sha256 in self.hashes or (signer is not None and signer in self.signers)

    def __len__(self) -> int:
        return len(self.hashes) + len(self.signers)
