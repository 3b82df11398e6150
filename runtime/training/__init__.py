"""Training on the pool: Ray Train workers running DeepSpeed phases (image VAE + UNet, video DiT)."""
