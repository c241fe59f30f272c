"""drive (see DESIGN.md)."""
