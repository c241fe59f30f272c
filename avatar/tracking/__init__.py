"""tracking (see DESIGN.md)."""
