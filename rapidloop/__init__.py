"""rapidloop: turns endpoint sensor reports into scoped block decisions within seconds."""

__version__ = "0.1.0"
