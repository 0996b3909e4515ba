"""The loop's logic in plain Python: correlation, classifiers, policy. No Bytewax, no Kafka."""
