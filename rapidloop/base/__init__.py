"""The foundation every other part imports: configuration, Kafka client settings,
job statistics, signals, telemetry, progress and the process supervisor.

Nothing here imports the rest of the project (``schemas``, ``operators``,
``flows``, the tools or the CLI); ``tests/unit/test_layering.py`` holds that.
"""
