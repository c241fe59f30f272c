"""data (see DESIGN.md)."""
