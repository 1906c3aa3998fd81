"""Training: `loop` (the one loop every model trains through, `fit`), `dae` (DAE banks) and `diffusion` (the toy,
the DDPM UNet and the text-to-image model)."""
