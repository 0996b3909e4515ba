"""What trusted verdicts have said about each signer's other files.

A sandbox is wrong now and then (label noise), and the files it is wrong
about are the hard negatives: a remote-access tool beacons like a backdoor, a
backup agent encrypts like ransomware, so the models score them high too and
nothing else stands between one wrong "malicious" and a fleet-wide block of
software every customer runs. What does stand against it is the publisher:
a signer whose files the sandbox and analysts have cleared again and again,
and never condemned, is not shipping malware in the next file on one
automated verdict's word. Stolen and fraudulent certificates are no shelter:
their files are condemned, and a signer condemned even once needs that many
more clean files to be vouched for again.

A signer *vouches* for its files when its clean verdicts reach
``vouch_clean`` for each condemned one plus one (``policy.signer_vouch_clean``;
0 turns vouching off). The policy does not enforce a sandbox's "malicious"
fleet-wide on a vouched file, and blocks it on the score alone only on the
devices that report it, not across organizations. An analyst's verdict is
final, and a refused verdict is counted against the signer all the same:
each condemned file raises the bar by ``vouch_clean`` clean ones. The other
way round, a signer whose files are condemned ``condemned_per_clean`` times
per cleared one plus one (``policy.signer_condemn``) *condemns* its files:
a stolen certificate, whose every file the policy blocks on sight.
The signer is the one most organizations report (``FileState.signature``):
one tenant cannot forge it, and only trusted verdicts write the record, so no
tenant can buy a signer its reputation. Each file counts once, with its
latest verdict. Replicated like the models: every replica sees every trusted
verdict in the same order.

>>> r = SignerRecord(vouch_clean=3, max_files=1000)
>>> for i in range(3):
...     r.learn("Vendor GmbH", f"sha-{i}", malicious=False)
>>> r.record("Vendor GmbH"), r.vouches("Vendor GmbH"), r.vouches(None)
((3, 0), True, False)
>>> r.learn("Vendor GmbH", "sha-3", malicious=True)     # one condemned: 6 clean needed now
>>> r.learn("Vendor GmbH", "sha-0", malicious=True)     # a file counts once: its latest verdict
>>> r.record("Vendor GmbH"), r.vouches("Vendor GmbH"), r.condemns("Vendor GmbH", 2)
((2, 2), False, False)
"""

from __future__ import annotations


class SignerRecord:
    """Per-signer counts of files with a trusted verdict; bounded."""

    __slots__ = ("counts", "files", "max_files", "vouch_clean")

    def __init__(self, vouch_clean: int, max_files: int) -> None:
        self.vouch_clean = vouch_clean
        self.max_files = max_files
        self.counts: dict[str, tuple[int, int]] = {}     # signer → (clean, condemned)
        self.files: dict[str, tuple[str, bool]] = {}     # sha256 → (signer, malicious)

    def snapshot(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, bool]]]:
        """(counts, files) as plain data, oldest first (the bounds are settings)."""
        return (self.counts, self.files)

    def restore(self, state: tuple[dict[str, tuple[int, int]],
                                   dict[str, tuple[str, bool]]]) -> None:
        """Take up the record ``snapshot`` saved."""
        counts, files = state
        self.counts, self.files = dict(counts), dict(files)

    def learn(self, signer: str | None, sha256: str, malicious: bool) -> None:
        """A trusted verdict on a file signed by ``signer`` (None: unsigned, nothing to learn)."""
        if not signer:
            return
        counts, files = self.counts, self.files
        before = files.pop(sha256, None)
        if before is not None and before[0] in counts:
            clean, condemned = counts[before[0]]
            counts[before[0]] = (clean, condemned - 1) if before[1] else (clean - 1, condemned)
        files[sha256] = (signer, malicious)   # re-inserted: most recent last
        clean, condemned = counts.pop(signer, (0, 0))   # re-inserted: most recent last
        counts[signer] = (clean, condemned + 1) if malicious else (clean + 1, condemned)
        while len(files) > self.max_files:   # the oldest verdict's file can no longer be
            del files[next(iter(files))]     # re-counted; its verdict stays in the counts
        while len(counts) > self.max_files:  # forget the signer longest without a verdict
            del counts[next(iter(counts))]

    def record(self, signer: str | None) -> tuple[int, int]:
        """(clean, condemned) files of ``signer`` so far."""
        return self.counts.get(signer, (0, 0)) if signer else (0, 0)

    def condemns(self, signer: str | None, condemned_per_clean: int) -> bool:
        """Have trusted verdicts condemned ``signer``'s files ``condemned_per_clean`` times
        for each cleared one plus one (a stolen or fraudulent certificate)?"""
        if not condemned_per_clean or not signer:
            return False
        clean, condemned = self.counts.get(signer, (0, 0))
        return condemned >= condemned_per_clean * (clean + 1)

    def vouches(self, signer: str | None) -> bool:
        """Has ``signer`` earned enough clean verdicts to outweigh one sandbox verdict?"""
        if not self.vouch_clean or not signer:
            return False
        clean, condemned = self.counts.get(signer, (0, 0))
        return clean >= self.vouch_clean * (condemned + 1)
