"""The ``mentor`` subcommands, each a thin function of parsed arguments (the parser is in mentor.cli)."""
