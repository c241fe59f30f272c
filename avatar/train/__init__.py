"""Training Gaussian avatars: data, losses, metrics, the trainer loop."""
