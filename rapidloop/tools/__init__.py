"""Tools built on top of the flow: the fleet simulator (``simulator``, ``sim``),
evaluation (``evaluate``, ``evalsuite``, ``targets``, ``evalplot``), ``explain``,
``whatif``, ``modelwalk`` and ``capture``.

They import the flow and the logic; the flow never imports them.
"""
