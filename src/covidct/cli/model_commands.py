"""Sub-commands (registered on import)."""
