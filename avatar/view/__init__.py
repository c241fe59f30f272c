"""The browser viewer (``avatar view``, ``avatar train train.viewer=true``): a trained or training
avatar posed in Python and streamed to a web page as Gaussian splats (viser)."""
