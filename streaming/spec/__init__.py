"""The pipeline spec: the TOML file parsed and validated into frozen dataclasses."""
