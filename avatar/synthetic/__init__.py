"""Synthetic ground-truth captures: a parametric head rendered under scripted motion and
expressions, with real MediaPipe landmarks and the truth to grade tracking and training
against (:mod:`avatar.synthetic.capture`), its texture (:mod:`avatar.synthetic.texture`), and
a FLAME-format model file built from the open ICT head for tests (:mod:`avatar.synthetic.flame_file`)."""
