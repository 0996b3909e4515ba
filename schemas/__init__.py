"""The wire: contract messages, their JSON Schemas, parsing and serialisation."""
