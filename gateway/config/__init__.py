"""The config file: its models, loading and the generated reference."""
