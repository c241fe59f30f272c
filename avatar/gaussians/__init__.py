"""gaussians (see DESIGN.md)."""
