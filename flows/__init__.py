"""Bytewax wiring: the dataflow and its connectors. Logic lives in rapidloop.operators."""
