"""landmarks (see DESIGN.md)."""
